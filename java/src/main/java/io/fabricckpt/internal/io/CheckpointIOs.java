package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import java.nio.file.Files;

/** The checkpoint IO for a location: where a new format or storage backend is told apart. */
public final class CheckpointIOs {
    public static final TorchSaveFileIO TORCH_SAVE_FILE = new TorchSaveFileIO();
    public static final DcpDirectoryIO DCP_DIRECTORY = new DcpDirectoryIO();
    public static final SafetensorsFileIO SAFETENSORS_FILE = new SafetensorsFileIO();
    public static final ObjectStorageIO OBJECT_STORAGE = new ObjectStorageIO();

    private CheckpointIOs() {}

    /**
     * The IO that reads what is at {@code location}: a sharded directory, a safetensors file (by its
     * first bytes, whatever its name) or a torch.save file; an object or a sharded prefix when the
     * location is in object storage (which tells safetensors and torch.save apart by the same bytes).
     */
    public static CheckpointIO forReading(CheckpointLocation location) {
        if (!location.isLocal()) {
            return OBJECT_STORAGE;
        }
        if (isShardedDirectory(location)) {
            return DCP_DIRECTORY;
        }
        return isSafetensorsFile(location) ? SAFETENSORS_FILE : TORCH_SAVE_FILE;
    }

    /**
     * The IO that writes a single-file checkpoint to {@code location}: safetensors by its name, else
     * torch.save, both as objects when the location is in object storage.
     */
    public static FileCheckpointIO forWriting(CheckpointLocation location) {
        if (!location.isLocal()) {
            return OBJECT_STORAGE;
        }
        return SafetensorsFileIO.isSafetensorsName(location) ? SAFETENSORS_FILE : TORCH_SAVE_FILE;
    }

    /**
     * A local regular file that starts as a safetensors file does (an 8-byte header length, then '{'),
     * or a Hugging Face sharded checkpoint: its {@code *.safetensors.index.json}, or a directory holding
     * {@code model.safetensors.index.json}.
     */
    private static boolean isSafetensorsFile(CheckpointLocation location) {
        return (Files.isRegularFile(location.path()) || Files.isDirectory(location.path()))
                && FabricNative.isSafetensorsFile(NativeCalls.path(location));
    }

    /** A torch.distributed.checkpoint directory (its {@code .metadata}), as Lightning tells them apart. */
    public static boolean isShardedDirectory(CheckpointLocation location) {
        if (!location.isLocal()) {
            return OBJECT_STORAGE.isShardedDirectory(location);
        }
        return Files.isDirectory(location.path()) && FabricNative.isShardedCheckpoint(NativeCalls.path(location));
    }
}
