package io.fabricckpt.cli;

import java.nio.file.Files;
import java.nio.file.Path;

/** Checks on the paths the commands are given, before anything is read. */
final class Paths {
    private Paths() {}

    /** A checkpoint file or sharded directory that exists and can be read, else exit code 3. */
    static Path readable(Path path) {
        if (!Files.exists(path)) {
            throw new CliException(ExitCodes.IO, "cannot read " + path + ": no such file or directory");
        }
        if (!Files.isReadable(path)) {
            throw new CliException(ExitCodes.IO, "cannot read " + path + ": permission denied");
        }
        return path;
    }
}
