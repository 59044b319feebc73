package io.fabricckpt.core;

import java.net.URI;
import java.nio.file.Path;
import java.util.Objects;

/**
 * Where a checkpoint lives: a torch.save file or a sharded directory. Today a local path; the type
 * exists so that another storage backend is a new scheme here and a new checkpoint IO behind it,
 * not a change to every signature that takes a location.
 *
 * <p>Immutable and thread-safe.
 */
public final class CheckpointLocation {
    private final Path path;

    private CheckpointLocation(Path path) {
        this.path = path;
    }

    /** A local file or directory (relative paths are resolved against the working directory now). */
    public static CheckpointLocation of(Path path) {
        return new CheckpointLocation(Objects.requireNonNull(path, "path").toAbsolutePath().normalize());
    }

    /**
     * A location as users write it: a local path ({@code ckpt/last.ckpt}) or a {@code file:} URI.
     *
     * @throws IllegalArgumentException for a URI of a scheme with no storage backend here
     */
    public static CheckpointLocation parse(String location) {
        Objects.requireNonNull(location, "location");
        int colon = location.indexOf(':');
        // "C:" style drive letters do not occur on Linux; a scheme has two or more letters.
        if (colon > 1 && location.startsWith("//", colon + 1) || location.startsWith("file:")) {
            String scheme = location.substring(0, colon);
            if (!scheme.equals("file")) {
                throw new IllegalArgumentException(location + ": no storage backend for the scheme '" + scheme
                        + "' (supported: local paths and file: URIs)");
            }
            return of(Path.of(URI.create(location)));
        }
        return of(Path.of(location));
    }

    /** The local path of this location. */
    public Path path() {
        return path;
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof CheckpointLocation l && l.path.equals(path);
    }

    @Override
    public int hashCode() {
        return path.hashCode();
    }

    /** The path as users wrote it, absolute: what every error message names. */
    @Override
    public String toString() {
        return path.toString();
    }
}
