package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.NativeValue;

/** Writes a whole torch.save file from this process, wherever the location's storage keeps it. */
public interface FileWriterIO {
    /**
     * Writes {@code checkpoint} as one torch.save file at {@code location}, atomically (a failure leaves
     * what was there), with {@code threads} threads (0: one per core).
     */
    void write(CheckpointLocation location, NativeValue checkpoint, WriteOptions options, int threads,
            ProgressListener listener);
}
