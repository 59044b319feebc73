package io.fabricckpt;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Lightning Fabric's checkpointing for the JVM: {@code fabric.save(path, state)} and
 * {@code fabric.load(path, state)} writing and reading the files Python Lightning writes and reads.
 */
public final class Fabric {

    public Fabric() {}

    /**
     * Saves {@code state} (a map of plain values: numbers, strings, booleans, null, byte[], tensors,
     * lists, maps, {@link PyTuple}...) as one torch.save file, atomically.
     */
    public void save(Path path, Map<String, ?> state) {
        TorchFiles.write(path, new LinkedHashMap<>(state));
    }

    /** Loads the whole checkpoint ({@code fabric.load(path)} with no state): the raw dictionary. */
    public Map<String, Object> load(Path path) {
        Object root = TorchFiles.read(path);
        if (!(root instanceof Map<?, ?> map)) {
            throw new CheckpointException(path + ": the checkpoint is a "
                    + (root == null ? "None" : root.getClass().getSimpleName())
                    + ", not a dictionary; read it with TorchFiles.read");
        }
        Map<String, Object> out = new LinkedHashMap<>();
        for (Map.Entry<?, ?> e : map.entrySet()) {
            if (!(e.getKey() instanceof String key)) {
                throw new CheckpointException(path + ": top-level key " + e.getKey()
                        + " is not a string; read it with TorchFiles.read");
            }
            out.put(key, e.getValue());
        }
        return out;
    }
}
