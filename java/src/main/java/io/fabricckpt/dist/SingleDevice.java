package io.fabricckpt.dist;

import io.fabricckpt.core.AsyncSave;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.io.AsyncWriter;
import io.fabricckpt.internal.io.CheckpointIOs;
import java.util.Map;
import java.util.function.BiPredicate;

/**
 * One process: it writes and reads its checkpoints alone (Lightning's {@code SingleDeviceStrategy});
 * collectives are trivial. Thread-safe (stateless).
 */
public final class SingleDevice implements Strategy {
    public static final SingleDevice INSTANCE = new SingleDevice();

    private SingleDevice() {}

    @Override
    public int globalRank() {
        return 0;
    }

    @Override
    public int worldSize() {
        return 1;
    }

    @Override
    public void barrier() {}

    @Override
    public boolean reduceBooleanDecision(boolean decision) {
        return decision;
    }

    @Override
    public String broadcast(String text, int src) {
        if (src != 0) {
            throw new IllegalArgumentException("source rank " + src + " is not in [0, 1)");
        }
        return text;
    }

    /** One torch.save file (or object), written atomically by this process. */
    @Override
    public void save(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, WriteOptions options) {
        StateConversion.validateFilter(state, filter);
        try (NativeValue checkpoint = StateConversion.toCheckpoint(state, filter)) {
            CheckpointIOs.forWriting(location).write(location, checkpoint, options, 0, null);
        }
    }

    /** {@link #save} through the JVM's background writer ({@code AsyncSaver}'s semantics). */
    @Override
    public AsyncSave saveAsync(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, WriteOptions options,
            ProgressListener listener) {
        StateConversion.validateFilter(state, filter);
        return AsyncWriter.shared().save(location, StateConversion.toCheckpoint(state, filter), options,
                listener);
    }

    @Override
    public String toString() {
        return "SingleDevice";
    }
}
