package io.fabricckpt.core;

import java.net.URI;
import java.nio.file.Path;
import java.util.Objects;

/**
 * Where a checkpoint lives: a torch.save file or a sharded directory, on the local file system or in
 * S3-compatible object storage ({@code s3://bucket/key} for a file, {@code s3://bucket/prefix/} for a
 * sharded directory, as Lightning's fsspec paths). Another storage backend is a new scheme here and a
 * new checkpoint IO behind it, not a change to every signature that takes a location.
 *
 * <p>Immutable and thread-safe.
 */
public final class CheckpointLocation {
    /** The URI scheme of object-storage locations. */
    public static final String S3 = "s3";

    private final Path path;     // local locations; null for object storage
    private final String bucket; // object storage; null for local paths
    private final String key;    // the object key, or the directory's prefix without its trailing '/'

    private CheckpointLocation(Path path, String bucket, String key) {
        this.path = path;
        this.bucket = bucket;
        this.key = key;
    }

    /** A local file or directory (relative paths are resolved against the working directory now). */
    public static CheckpointLocation of(Path path) {
        return new CheckpointLocation(Objects.requireNonNull(path, "path").toAbsolutePath().normalize(), null, null);
    }

    /**
     * An object (or, for a sharded directory, the objects under {@code key + "/"}) in {@code bucket}.
     *
     * @throws IllegalArgumentException for an empty bucket or key
     */
    public static CheckpointLocation ofObject(String bucket, String key) {
        Objects.requireNonNull(bucket, "bucket");
        Objects.requireNonNull(key, "key");
        String trimmed = key;
        while (trimmed.startsWith("/")) {
            trimmed = trimmed.substring(1);
        }
        while (trimmed.endsWith("/")) {
            trimmed = trimmed.substring(0, trimmed.length() - 1);
        }
        if (bucket.isEmpty() || bucket.contains("/")) {
            throw new IllegalArgumentException("s3://" + bucket + "/" + key + ": not a bucket name: '" + bucket + "'");
        }
        if (trimmed.isEmpty()) {
            throw new IllegalArgumentException("s3://" + bucket + "/" + key
                    + ": no object key (a checkpoint is an object or a prefix inside the bucket)");
        }
        return new CheckpointLocation(null, bucket, trimmed);
    }

    /**
     * A location as users write it: a local path ({@code ckpt/last.ckpt}), a {@code file:} URI, or an
     * {@code s3://bucket/key} URL.
     *
     * @throws IllegalArgumentException for a URI of a scheme with no storage backend here
     */
    public static CheckpointLocation parse(String location) {
        Objects.requireNonNull(location, "location");
        int colon = location.indexOf(':');
        // "C:" style drive letters do not occur on Linux; a scheme has two or more letters.
        if (colon > 1 && location.startsWith("//", colon + 1) || location.startsWith("file:")) {
            String scheme = location.substring(0, colon);
            if (scheme.equals(S3)) {
                String rest = location.substring(colon + 3);
                int slash = rest.indexOf('/');
                return ofObject(slash < 0 ? rest : rest.substring(0, slash), slash < 0 ? "" : rest.substring(slash + 1));
            }
            if (!scheme.equals("file")) {
                throw new IllegalArgumentException(location + ": no storage backend for the scheme '" + scheme
                        + "' (supported: local paths, file: URIs and s3:// URLs)");
            }
            return of(Path.of(URI.create(location)));
        }
        return of(Path.of(location));
    }

    /** Whether this is a local file or directory (else an object-storage location). */
    public boolean isLocal() {
        return path != null;
    }

    /** "file" for local paths, {@link #S3} for object storage. */
    public String scheme() {
        return isLocal() ? "file" : S3;
    }

    /**
     * The local path of this location.
     *
     * @throws UnsupportedOperationException for an object-storage location
     */
    public Path path() {
        if (path == null) {
            throw new UnsupportedOperationException(this + ": not a local path");
        }
        return path;
    }

    /**
     * The bucket of an object-storage location.
     *
     * @throws UnsupportedOperationException for a local path
     */
    public String bucket() {
        requireObject();
        return bucket;
    }

    /**
     * The object key (for a sharded directory: its prefix, without the trailing {@code /}).
     *
     * @throws UnsupportedOperationException for a local path
     */
    public String key() {
        requireObject();
        return key;
    }

    /** The entry {@code name} inside this directory: a file beside the others, or an object under the prefix. */
    public CheckpointLocation resolve(String name) {
        return isLocal() ? of(path.resolve(name)) : ofObject(bucket, key + "/" + name);
    }

    /** The last component of the path or key ({@code last.ckpt}). */
    public String fileName() {
        if (isLocal()) {
            Path name = path.getFileName();
            return name == null ? "" : name.toString();
        }
        return key.substring(key.lastIndexOf('/') + 1);
    }

    private void requireObject() {
        if (bucket == null) {
            throw new UnsupportedOperationException(this + ": not an object-storage location");
        }
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof CheckpointLocation l && Objects.equals(l.path, path) && Objects.equals(l.bucket, bucket)
                && Objects.equals(l.key, key);
    }

    @Override
    public int hashCode() {
        return Objects.hash(path, bucket, key);
    }

    /** The path as users wrote it, absolute, or the {@code s3://bucket/key} URL: what every error message names. */
    @Override
    public String toString() {
        return isLocal() ? path.toString() : "s3://" + bucket + "/" + key;
    }
}
