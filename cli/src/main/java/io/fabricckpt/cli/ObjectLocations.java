package io.fabricckpt.cli;

import io.fabricckpt.TorchFiles;
import io.fabricckpt.core.ReadOptions;
import java.util.List;

/**
 * The commands' {@code s3://} locations: read through the library (which fetches objects with parallel
 * ranged GETs, see docs/storage.md), where local files are read by the torch-free outline readers.
 */
final class ObjectLocations {
    private ObjectLocations() {}

    /** Whether the command-line argument names object storage rather than a local path. */
    static boolean isRemote(String location) {
        return location.startsWith("s3://");
    }

    /** The tree, tensors as {@link io.fabricckpt.cli.format.TensorInfo}s, as {@link Checkpoints#read} gives it. */
    static Object read(String location) {
        return Checkpoints.describeTensors(TorchFiles.read(location, ReadOptions.DEFAULT, null));
    }

    static List<String> unsafeGlobals(String location) {
        return TorchFiles.unsafeGlobals(location);
    }
}
