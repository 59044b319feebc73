package io.fabricckpt;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CorruptCheckpointException;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.StateMismatchException;
import io.fabricckpt.core.WriteOptions;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Adam;
import org.bytedeco.pytorch.AdamOptions;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** safetensors files wherever a path is taken: Fabric.save/load/loadRaw and TorchFiles. */
class SafetensorsTest {
    @TempDir
    Path dir;

    private final Fabric fabric = new Fabric();

    @Test
    void fabricSaveFlattensTheStateAndLoadRestoresIt() {
        torch.manual_seed(0);
        Net model = new Net(4, 8, 2);
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("note", "trained in Java");
        Path path = dir.resolve("checkpoint.safetensors");
        fabric.save(path, state);

        // The file is flat: state_dict() names under the state's key, in data order as load_file gives
        // them (save_file's: by dtype, then by name).
        @SuppressWarnings("unchecked")
        Map<String, Object> flat = (Map<String, Object>) TorchFiles.read(path);
        assertEquals(List.of("model.fc1.bias", "model.fc1.weight", "model.fc2.bias", "model.fc2.weight"),
                List.copyOf(flat.keySet()));
        assertTrue(((Tensor) flat.get("model.fc1.weight")).equal(model.fc1.weight()));

        torch.manual_seed(1);
        Net restored = new Net(4, 8, 2);
        Map<String, Object> target = new HashMap<>();
        target.put("model", restored);
        target.put("note", null);
        Map<String, Object> remainder = fabric.load(path, target);
        assertTrue(remainder.isEmpty());
        assertTrue(restored.fc2.bias().equal(model.fc2.bias()));
        assertEquals("trained in Java", target.get("note"));
        assertTrue(TorchFiles.verify(path).startsWith("ok: safetensors, 4 tensors"), TorchFiles.verify(path));
    }

    @Test
    void loadRawOfAModelsSafetensorsStrictAndNot() {
        Net model = new Net(4, 8, 2);
        Path path = dir.resolve("model.safetensors");
        TorchFiles.write(path, StateDicts.of(model));
        Net other = new Net(4, 8, 2);
        fabric.loadRaw(path, other);
        assertTrue(other.fc1.weight().equal(model.fc1.weight()));

        Map<Object, Object> partial = new LinkedHashMap<>(StateDicts.of(model));
        partial.remove("fc2.bias");
        Path missing = dir.resolve("partial.safetensors");
        TorchFiles.write(missing, partial);
        StateMismatchException e = assertThrows(StateMismatchException.class, () -> fabric.loadRaw(missing, other));
        assertTrue(e.getMessage().contains("fc2.bias"), e.getMessage());
        Net third = new Net(4, 8, 2);
        fabric.loadRaw(missing, third, false);
        assertTrue(third.fc2.weight().equal(model.fc2.weight()));
    }

    @Test
    void fabricSavesAndLoadsAHuggingFaceShardedCheckpoint() throws IOException {
        torch.manual_seed(2);
        Net model = new Net(4, 8, 2); // fc1: 128 + 32 bytes, fc2: 64 + 8 bytes
        Path shards = Files.createDirectories(dir.resolve("hf"));
        Files.writeString(shards.resolve("config.json"), "{}");
        Files.write(shards.resolve("model.safetensors"), new byte[] {1}); // an older single file: replaced
        Path index = shards.resolve("model.safetensors.index.json");
        fabric.maxShardSize(170).save(index, Map.of("model", model, "note", "v1"));

        // huggingface_hub's layout: shards split in state order, strings in the index's metadata.
        try (var files = Files.list(shards)) {
            assertEquals(List.of("config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                    "model.safetensors.index.json"), files.map(p -> p.getFileName().toString()).sorted().toList());
        }
        String json = Files.readString(index);
        assertTrue(json.startsWith("{\n  \"metadata\": {\n    \"total_size\": 232,\n    \"note\": \"v1\"\n  },"), json);
        assertTrue(json.contains("\"model.fc1.weight\": \"model-00001-of-00002.safetensors\""), json);
        assertTrue(json.contains("\"model.fc2.weight\": \"model-00002-of-00002.safetensors\""), json);

        // The index file or its directory is the checkpoint: restored in place, the metadata string too.
        Net other = new Net(4, 8, 2);
        Map<String, Object> target = new HashMap<>();
        target.put("model", other);
        target.put("note", null);
        assertTrue(fabric.load(index, target).isEmpty());
        assertTrue(other.fc1.weight().equal(model.fc1.weight()) && other.fc2.bias().equal(model.fc2.bias()));
        assertEquals("v1", target.get("note"));
        Net viaDirectory = new Net(4, 8, 2);
        assertEquals(Map.of(), fabric.load(shards, Map.of("model", viaDirectory)));
        assertTrue(viaDirectory.fc2.weight().equal(model.fc2.weight()));
        assertTrue(TorchFiles.verify(index).startsWith("ok: safetensors index of 2 shards, 4 tensors"),
                TorchFiles.verify(index));

        // Saved again in one shard: the two-shard files go, the new index names its only shard.
        fabric.maxShardSize(WriteOptions.DEFAULT_MAX_SHARD_SIZE).save(index, Map.of("model", model));
        try (var files = Files.list(shards)) {
            assertEquals(List.of("config.json", "model-00001-of-00001.safetensors", "model.safetensors.index.json"),
                    files.map(p -> p.getFileName().toString()).sorted().toList());
        }
        assertThrows(IllegalArgumentException.class, () -> fabric.maxShardSize(0));
    }

    @Test
    void tensorsSharingMemoryAreRefusedInOneFileAndKeptOnceInAShardedCheckpoint() throws IOException {
        Tensor tied = torch.randn(3, 4);
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("lm_head.weight", tied);
        state.put("embed.weight", tied);
        Path single = dir.resolve("tied.safetensors");
        CheckpointException e = assertThrows(CheckpointException.class, () -> TorchFiles.write(single, state));
        assertTrue(e.getMessage().contains("share memory (embed.weight, lm_head.weight)") && e.getMessage()
                .contains("tied.safetensors"), e.getMessage());
        assertFalse(Files.exists(single));

        // As save_torch_state_dict: the alphabetically first is kept, the other named in the metadata.
        Path index = dir.resolve("tied").resolve("model.safetensors.index.json");
        TorchFiles.write(index, state);
        @SuppressWarnings("unchecked")
        Map<String, Object> read = (Map<String, Object>) TorchFiles.read(index);
        assertEquals(List.of("embed.weight"), List.copyOf(read.keySet()));
        assertTrue(((Tensor) read.get("embed.weight")).equal(tied));
        assertTrue(Files.readString(index).contains("\"lm_head.weight\": \"embed.weight\""));

        // A model with tied weights restores strictly: the dropped name reads as the tensor kept for it.
        Module tiedModel = tiedModule(torch.randn(2, 3));
        Path model = dir.resolve("tied-model").resolve("model.safetensors.index.json");
        fabric.save(model, Map.of("model", tiedModel));
        assertTrue(Files.readString(model).contains("\"model.head\": \"model.embed\""), Files.readString(model));
        Module restored = tiedModule(torch.zeros(2, 3));
        assertEquals(Map.of(), fabric.load(model, Map.of("model", restored)));
        assertTrue(restored.named_parameters().get("head").equal(tiedModel.named_parameters().get("embed")));
    }

    /** A module whose two parameters are one tensor (tied weights). */
    private static Module tiedModule(Tensor weight) {
        Module m = new Module();
        m.register_parameter("embed", weight);
        m.register_parameter("head", weight);
        return m;
    }

    @Test
    void mappedReadsAndContentNotNameTellTheFormat() throws IOException {
        Tensor t = torch.arange(new org.bytedeco.pytorch.Scalar(6)).reshape(2, 3);
        Path path = dir.resolve("weights.safetensors");
        TorchFiles.write(path, Map.of("t", t));
        Path renamed = Files.copy(path, dir.resolve("weights.bin"));
        for (Path p : List.of(path, renamed)) {
            @SuppressWarnings("unchecked")
            Map<String, Object> mapped = (Map<String, Object>) TorchFiles.read(p, ReadOptions.mapped());
            assertTrue(((Tensor) mapped.get("t")).equal(t));
        }
    }

    @Test
    void stateSafetensorsCannotHoldIsRefusedNamingTheKeys() {
        Net model = new Net(4, 8, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        model.trainStep(optimizer);
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("optimizer", optimizer);
        state.put("step", 3L);
        Path path = dir.resolve("no.safetensors");
        CheckpointException e = assertThrows(CheckpointException.class, () -> fabric.save(path, state));
        assertTrue(e.getMessage().contains("step (int)"), e.getMessage());
        assertTrue(e.getMessage().contains("optimizer.param_groups (list)"), e.getMessage());
        assertFalse(Files.exists(path));
    }

    @Test
    void hostileFilesAreCorruptCheckpointsNamingTheFile() throws IOException {
        byte[] json = "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}".getBytes(
                StandardCharsets.UTF_8);
        ByteBuffer bytes = ByteBuffer.allocate(8 + json.length + 4).order(ByteOrder.LITTLE_ENDIAN);
        bytes.putLong(json.length).put(json).putInt(0);
        Path path = dir.resolve("short.safetensors");
        Files.write(path, bytes.array());
        CorruptCheckpointException e = assertThrows(CorruptCheckpointException.class, () -> TorchFiles.read(path));
        assertTrue(e.getMessage().contains(path.toString()), e.getMessage());
        assertTrue(e.getMessage().contains("offsets past the end"), e.getMessage());
        assertInstanceOf(CorruptCheckpointException.class,
                assertThrows(CheckpointException.class, () -> fabric.loadRaw(path, new Net(4, 8, 2))));
    }
}
