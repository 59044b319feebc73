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
    void loadRawOfAHuggingFaceShardedDirectory() throws IOException {
        Net model = new Net(4, 8, 2);
        Map<Object, Object> weights = StateDicts.of(model);
        Map<Object, Object> first = new LinkedHashMap<>(), second = new LinkedHashMap<>();
        StringBuilder map = new StringBuilder();
        for (Map.Entry<Object, Object> e : weights.entrySet()) {
            String name = (String) e.getKey();
            String shard = name.startsWith("fc1") ? "model-00001-of-00002.safetensors"
                    : "model-00002-of-00002.safetensors";
            (name.startsWith("fc1") ? first : second).put(name, e.getValue());
            map.append(map.length() == 0 ? "" : ", ").append('"').append(name).append("\": \"").append(shard)
                    .append('"');
        }
        Path shards = Files.createDirectories(dir.resolve("hf"));
        TorchFiles.write(shards.resolve("model-00001-of-00002.safetensors"), first);
        TorchFiles.write(shards.resolve("model-00002-of-00002.safetensors"), second);
        Files.writeString(shards.resolve("model.safetensors.index.json"),
                "{\"metadata\": {\"total_size\": 176}, \"weight_map\": {" + map + "}}");
        Net other = new Net(4, 8, 2);
        fabric.loadRaw(shards, other);
        assertTrue(other.fc1.weight().equal(model.fc1.weight()));
        assertTrue(other.fc2.bias().equal(model.fc2.bias()));
        Net viaIndex = new Net(4, 8, 2);
        fabric.loadRaw(shards.resolve("model.safetensors.index.json"), viaIndex);
        assertTrue(viaIndex.fc2.weight().equal(model.fc2.weight()));
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
