package io.fabricckpt.cli.format;

import java.nio.file.Path;

/**
 * A byte range whose CRC-32 verify checks: a zip record's data, or bytes it only reads through (a
 * storage of a legacy file, a safetensors file's tensor data). {@code file} is the path as the native
 * verify names it (a sharded directory's data file: the directory, then its name).
 */
public record CheckedRange(String file, long offset, long length) {
    public Path path() {
        return Path.of(file);
    }
}
