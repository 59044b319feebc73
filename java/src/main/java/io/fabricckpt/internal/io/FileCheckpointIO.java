package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.NativeValue;

/**
 * A checkpoint IO whose checkpoint is one file that one process writes whole ({@link TorchSaveFileIO},
 * {@link SafetensorsFileIO}); {@link CheckpointIOs#forWriting} picks one by the target's name.
 */
public interface FileCheckpointIO extends CheckpointIO {
    /**
     * Writes a whole checkpoint tree from this process with {@code threads} writer threads (0: one per
     * core), atomically: a failure leaves what was there.
     */
    void write(CheckpointLocation location, NativeValue checkpoint, WriteOptions options, int threads,
            ProgressListener listener);

    /** {@link #write(CheckpointLocation, NativeValue, WriteOptions, int, ProgressListener)} with one thread per core. */
    default void write(CheckpointLocation location, NativeValue checkpoint, WriteOptions options,
            ProgressListener listener) {
        write(location, checkpoint, options, 0, listener);
    }
}
