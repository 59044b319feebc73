package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.ReadOptions;

/**
 * Owns the bytes of a checkpoint and where they live, as Lightning's {@code CheckpointIO}: a
 * strategy decides who writes what; a checkpoint IO writes and reads it. One implementation per
 * format and storage ({@link TorchSaveFileIO}, {@link DcpDirectoryIO}); {@link CheckpointIOs} picks
 * the one that reads a given location. How each is written depends on its layout (one process
 * writing a file, every rank writing its shards), so the writing methods are each implementation's own.
 */
public interface CheckpointIO {
    /** Opens the checkpoint at {@code location} for reading. */
    CheckpointReader open(CheckpointLocation location, ReadOptions options, ProgressListener listener);

    /** Checks the checkpoint end to end and returns a one-line summary. */
    String verify(CheckpointLocation location);
}
