package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import java.nio.file.Files;

/** The checkpoint IO for a location: where a new format or storage backend is told apart. */
public final class CheckpointIOs {
    public static final TorchSaveFileIO TORCH_SAVE_FILE = new TorchSaveFileIO();
    public static final DcpDirectoryIO DCP_DIRECTORY = new DcpDirectoryIO();
    public static final ObjectStorageIO OBJECT_STORAGE = new ObjectStorageIO();

    private CheckpointIOs() {}

    /** The IO that reads what is at {@code location}: a sharded directory or a torch.save file. */
    public static CheckpointIO forReading(CheckpointLocation location) {
        if (!location.isLocal()) {
            return OBJECT_STORAGE;
        }
        return isShardedDirectory(location) ? DCP_DIRECTORY : TORCH_SAVE_FILE;
    }

    /** The IO that writes a whole torch.save file at {@code location}. */
    public static FileWriterIO fileWriter(CheckpointLocation location) {
        return location.isLocal() ? TORCH_SAVE_FILE : OBJECT_STORAGE;
    }

    /** A torch.distributed.checkpoint directory (its {@code .metadata}), as Lightning tells them apart. */
    public static boolean isShardedDirectory(CheckpointLocation location) {
        if (!location.isLocal()) {
            return OBJECT_STORAGE.isShardedDirectory(location);
        }
        return Files.isDirectory(location.path()) && FabricNative.isShardedCheckpoint(NativeCalls.path(location));
    }
}
