package io.fabricckpt.core;

/**
 * Options of {@code TorchFiles.write} and {@code Fabric.save}. A tree holding globals that
 * {@code torch.load(weights_only=True)} refuses (any class or function outside torch 2.10's allowlist,
 * e.g. an {@code argparse.Namespace} of hparams, or an {@code os.system} call read from a hostile file)
 * is refused with a {@link CheckpointException} naming each global and where it sits, before anything
 * is written: writing it would hand Python's {@code torch.load(weights_only=False)} a call to make. Opt
 * in with {@link #allowUnsafeGlobals()} only for data you trust.
 * <p>{@code maxShardSize} is the largest shard, in bytes, of a Hugging Face sharded checkpoint (a save
 * to a {@code *.safetensors.index.json} path), {@value #DEFAULT_MAX_SHARD_SIZE} by default as
 * huggingface_hub's "5GB"; a tensor larger than it gets a shard of its own.
 * <p>Thread-safety: Immutable and thread-safe.
 */
public record WriteOptions(String archiveName, boolean fsync, boolean unsafeGlobalsAllowed, long maxShardSize) {
    /** huggingface_hub's default {@code max_shard_size} ("5GB", decimal). */
    public static final long DEFAULT_MAX_SHARD_SIZE = 5_000_000_000L;

    /** What Lightning writes: archive folder {@code archive}, durable before it replaces the target. */
    public static final WriteOptions DEFAULT = new WriteOptions("archive", true, false, DEFAULT_MAX_SHARD_SIZE);

    public WriteOptions {
        if (archiveName == null || archiveName.isEmpty() || archiveName.contains("/")) {
            throw new IllegalArgumentException("archive name must be a non-empty folder name");
        }
        if (maxShardSize <= 0) {
            throw new IllegalArgumentException("the largest shard size must be positive, not " + maxShardSize);
        }
    }

    /** Unsafe globals refused (the default), shards of the default size. */
    public WriteOptions(String archiveName, boolean fsync) {
        this(archiveName, fsync, false, DEFAULT_MAX_SHARD_SIZE);
    }

    public WriteOptions withFsync(boolean fsync) {
        return new WriteOptions(archiveName, fsync, unsafeGlobalsAllowed, maxShardSize);
    }

    public WriteOptions withArchiveName(String archiveName) {
        return new WriteOptions(archiveName, fsync, unsafeGlobalsAllowed, maxShardSize);
    }

    /** Writes globals outside torch's weights_only allowlist too (trusted data only). */
    public WriteOptions allowUnsafeGlobals() {
        return withUnsafeGlobalsAllowed(true);
    }

    public WriteOptions withUnsafeGlobalsAllowed(boolean allowed) {
        return new WriteOptions(archiveName, fsync, allowed, maxShardSize);
    }

    /** Shards of a Hugging Face sharded checkpoint of at most {@code bytes} (unless one tensor is larger). */
    public WriteOptions withMaxShardSize(long bytes) {
        return new WriteOptions(archiveName, fsync, unsafeGlobalsAllowed, bytes);
    }
}
