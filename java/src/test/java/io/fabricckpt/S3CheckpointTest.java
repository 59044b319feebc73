package io.fabricckpt;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.core.AsyncSave;
import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.CheckpointNotFoundException;
import io.fabricckpt.core.CorruptCheckpointException;
import io.fabricckpt.core.PyGlobal;
import io.fabricckpt.core.PyObject;
import io.fabricckpt.core.PyTuple;
import io.fabricckpt.core.WriteOptions;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Adam;
import org.bytedeco.pytorch.AdamOptions;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Fabric's save and load on {@code s3://} locations, against a real S3 server (S3Proxy, {@link S3Server}). */
class S3CheckpointTest {
    @TempDir
    Path dir;

    private final S3Server server = S3Server.get();
    private final Fabric fabric = new Fabric();

    /** About 25 MiB: five 5 MiB parts (the tests' part size), three in flight, around a 20 MiB tensor. */
    private static Map<String, Object> state(long seed) {
        torch.manual_seed(seed);
        Net model = new Net(64, 32, 4);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        model.trainStep(optimizer);
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("optimizer", optimizer);
        state.put("big", torch.randn(5L << 20)); // 20 MiB of float32
        state.put("step", 12L);
        return state;
    }

    private byte[] object(String bucket, String key) {
        return server.client().getObjectAsBytes(b -> b.bucket(bucket).key(key)).asByteArray();
    }

    @Test
    void aSavedObjectIsTheLocalFileByteForByteAndLoadsBack() throws Exception {
        String bucket = server.newBucket("save");
        Map<String, Object> state = state(1);
        Path local = dir.resolve("last.ckpt");
        fabric.save(local, state);
        fabric.save("s3://" + bucket + "/run/last.ckpt", state);
        byte[] uploaded = object(bucket, "run/last.ckpt");
        assertTrue(uploaded.length > 20 << 20, "the multipart path: " + uploaded.length);
        assertArrayEquals(Files.readAllBytes(local), uploaded);
        assertTrue(server.client().listMultipartUploads(b -> b.bucket(bucket)).uploads().isEmpty());

        Map<String, Object> raw = fabric.load("s3://" + bucket + "/run/last.ckpt");
        assertEquals(12L, raw.get("step"));
        assertTrue(assertInstanceOf(Tensor.class, raw.get("big")).equal((Tensor) state.get("big")));

        torch.manual_seed(7);
        Net restored = new Net(64, 32, 4);
        Map<String, Object> target = new LinkedHashMap<>();
        target.put("model", restored);
        Map<String, Object> remainder = fabric.load("s3://" + bucket + "/run/last.ckpt", target);
        assertTrue(restored.fc1.weight().equal(((Net) state.get("model")).fc1.weight()));
        assertEquals(12L, remainder.get("step"));
    }

    @Test
    void aSmallCheckpointIsOnePutAndTheSameBytes() throws Exception {
        String bucket = server.newBucket("small");
        Map<String, Object> state = Map.of("w", torch.arange(new org.bytedeco.pytorch.Scalar(10)), "note", "hi");
        Path local = dir.resolve("small.ckpt");
        fabric.save(local, state);
        fabric.save("s3://" + bucket + "/small.ckpt", state);
        assertArrayEquals(Files.readAllBytes(local), object(bucket, "small.ckpt"));
        assertEquals("hi", fabric.load("s3://" + bucket + "/small.ckpt").get("note"));
    }

    @Test
    void saveAsyncUploadsInTheBackground() throws Exception {
        String bucket = server.newBucket("async");
        Map<String, Object> state = state(2);
        Path local = dir.resolve("async.ckpt");
        fabric.save(local, state);
        AsyncSave save = fabric.saveAsync("s3://" + bucket + "/async.ckpt", state);
        save.written().join();
        assertArrayEquals(Files.readAllBytes(local), object(bucket, "async.ckpt"));
    }

    @Test
    void aSafetensorsObjectIsTheLocalFileAndRestoresTheState() throws Exception {
        String bucket = server.newBucket("safetensors");
        torch.manual_seed(4);
        Net model = new Net(64, 32, 4);
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("big", torch.randn(5L << 20)); // 20 MiB: several parts
        state.put("note", "trained in Java");
        Path local = dir.resolve("weights.safetensors");
        fabric.save(local, state);
        String url = "s3://" + bucket + "/run/weights.safetensors";
        fabric.save(url, state);
        assertArrayEquals(Files.readAllBytes(local), object(bucket, "run/weights.safetensors"));
        assertTrue(server.client().listMultipartUploads(b -> b.bucket(bucket)).uploads().isEmpty());

        // Read as what its bytes are, whatever its name, as a local file is.
        server.client().putObject(b -> b.bucket(bucket).key("renamed.bin"),
                software.amazon.awssdk.core.sync.RequestBody.fromFile(local));
        @SuppressWarnings("unchecked")
        Map<String, Object> flat = (Map<String, Object>) TorchFiles.read("s3://" + bucket + "/renamed.bin");
        @SuppressWarnings("unchecked")
        Map<String, Object> fromDisk = (Map<String, Object>) TorchFiles.read(local);
        assertEquals(List.copyOf(fromDisk.keySet()), List.copyOf(flat.keySet()));
        assertTrue(((Tensor) flat.get("big")).equal((Tensor) state.get("big")));

        assertRestoresModelAndNote(url, model, "trained in Java");

        // Refused before anything is uploaded, naming the URL: what safetensors cannot hold.
        state.put("step", 12L);
        CheckpointException unfit = assertThrows(CheckpointException.class,
                () -> fabric.save("s3://" + bucket + "/unfit.safetensors", state));
        assertTrue(unfit.getMessage().contains("step (int)") && unfit.getMessage().contains("unfit.safetensors"),
                unfit.getMessage());
        assertEquals(List.of("renamed.bin", "run/weights.safetensors"), keys(bucket));
        assertTrue(server.client().listMultipartUploads(b -> b.bucket(bucket)).uploads().isEmpty());
    }

    /**
     * A fresh Net and a "note" entry restored in place from the flat (safetensors) checkpoint at {@code url}:
     * the model's weights, the note's string, and "big" left as the remainder.
     */
    private void assertRestoresModelAndNote(String url, Net model, String note) {
        torch.manual_seed(99);
        Net restored = new Net(64, 32, 4);
        Map<String, Object> target = new HashMap<>();
        target.put("model", restored);
        target.put("note", null);
        Map<String, Object> remainder = fabric.load(url, target);
        assertTrue(restored.fc1.weight().equal(model.fc1.weight()) && restored.fc2.bias().equal(model.fc2.bias()));
        assertEquals(note, target.get("note"));
        assertEquals(List.of("big"), List.copyOf(remainder.keySet()));
    }

    /** The keys of the bucket's objects, sorted (not S3Proxy's filesystem folders, which it lists too). */
    private List<String> keys(String bucket) {
        return server.client().listObjectsV2(b -> b.bucket(bucket)).contents().stream().map(o -> o.key())
                .filter(k -> !k.endsWith("/")).sorted().toList();
    }

    /**
     * A Hugging Face sharded checkpoint in object storage: its shards and index are the local save's
     * files byte for byte, it loads back in place with its metadata string, and a save in fewer shards
     * deletes the shards the earlier one left (not the other objects beside them).
     */
    @Test
    void aHuggingFaceIndexInS3IsTheLocalFilesAndLoadsBack() throws Exception {
        String bucket = server.newBucket("hf-index");
        torch.manual_seed(6);
        Net model = new Net(64, 32, 4);
        Map<String, Object> state = Map.of("model", model, "big", torch.randn(3L << 20), "note", "v1"); // 12 MiB
        Path local = Files.createDirectories(dir.resolve("hf")).resolve("model.safetensors.index.json");
        Fabric sharded = new Fabric().maxShardSize(5 << 20);
        sharded.save(local, state);
        String url = "s3://" + bucket + "/hf/model.safetensors.index.json";
        server.client().putObject(b -> b.bucket(bucket).key("hf/config.json"),
                software.amazon.awssdk.core.sync.RequestBody.fromString("{}"));
        sharded.save(url, state);
        List<String> names;
        try (var files = Files.list(local.getParent())) {
            names = files.map(p -> p.getFileName().toString()).sorted().toList();
        }
        assertTrue(names.size() >= 3, "an index and two shards at least: " + names);
        for (String name : names) {
            assertArrayEquals(Files.readAllBytes(local.resolveSibling(name)), object(bucket, "hf/" + name), name);
        }

        assertRestoresModelAndNote(url, model, "v1");
        // verify stages the index and the shards' headers only; it says what the local verify says.
        assertEquals(url + ": " + TorchFiles.verify(local), TorchFiles.verify(url));

        new Fabric().save(url, Map.of("model", model)); // one shard now
        assertEquals(List.of("hf/config.json", "hf/model-00001-of-00001.safetensors", "hf/model.safetensors.index.json"),
                keys(bucket));
        assertTrue(server.client().listMultipartUploads(b -> b.bucket(bucket)).uploads().isEmpty());
    }

    /**
     * verify of an object reads it from the store as it checks it: 384 MiB verify as the local file does
     * while the process holds a few read windows more, never the object (a whole download held it all);
     * a flipped byte of tensor data is the local verify's CRC-32 mismatch, naming the URL.
     */
    @Test
    void verifyChecksAnObjectFromTheStoreWithoutHoldingIt() throws Exception {
        String bucket = server.newBucket("verify");
        Map<String, Object> state = new LinkedHashMap<>();
        for (int i = 0; i < 6; i++) {
            state.put("w" + i, torch.randn(16L << 20)); // 64 MiB each
        }
        state.put("step", 3L);
        Path local = dir.resolve("big.ckpt");
        fabric.save(local, state);
        String url = "s3://" + bucket + "/big.ckpt";
        fabric.save(url, state);
        String expected = TorchFiles.verify(local).replace(local.toString(), url);
        TorchFiles.verify(url); // warm: the native readers, the client's pools
        long before = ProcessMemory.resetPeak();
        String verified = TorchFiles.verify(url);
        long extra = ProcessMemory.status("VmHWM") - before;
        System.out.println("verify of a 384 MiB object in S3: peak " + (extra >> 20) + " MiB over the process");
        assertEquals(expected, verified);
        assertTrue(extra < 128L << 20, "verify of 384 MiB peaked at " + (extra >> 20) + " MiB more: it held the object");
        state.clear();

        Map<String, Object> small = Map.of("a", torch.randn(1L << 20), "b", torch.randn(1L << 20));
        Path smallFile = dir.resolve("small.ckpt");
        fabric.save(smallFile, small);
        byte[] bytes = Files.readAllBytes(smallFile);
        bytes[bytes.length / 4] ^= 0x40; // inside the first tensor's data
        Path flipped = dir.resolve("flipped.ckpt");
        Files.write(flipped, bytes);
        String flippedUrl = "s3://" + bucket + "/flipped.ckpt";
        server.client().putObject(b -> b.bucket(bucket).key("flipped.ckpt"),
                software.amazon.awssdk.core.sync.RequestBody.fromBytes(bytes));
        CorruptCheckpointException localError = assertThrows(CorruptCheckpointException.class,
                () -> TorchFiles.verify(flipped));
        CorruptCheckpointException e = assertThrows(CorruptCheckpointException.class, () -> TorchFiles.verify(flippedUrl));
        assertEquals(localError.getMessage().replace(flipped.toString(), flippedUrl), e.getMessage());
        assertTrue(e.getMessage().contains("CRC-32"), e.getMessage());
    }

    /**
     * unsafeGlobals of an object lists what the local file's lists from its pickle alone: an object whose
     * tensor bytes are corrupt lists them too (its tensors are never fetched; a whole read fails its CRC-32).
     */
    @Test
    void unsafeGlobalsOfAnObjectReadOnlyItsPickle() throws Exception {
        String bucket = server.newBucket("globals");
        PyObject namespace = new PyObject(PyObject.Construction.NEW_OBJ, new PyGlobal("argparse", "Namespace"),
                PyTuple.of(), null, Map.of("lr", 0.1), List.of(), List.of());
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("hparams", namespace);
        state.put("weights", torch.randn(4L << 20)); // 16 MiB
        Path local = dir.resolve("unsafe.ckpt");
        TorchFiles.write(local, state, WriteOptions.DEFAULT.allowUnsafeGlobals());
        byte[] bytes = Files.readAllBytes(local);
        bytes[bytes.length / 2] ^= 0x40; // inside the tensor's data
        String url = "s3://" + bucket + "/unsafe.ckpt";
        server.client().putObject(b -> b.bucket(bucket).key("unsafe.ckpt"),
                software.amazon.awssdk.core.sync.RequestBody.fromBytes(bytes));
        assertEquals(List.of("argparse.Namespace"), TorchFiles.unsafeGlobals(local));
        assertEquals(TorchFiles.unsafeGlobals(local), TorchFiles.unsafeGlobals(url));
        assertThrows(CorruptCheckpointException.class, () -> TorchFiles.read(url));
        CheckpointNotFoundException missing = assertThrows(CheckpointNotFoundException.class,
                () -> TorchFiles.unsafeGlobals("s3://" + bucket + "/missing.ckpt"));
        assertTrue(missing.getMessage().contains("s3://" + bucket + "/missing.ckpt"), missing.getMessage());
    }

    @Test
    void missingObjectsAndBucketsAreNotFoundNamingTheUrl() {
        String bucket = server.newBucket("missing");
        CheckpointNotFoundException key = assertThrows(CheckpointNotFoundException.class,
                () -> fabric.load("s3://" + bucket + "/nothing.ckpt"));
        assertTrue(key.getMessage().contains("s3://" + bucket + "/nothing.ckpt"), key.getMessage());
        CheckpointNotFoundException noBucket = assertThrows(CheckpointNotFoundException.class,
                () -> fabric.load("s3://no-such-bucket-here/x.ckpt"));
        assertTrue(noBucket.getMessage().contains("s3://no-such-bucket-here/x.ckpt"), noBucket.getMessage());
        assertTrue(noBucket.getMessage().contains("bucket"), noBucket.getMessage());
        CheckpointNotFoundException saveToNoBucket = assertThrows(CheckpointNotFoundException.class,
                () -> fabric.save("s3://no-such-bucket-here/x.ckpt", state(3)));
        assertTrue(saveToNoBucket.getMessage().contains("s3://no-such-bucket-here/x.ckpt"), saveToNoBucket.getMessage());
    }

    @Test
    void anObjectThatIsNotACheckpointIsCorruptNamingTheUrl() {
        String bucket = server.newBucket("corrupt");
        server.client().putObject(b -> b.bucket(bucket).key("junk.ckpt"),
                software.amazon.awssdk.core.sync.RequestBody.fromString("not a zip file at all"));
        CorruptCheckpointException e = assertThrows(CorruptCheckpointException.class,
                () -> fabric.load("s3://" + bucket + "/junk.ckpt"));
        assertTrue(e.getMessage().contains("s3://" + bucket + "/junk.ckpt"), e.getMessage());
    }

    @Test
    void locationsParseAndName() {
        CheckpointLocation file = CheckpointLocation.parse("s3://bucket/a/b/last.ckpt");
        assertFalse(file.isLocal());
        assertEquals("bucket", file.bucket());
        assertEquals("a/b/last.ckpt", file.key());
        assertEquals("last.ckpt", file.fileName());
        assertEquals("s3://bucket/a/b/last.ckpt", file.toString());
        CheckpointLocation directory = CheckpointLocation.parse("s3://bucket/run/step-10/");
        assertEquals("run/step-10", directory.key());
        assertEquals("s3://bucket/run/step-10/.metadata", directory.resolve(".metadata").toString());
        assertThrows(IllegalArgumentException.class, () -> CheckpointLocation.parse("s3://bucket/"));
        assertThrows(IllegalArgumentException.class, () -> CheckpointLocation.parse("gs://bucket/x"));
        assertThrows(UnsupportedOperationException.class, file::path);
        assertTrue(CheckpointLocation.parse("/tmp/x.ckpt").isLocal());
    }
}
