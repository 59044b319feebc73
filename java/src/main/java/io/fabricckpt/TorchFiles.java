package io.fabricckpt;

import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ProgressPoller;
import io.fabricckpt.internal.ValueConverter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import org.bytedeco.javacpp.BytePointer;

/**
 * {@code torch.save} files as Java values: what {@code torch.load} and {@code torch.save} do in
 * Python, for any object tree (see {@link ValueConverter} for the type mapping).
 */
public final class TorchFiles {
    private TorchFiles() {}

    /**
     * Options of {@link #write}. A tree holding globals that {@code torch.load(weights_only=True)}
     * refuses (any class or function outside torch 2.10's allowlist, e.g. an {@code argparse.Namespace}
     * of hparams, or an {@code os.system} call read from a hostile file) is refused with a
     * {@link CheckpointException} naming each global and where it sits, before anything is written:
     * writing it would hand Python's {@code torch.load(weights_only=False)} a call to make. Opt in
     * with {@link #allowUnsafeGlobals()} only for data you trust.
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

    /** Options of {@link #read(Path, ReadOptions)}. */
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
         * {@link TorchFiles#unsafeGlobals}). Off (the default), such globals are read inertly.
         * Applies to torch.save files (zip and legacy).
         */
        public ReadOptions withWeightsOnly(boolean weightsOnly) {
            return new ReadOptions(mmap, verifyCrc, threads, weightsOnly);
        }


        /**
         * Memory-mapped, as {@code torch.load(mmap=True)}: tensors view a private copy-on-write
         * mapping of the file, so loading takes next to no time and memory, pages are read when
         * first touched, and writing to a tensor changes only this process's copy, never the file.
         * Storage CRCs are not checked (that would read every byte; {@link TorchFiles#verify} does);
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

    /**
     * Reads a torch.save file (zip or legacy format) into owned memory ({@link ReadOptions#DEFAULT});
     * tensors are CPU tensors.
     */
    public static Object read(Path path) {
        return read(path, ReadOptions.DEFAULT);
    }

    /** Reads a torch.save file mapped or eagerly (see {@link ReadOptions}). */
    public static Object read(Path path, ReadOptions options) {
        return read(path, options, null);
    }

    /**
     * Reads a torch.save file, reporting the bytes read to {@code listener} (may be null). A sharded
     * {@code torch.distributed.checkpoint} directory is read consolidated (every tensor whole, then
     * Lightning's {@code meta.pt} entries).
     */
    public static Object read(Path path, ReadOptions options, ProgressListener listener) {
        if (Fabric.isShardedCheckpoint(path)) {
            return ValueConverter.toJava(Fabric.consolidate(path));
        }
        return ValueConverter.toJava(readNative(path, options, listener));
    }

    /** Writes {@code value} as torch.save does, atomically: a failure leaves any existing file intact. */
    public static void write(Path path, Object value, WriteOptions options) {
        writeNative(path, ValueConverter.toNative(value), options);
    }

    public static void write(Path path, Object value) {
        write(path, value, WriteOptions.DEFAULT);
    }

    /** {@link #write(Path, Object, WriteOptions)}, reporting the bytes written to {@code listener} (may be null). */
    public static void write(Path path, Object value, WriteOptions options, ProgressListener listener) {
        writeNative(path, ValueConverter.toNative(value), options, listener);
    }

    /**
     * Checks a checkpoint end to end (every record's CRC-32, the pickle, storages, tensor views)
     * and returns a one-line summary. For a sharded directory: its metadata, every chunk and value
     * (each a torch.save stream, checked the same way) and that the chunks cover every tensor.
     *
     * @throws CheckpointException naming the file and what is wrong
     */
    public static String verify(Path path) {
        try {
            return NativeCalls.string(FabricNative.verifyTorchFile(NativeCalls.path(path)));
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
    }

    /**
     * The globals of a checkpoint that {@code torch.load(weights_only=True)} refuses, as
     * {@code torch.serialization.get_unsafe_globals_in_checkpoint} lists them ({@code "module.name"},
     * e.g. {@code argparse.Namespace}, {@code posix.system}), in order of first appearance; empty when
     * none. A torch.save file: its pickle (legacy files too, which torch's function refuses); a sharded
     * directory: its {@code meta.pt} and value items. Nothing is executed and no tensor data read.
     *
     * @throws CheckpointException naming the file and what is wrong
     */
    public static List<String> unsafeGlobals(Path path) {
        String lines;
        try {
            lines = NativeCalls.string(FabricNative.unsafeGlobals(NativeCalls.path(path)));
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
        return lines.isEmpty() ? List.of() : List.of(lines.split("\n"));
    }

    /**
     * Reads a checkpoint and writes it as one torch.save file: a file is written back unchanged in the
     * current format (same archive folder); a sharded {@code torch.distributed.checkpoint} directory
     * is consolidated as Lightning does (every tensor whole, then the entries of its {@code meta.pt}),
     * with the archive folder {@code torch.save} gives a file of the target's name. A checkpoint
     * holding globals outside torch's weights_only allowlist is refused (see {@link WriteOptions})
     * unless {@code allowUnsafeGlobals}.
     */
    public static void convert(Path source, Path target) {
        convert(source, target, false, null);
    }

    /** {@link #convert(Path, Path)}, reporting the bytes written to {@code listener} (may be null). */
    public static void convert(Path source, Path target, ProgressListener listener) {
        convert(source, target, false, listener);
    }

    /** {@link #convert(Path, Path)}; {@code allowUnsafeGlobals} writes globals outside the allowlist too. */
    public static void convert(Path source, Path target, boolean allowUnsafeGlobals, ProgressListener listener) {
        if (Fabric.isShardedCheckpoint(source)) {
            writeNative(target, Fabric.consolidate(source), WriteOptions.DEFAULT.withArchiveName(archiveNameFor(target))
                    .withUnsafeGlobalsAllowed(allowUnsafeGlobals), listener);
            return;
        }
        NativeValue root = readNative(source, ReadOptions.eager(), null); // CRCs checked before rewriting
        String archive;
        try {
            archive = NativeCalls.string(FabricNative.torchFileArchiveName(NativeCalls.path(source)));
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
        writeNative(target, root, WriteOptions.DEFAULT.withArchiveName(archive.isEmpty() ? "archive" : archive)
                .withUnsafeGlobalsAllowed(allowUnsafeGlobals), listener);
    }

    /**
     * Throws the {@link CheckpointException} a write of {@code root} to {@code target} would throw for
     * globals outside torch's weights_only allowlist (each with where it sits), if it holds any.
     */
    static void requireWeightsOnlySafe(Path target, NativeValue root) {
        String lines;
        try {
            lines = NativeCalls.string(FabricNative.unsafeGlobalsOfTree(root));
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
        if (lines.isEmpty()) {
            return;
        }
        StringBuilder message = new StringBuilder(target.toString()).append(": refusing to write globals that"
                + " torch.load(weights_only=True) refuses (Python's torch.load(weights_only=False) of the file would"
                + " call them):");
        for (String line : lines.split("\n")) {
            String[] parts = line.split("\t", 2);
            message.append(' ').append(parts[0]).append(" at ")
                    .append(parts.length < 2 || parts[1].isEmpty() ? "the root" : parts[1]).append(';');
        }
        message.setLength(message.length() - 1);
        message.append(". Allow them explicitly (WriteOptions.allowUnsafeGlobals()) only for trusted data.");
        throw new CheckpointException(message.toString());
    }

    /**
     * Removes what saves killed midway left beside {@code target} ({@code .NAME.tmp-*} files and
     * directories whose writer is gone) and puts back a sharded checkpoint that a replacement
     * interrupted between its two renames set aside. Every save does this for its own target;
     * this is the same on demand ({@code fabric-ckpt clean}).
     *
     * @return the paths removed or restored
     */
    public static java.util.List<Path> clean(Path target) {
        try {
            String removed = NativeCalls.string(FabricNative.removeStaleTemporaries(NativeCalls.path(target)));
            return removed.isEmpty() ? java.util.List.of()
                    : java.util.Arrays.stream(removed.split("\n")).map(Path::of).toList();
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
    }

    /** The archive folder torch.save writes into a file it is given by path: the name without its extension. */
    static String archiveNameFor(Path target) {
        String name = target.getFileName().toString();
        int dot = name.lastIndexOf('.');
        return dot > 0 ? name.substring(0, dot) : name;
    }

    static NativeValue readNative(Path path, ReadOptions options, ProgressListener listener) {
        BytePointer nativePath = NativeCalls.path(path);
        try {
            return ProgressPoller.run(listener, progress -> FabricNative.loadTorchFileOptions(nativePath,
                    options.verifyCrc(), options.mmap(), options.threads(), options.weightsOnly(), progress));
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
    }

    static void writeNative(Path path, NativeValue root, WriteOptions options, ProgressListener listener) {
        BytePointer nativePath = NativeCalls.path(path);
        BytePointer archive = new BytePointer(options.archiveName().getBytes(StandardCharsets.UTF_8));
        try {
            ProgressPoller.run(listener, progress -> {
                FabricNative.saveTorchFileOptions(nativePath, root, archive, options.fsync(), 0,
                        options.unsafeGlobalsAllowed(), progress);
                return null;
            });
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
    }

    static NativeValue readNative(Path path) {
        try {
            return FabricNative.loadTorchFile(NativeCalls.path(path), true);
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
    }

    static void writeNative(Path path, NativeValue root, WriteOptions options) {
        try {
            FabricNative.saveTorchFileOptions(NativeCalls.path(path), root,
                    new BytePointer(options.archiveName().getBytes(StandardCharsets.UTF_8)), options.fsync(), 0,
                    options.unsafeGlobalsAllowed(), null);
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
    }
}
