package io.fabricckpt.core;

/**
 * Options of {@code TorchFiles.write}. A tree holding globals that {@code torch.load(weights_only=True)}
 * refuses (any class or function outside torch 2.10's allowlist, e.g. an {@code argparse.Namespace}
 * of hparams, or an {@code os.system} call read from a hostile file) is refused with a
 * {@link CheckpointException} naming each global and where it sits, before anything is written:
 * writing it would hand Python's {@code torch.load(weights_only=False)} a call to make. Opt in
 * with {@link #allowUnsafeGlobals()} only for data you trust.
 * <p>Thread-safety: Immutable and thread-safe.
 */
public record WriteOptions(String archiveName, boolean fsync, boolean unsafeGlobalsAllowed) {
    /** What Lightning writes: archive folder {@code archive}, durable before it replaces the target. */
    public static final WriteOptions DEFAULT = new WriteOptions("archive", true, false);

    public WriteOptions {
        if (archiveName == null || archiveName.isEmpty() || archiveName.contains("/")) {
            throw new IllegalArgumentException("archive name must be a non-empty folder name");
        }
    }

    /** Unsafe globals refused (the default). */
    public WriteOptions(String archiveName, boolean fsync) {
        this(archiveName, fsync, false);
    }

    public WriteOptions withFsync(boolean fsync) {
        return new WriteOptions(archiveName, fsync, unsafeGlobalsAllowed);
    }

    public WriteOptions withArchiveName(String archiveName) {
        return new WriteOptions(archiveName, fsync, unsafeGlobalsAllowed);
    }

    /** Writes globals outside torch's weights_only allowlist too (trusted data only). */
    public WriteOptions allowUnsafeGlobals() {
        return withUnsafeGlobalsAllowed(true);
    }

    public WriteOptions withUnsafeGlobalsAllowed(boolean allowed) {
        return new WriteOptions(archiveName, fsync, allowed);
    }
}
