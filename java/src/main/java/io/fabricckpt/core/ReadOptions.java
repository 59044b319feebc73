package io.fabricckpt.core;

/** Options of {@code TorchFiles.read}. */
public record ReadOptions(boolean mmap, boolean verifyCrc, int threads, boolean weightsOnly) {
    /**
     * Owned memory, as {@code torch.load}: every storage is read (in parallel, one thread per core)
     * and its CRC-32 checked before the call returns. Nothing is mapped, so another program
     * truncating or rewriting the file meanwhile can only make the read fail with a
     * {@link CheckpointException} (a short file, a CRC-32 mismatch); it never crashes the JVM,
     * and tensors once loaded never change.
     */
    public static final ReadOptions DEFAULT = new ReadOptions(false, true, 0, false);

    public ReadOptions {
        if (threads < 0) {
            throw new IllegalArgumentException("threads must be 0 (one per core) or more");
        }
    }

    /** Not weights_only: globals outside torch's allowlist are read inertly ({@link PyObject}, {@link PyGlobal}). */
    public ReadOptions(boolean mmap, boolean verifyCrc, int threads) {
        this(mmap, verifyCrc, threads, false);
    }

    /**
     * As {@code torch.load(weights_only=True)}: a file naming any global outside torch 2.10's
     * allowlist is refused with a {@link CheckpointException} listing them (see
     * {@link io.fabricckpt.TorchFiles#unsafeGlobals}). Off (the default), such globals are read inertly.
     * Applies to torch.save files (zip and legacy).
     */
    public ReadOptions withWeightsOnly(boolean weightsOnly) {
        return new ReadOptions(mmap, verifyCrc, threads, weightsOnly);
    }


    /**
     * Memory-mapped, as {@code torch.load(mmap=True)}: tensors view a private copy-on-write
     * mapping of the file, so loading takes next to no time and memory, pages are read when
     * first touched, and writing to a tensor changes only this process's copy, never the file.
     * Storage CRCs are not checked (that would read every byte; {@link io.fabricckpt.TorchFiles#verify} does);
     * the other records' are. The mapping lives as long as any tensor viewing it.
     *
     * <p><b>Hazard</b>, as with any mapping (and as in Python): a file replaced by rename
     * meanwhile (as every save here and Lightning's do) is safe, but one that another program
     * truncates in place makes the first touch of a lost page kill the JVM (SIGBUS), and one
     * rewritten in place changes tensors not yet touched. Map only files nobody rewrites.
     */
    public static ReadOptions mapped() {
        return new ReadOptions(true, true, 0);
    }

    /** {@link #DEFAULT}: owned memory, CRC-checked. */
    public static ReadOptions eager() {
        return DEFAULT;
    }

    public ReadOptions withVerifyCrc(boolean verifyCrc) {
        return new ReadOptions(mmap, verifyCrc, threads, weightsOnly);
    }

    /** Reader threads of an eager read (0: one per core). */
    public ReadOptions withThreads(int threads) {
        return new ReadOptions(mmap, verifyCrc, threads, weightsOnly);
    }
}
