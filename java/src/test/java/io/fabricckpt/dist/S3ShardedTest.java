package io.fabricckpt.dist;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.Fabric;
import io.fabricckpt.Net;
import io.fabricckpt.S3Server;
import io.fabricckpt.TorchFiles;
import io.fabricckpt.core.CorruptCheckpointException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import software.amazon.awssdk.core.sync.RequestBody;

/**
 * A sharded directory in object storage ({@code s3://bucket/prefix/}) against the real S3 server: loaded
 * on 2 JVMs and on 1, the same state as the local directory gives, each rank fetching only the byte
 * ranges of the chunks overlapping its shards; saved by 2 JVMs, the local directory's bytes object for
 * object; a failed save leaving the previous checkpoint.
 */
class S3ShardedTest {
    @TempDir
    Path dir;

    private final S3Server server = S3Server.get();

    private static LocalLauncher launcher(int n) {
        Map<String, String> env = new HashMap<>(S3Server.environment());
        env.put("FABRICCKPT_DIST_TIMEOUT", "60");
        return new LocalLauncher(n).timeout(Duration.ofSeconds(120)).failureGrace(Duration.ofSeconds(30))
                .environment(env);
    }

    private static Optional<String> line(LocalLauncher.Result r, int rank, String prefix) {
        return r.output(rank).stream().filter(l -> l.startsWith(prefix)).map(l -> l.substring(prefix.length()))
                .findFirst();
    }

    private static LocalLauncher.Result launch(int n, String... args) throws Exception {
        LocalLauncher.Result r = launcher(n).launch(FsdpWorker.class.getName(), args);
        assertTrue(r.succeeded(), r.describe());
        if (args[0].equals("load")) {
            for (int rank = 0; rank < n; rank++) {
                assertEquals(Optional.of("5"), line(r, rank, "step="), "rank " + rank + ": " + r.output(rank));
            }
        }
        return r;
    }

    @Test
    void aShardedDirectoryInS3LoadsOnTwoJvmsAndOneFetchingOnlyItsChunks() throws Exception {
        Path local = dir.resolve("sharded");
        launch(2, "save-sharded", local.toString());
        String bucket = server.newBucket("sharded");
        long shardBytes = 0;
        long wholeBytes = 0; // .metadata and meta.pt, fetched whole by every reader
        try (Stream<Path> files = Files.list(local)) {
            for (Path file : files.toList()) {
                String key = "run/step-5/" + file.getFileName();
                server.client().putObject(b -> b.bucket(bucket).key(key), RequestBody.fromFile(file));
                if (file.getFileName().toString().endsWith(".distcp")) {
                    shardBytes += Files.size(file);
                } else {
                    wholeBytes += Files.size(file);
                }
            }
        }
        String url = "s3://" + bucket + "/run/step-5/";

        // One file name (it names the archive folder inside), three folders.
        Path fromLocal = Files.createDirectories(dir.resolve("from-local")).resolve("loaded.ckpt");
        Path fromS3By2 = Files.createDirectories(dir.resolve("from-s3-by-2")).resolve("loaded.ckpt");
        Path fromS3By1 = Files.createDirectories(dir.resolve("from-s3-by-1")).resolve("loaded.ckpt");
        launch(2, "load", local.toString(), fromLocal.toString());
        LocalLauncher.Result two = launch(2, "load", url, fromS3By2.toString());
        launch(1, "load", url, fromS3By1.toString());
        // Rows are split between the ranks: each fetches (about) its half of the shard files, not all.
        for (int rank = 0; rank < 2; rank++) {
            long fetched = Long.parseLong(line(two, rank, "s3-bytes=").orElseThrow()) - wholeBytes;
            long gets = Long.parseLong(line(two, rank, "s3-gets=").orElseThrow());
            System.out.println("rank " + rank + " fetched " + fetched + " of " + shardBytes + " shard bytes in " + gets
                    + " GETs");
            assertTrue(fetched > 0 && fetched < shardBytes * 3 / 4, "rank " + rank + " fetched " + fetched + " of "
                    + shardBytes + " shard bytes");
            // Touching chunks come in one ranged GET: .metadata and meta.pt, then for each key read ("model",
            // "optimizer") at most two ranges of each of the two files. One GET per chunk was 30 here.
            assertTrue(gets <= 2 + 2 * 2 * 2, "rank " + rank + " sent " + gets + " GETs");
        }
        // The FULL files each load wrote are one and the same.
        assertArrayEquals(Files.readAllBytes(fromLocal), Files.readAllBytes(fromS3By2));
        assertArrayEquals(Files.readAllBytes(fromLocal), Files.readAllBytes(fromS3By1));

        // One plain process, and the consolidated read (what convert writes): as from the local directory.
        assertEquals(TorchFiles.read(local).toString(), TorchFiles.read(url).toString());
        // verify stages the structure only and reads the chunks' bytes from the store: the local summary.
        String verified = TorchFiles.verify(url);
        assertEquals("s3://" + bucket + "/run/step-5: " + TorchFiles.verify(local), verified);
        // Flipped bytes in a shard file are the local verify's error, naming the object.
        Path flippedDir = Files.createDirectories(dir.resolve("flipped"));
        String flippedUrl = "s3://" + bucket + "/flipped";
        try (Stream<Path> files = Files.list(local)) {
            for (Path file : files.toList()) {
                byte[] bytes = Files.readAllBytes(file);
                if (file.getFileName().toString().equals("__0_0.distcp")) {
                    for (int i = 0; i < 64; i++) { // longer than any alignment padding, which no CRC covers
                        bytes[bytes.length / 2 + i] ^= 0x40;
                    }
                }
                Files.write(flippedDir.resolve(file.getFileName()), bytes);
                server.client().putObject(b -> b.bucket(bucket).key("flipped/" + file.getFileName()),
                        RequestBody.fromBytes(bytes));
            }
        }
        CorruptCheckpointException localError = assertThrows(CorruptCheckpointException.class,
                () -> TorchFiles.verify(flippedDir));
        CorruptCheckpointException remoteError = assertThrows(CorruptCheckpointException.class,
                () -> TorchFiles.verify(flippedUrl));
        assertEquals(localError.getMessage().replace(flippedDir.toString(), flippedUrl), remoteError.getMessage());
        Net fromS3 = new Net(4, 8, 2);
        Net fromDisk = new Net(4, 8, 2);
        Map<String, Object> remainder = new Fabric().load(url, new HashMap<>(Map.of("model", fromS3)));
        Map<String, Object> localRemainder = new Fabric().load(local, new HashMap<>(Map.of("model", fromDisk)));
        assertEquals(localRemainder.keySet(), remainder.keySet());
        assertTrue(fromS3.fc1.weight().equal(fromDisk.fc1.weight()));
    }

    /** The objects under {@code prefix/} of the bucket: name to bytes. */
    private Map<String, byte[]> objects(String bucket, String prefix) {
        Map<String, byte[]> out = new java.util.TreeMap<>();
        for (var o : server.client().listObjectsV2Paginator(b -> b.bucket(bucket).prefix(prefix + "/")).contents()) {
            out.put(o.key().substring(prefix.length() + 1),
                    server.client().getObjectAsBytes(b -> b.bucket(bucket).key(o.key())).asByteArray());
        }
        return out;
    }

    private Map<String, byte[]> files(Path local) throws Exception {
        Map<String, byte[]> out = new java.util.TreeMap<>();
        try (Stream<Path> files = Files.list(local)) {
            for (Path file : files.toList()) {
                out.put(file.getFileName().toString(), Files.readAllBytes(file));
            }
        }
        return out;
    }

    private void assertNoUploadPending(String bucket) {
        assertEquals(List.of(), server.client().listMultipartUploads(b -> b.bucket(bucket)).uploads());
    }

    /**
     * 2 JVM ranks save to {@code s3://bucket/prefix/}: every rank's shard file and meta.pt are the bytes
     * of the local directory's files (each shard file several multipart parts, every tensor stream
     * crossing part boundaries), the checkpoint reads back as the local one does, and a later save by
     * one rank replaces it whole (the second rank's file removed).
     */
    @Test
    void aShardedSaveToS3IsTheLocalDirectoryObjectForObject() throws Exception {
        String bucket = server.newBucket("sharded-save");
        String url = "s3://" + bucket + "/run/step-5";
        assertSavedAsTheLocalDirectory("save-sharded", bucket, "run/step-5");

        launch(1, "save-sharded", url); // one rank, the small model: replaces the checkpoint whole
        assertEquals(java.util.Set.of(".metadata", "__0_0.distcp", "meta.pt"), objects(bucket, "run/step-5").keySet());
        assertTrue(TorchFiles.verify(url).contains("OK"));
        launch(2, "load", url, dir.resolve("loaded.ckpt").toString()); // resharded to 2 ranks: step=5 on both
    }

    /** A background save ({@code saveAsync} under Fsdp) to S3 writes what the foreground save writes. */
    @Test
    void aBackgroundShardedSaveToS3WritesTheForegroundObjects() throws Exception {
        String bucket = server.newBucket("sharded-async");
        launch(2, "save-sharded", "s3://" + bucket + "/foreground");
        launch(2, "save-async-sharded", "s3://" + bucket + "/background");
        Map<String, byte[]> foreground = objects(bucket, "foreground");
        Map<String, byte[]> background = objects(bucket, "background");
        assertEquals(foreground.keySet(), background.keySet());
        for (String name : List.of("__0_0.distcp", "__1_0.distcp", "meta.pt")) {
            assertArrayEquals(foreground.get(name), background.get(name), name);
        }
        assertEquals(TorchFiles.read("s3://" + bucket + "/foreground/").toString(),
                TorchFiles.read("s3://" + bucket + "/background/").toString());
    }

    /**
     * A rank the store refuses (wrong credentials on the last rank) fails the sharded save on every
     * rank before anything is replaced: the previous checkpoint's objects are unchanged, no upload is
     * left pending, and the errors name the object and the failing rank.
     */
    @Test
    void aRankThatCannotUploadFailsEveryRankAndKeepsThePreviousCheckpoint() throws Exception {
        String bucket = server.newBucket("sharded-denied");
        String url = "s3://" + bucket + "/run";
        launch(2, "save-sharded", url);
        Map<String, byte[]> previous = objects(bucket, "run");

        LocalLauncher.Result r = launcher(2).launch(FsdpWorker.class.getName(), "save-sharded-denied-on-last-rank", url);
        assertEquals(List.of(1, 1), r.exitCodes(), r.describe());
        String error1 = line(r, 1, "error: ").orElseThrow(() -> new AssertionError(r.describe()));
        assertTrue(error1.contains(url + "/__1_0.distcp") && error1.contains("access denied"), error1);
        assertEquals("CheckpointStorageException", line(r, 1, "error-type: ").orElseThrow());
        String error0 = line(r, 0, "error: ").orElseThrow(() -> new AssertionError(r.describe()));
        assertTrue(error0.contains("rank 1 could not write its shard file"), error0);
        assertEquals("DistributedException rank=0 operation=sharded save: shard write on rank 1",
                line(r, 0, "error-type: ").orElseThrow());

        Map<String, byte[]> after = objects(bucket, "run");
        assertEquals(previous.keySet(), after.keySet());
        for (String name : previous.keySet()) {
            assertArrayEquals(previous.get(name), after.get(name), name);
        }
        assertNoUploadPending(bucket);
        assertEquals(Optional.of("5"), line(launch(2, "load", url, dir.resolve("loaded.ckpt").toString()), 0,
                "step="));
    }

    /**
     * 2 JVM ranks save {@code Fsdp(FULL)} to {@code s3://bucket/key}: the object is the local FULL
     * file's bytes (a multipart upload of several parts filled as the whole tensors arrive), nothing is
     * written to disk on the way (the JVMs' temporary folder does not exist), and no upload is left
     * pending; to a bucket that does not exist, every rank fails naming the URL.
     */
    @Test
    void aFullSaveToS3IsTheLocalFullFile() throws Exception {
        String hidden = "262144"; // about 20 MiB of whole tensors
        Path local = dir.resolve("full.ckpt");
        launch(2, "save-full", local.toString(), hidden);
        String bucket = server.newBucket("full-save");
        String url = "s3://" + bucket + "/run/full.ckpt";
        Path noDisk = dir.resolve("no-such-folder");
        LocalLauncher.Result r = launcher(2).jvmArgs(List.of("-Djava.io.tmpdir=" + noDisk))
                .launch(FsdpWorker.class.getName(), "save-full", url, hidden);
        assertTrue(r.succeeded(), r.describe());

        byte[] expected = Files.readAllBytes(local);
        assertTrue(expected.length > 10 << 20, "several parts: " + expected.length);
        assertArrayEquals(expected, server.client().getObjectAsBytes(b -> b.bucket(bucket).key("run/full.ckpt"))
                .asByteArray());
        assertFalse(Files.exists(noDisk));
        assertNoUploadPending(bucket);

        String missing = "s3://" + bucket + "-missing/full.ckpt";
        LocalLauncher.Result failed = launcher(2).launch(FsdpWorker.class.getName(), "save-full", missing);
        assertEquals(List.of(1, 1), failed.exitCodes(), failed.describe());
        for (int rank = 0; rank < 2; rank++) {
            String error = line(failed, rank, "error: ").orElseThrow(() -> new AssertionError(failed.describe()));
            assertTrue(error.contains(missing), error);
        }
    }

    /**
     * Rank 0 of a 2-JVM {@code Fsdp(FULL)} save to {@code s3://} of 16 layers (16 MiB each, 256 MiB of
     * whole tensors) holds the whole tensors being sent and the parts in flight, never the file: its
     * peak rises by less than the local streamed save's bound (FsdpTest) plus one more whole tensor and
     * the parts in flight (3 of 5 MiB here), and the object verifies. Measured on a second save (the
     * first grows the JVM's heap and loads the SDK).
     */
    @Test
    void aFullSaveToS3HoldsTheTensorsBeingSentNotTheFile() throws Exception {
        String url = "s3://" + server.newBucket("full-memory") + "/full.ckpt";
        Map<String, String> env = new HashMap<>(S3Server.environment());
        env.put("FABRICCKPT_DIST_TIMEOUT", "60");
        env.put("MALLOC_MMAP_THRESHOLD_", "1048576"); // freed tensors leave RSS (see FsdpTest)
        // The Java heap fixed and resident from the start: what rises is native memory (tensors, parts),
        // not the heap growing to hold the SDK's garbage, which depends on when G1 collects.
        List<String> fixedHeap = List.of("-Xms256m", "-Xmx256m", "-XX:+AlwaysPreTouch");
        LocalLauncher.Result r = launcher(2).environment(env).jvmArgs(fixedHeap)
                .launch(FsdpWorker.class.getName(), "save-full-memory", url, "16");
        assertTrue(r.succeeded(), r.describe());
        long extraKib = Long.parseLong(line(r, 0, "extra-kib=").orElseThrow(() -> new AssertionError(r.output(0))));
        System.out.println("rank 0 extra peak during the full save to S3: " + extraKib / 1024 + " MiB");
        long bound = (64L << 10) + (16L << 10) + 3 * (5L << 10);
        assertTrue(extraKib < bound, "rank 0's peak rose by " + extraKib + " KiB, bound " + bound);
        String verified = TorchFiles.verify(url);
        assertTrue(verified.contains("OK"), verified);
    }

    /**
     * DCP's SAFETENSORS serialization to {@code s3://}: 2 JVM ranks' shard files (values' torch.save streams,
     * then the chunks as one safetensors blob, several multipart parts) are the local save's files byte for
     * byte, and the prefix loads back as the local directory does.
     */
    @Test
    void aSafetensorsShardedSaveToS3IsTheLocalDirectoryObjectForObject() throws Exception {
        assertSavedAsTheLocalDirectory("save-sharded-safetensors", server.newBucket("sharded-st"), "run");
    }

    /**
     * 2 JVM ranks run the worker's {@code mode} to a local directory and to {@code s3://bucket/prefix}
     * (fc1 of 262144 rows: about 10 MiB of shards per rank, 5 MiB parts, so every shard file is several
     * parts with item streams crossing their boundaries): the objects are the files byte for byte, no
     * upload is left pending, and the prefix reads back as the directory does.
     */
    private void assertSavedAsTheLocalDirectory(String mode, String bucket, String prefix) throws Exception {
        String hidden = "262144";
        Path local = dir.resolve(mode + "-local");
        launch(2, mode, local.toString(), hidden);
        String url = "s3://" + bucket + "/" + prefix;
        launch(2, mode, url, hidden);
        Map<String, byte[]> expected = files(local);
        Map<String, byte[]> saved = objects(bucket, prefix);
        assertEquals(expected.keySet(), saved.keySet());
        for (String name : List.of("__0_0.distcp", "__1_0.distcp", "meta.pt")) {
            assertTrue(expected.get(name).length > (name.equals("meta.pt") ? 0 : 5 << 20), name);
            assertArrayEquals(expected.get(name), saved.get(name), name);
        }
        assertNoUploadPending(bucket);
        assertEquals(TorchFiles.read(local).toString(), TorchFiles.read(url + "/").toString());
    }

    /** A prefix that holds other objects is refused before anything is written. */
    @Test
    void aShardedSaveRefusesAPrefixHoldingOtherObjects() throws Exception {
        String bucket = server.newBucket("sharded-foreign");
        server.client().putObject(b -> b.bucket(bucket).key("run/config.json"), RequestBody.fromString("{}"));
        LocalLauncher.Result r = launcher(1).launch(FsdpWorker.class.getName(), "save-sharded", "s3://" + bucket + "/run");
        assertEquals(List.of(1), r.exitCodes(), r.describe());
        String error = line(r, 0, "error: ").orElseThrow(() -> new AssertionError(r.describe()));
        assertTrue(error.contains("s3://" + bucket + "/run") && error.contains("config.json"), error);
        assertEquals(java.util.Set.of("config.json"), objects(bucket, "run").keySet());
        assertNoUploadPending(bucket);
    }
}
