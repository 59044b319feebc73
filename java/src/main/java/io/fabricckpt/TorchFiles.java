package io.fabricckpt;

import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ProgressPoller;
import io.fabricckpt.internal.ValueConverter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import org.bytedeco.javacpp.BytePointer;

/**
 * {@code torch.save} files as Java values: what {@code torch.load} and {@code torch.save} do in
 * Python, for any object tree (see {@link ValueConverter} for the type mapping).
 */
public final class TorchFiles {
    private TorchFiles() {}

    /** Options of {@link #write}. */
    public record WriteOptions(String archiveName, boolean fsync) {
        /** What Lightning writes: archive folder {@code archive}, durable before it replaces the target. */
        public static final WriteOptions DEFAULT = new WriteOptions("archive", true);

        public WriteOptions {
            if (archiveName == null || archiveName.isEmpty() || archiveName.contains("/")) {
                throw new IllegalArgumentException("archive name must be a non-empty folder name");
            }
        }

        public WriteOptions withFsync(boolean fsync) {
            return new WriteOptions(archiveName, fsync);
        }

        public WriteOptions withArchiveName(String archiveName) {
            return new WriteOptions(archiveName, fsync);
        }
    }

    /** Options of {@link #read(Path, ReadOptions)}. */
    public record ReadOptions(boolean mmap, boolean verifyCrc, int threads) {
        /**
         * Owned memory, as {@code torch.load}: every storage is read (in parallel, one thread per core)
         * and its CRC-32 checked before the call returns. Nothing is mapped, so another program
         * truncating or rewriting the file meanwhile can only make the read fail with a
         * {@link CheckpointException} (a short file, a CRC-32 mismatch); it never crashes the JVM,
         * and tensors once loaded never change.
         */
        public static final ReadOptions DEFAULT = new ReadOptions(false, true, 0);

        public ReadOptions {
            if (threads < 0) {
                throw new IllegalArgumentException("threads must be 0 (one per core) or more");
            }
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
            return new ReadOptions(mmap, verifyCrc, threads);
        }

        /** Reader threads of an eager read (0: one per core). */
        public ReadOptions withThreads(int threads) {
            return new ReadOptions(mmap, verifyCrc, threads);
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
     * Reads a checkpoint and writes it as one torch.save file: a file is written back unchanged in the
     * current format (same archive folder); a sharded {@code torch.distributed.checkpoint} directory
     * is consolidated as Lightning does (every tensor whole, then the entries of its {@code meta.pt}),
     * with the archive folder {@code torch.save} gives a file of the target's name.
     */
    public static void convert(Path source, Path target) {
        convert(source, target, null);
    }

    /** {@link #convert(Path, Path)}, reporting the bytes written to {@code listener} (may be null). */
    public static void convert(Path source, Path target, ProgressListener listener) {
        if (Fabric.isShardedCheckpoint(source)) {
            writeNative(target, Fabric.consolidate(source), WriteOptions.DEFAULT.withArchiveName(archiveNameFor(target)),
                    listener);
            return;
        }
        NativeValue root = readNative(source, ReadOptions.eager(), null); // CRCs checked before rewriting
        String archive;
        try {
            archive = NativeCalls.string(FabricNative.torchFileArchiveName(NativeCalls.path(source)));
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
        writeNative(target, root, WriteOptions.DEFAULT.withArchiveName(archive.isEmpty() ? "archive" : archive),
                listener);
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
            return ProgressPoller.run(listener, progress -> FabricNative.loadTorchFileWith(nativePath,
                    options.verifyCrc(), options.mmap(), options.threads(), progress));
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
    }

    static void writeNative(Path path, NativeValue root, WriteOptions options, ProgressListener listener) {
        BytePointer nativePath = NativeCalls.path(path);
        BytePointer archive = new BytePointer(options.archiveName().getBytes(StandardCharsets.UTF_8));
        try {
            ProgressPoller.run(listener, progress -> {
                FabricNative.saveTorchFileWith(nativePath, root, archive, options.fsync(), 0, progress);
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
            FabricNative.saveTorchFile(NativeCalls.path(path), root,
                    new BytePointer(options.archiveName().getBytes(StandardCharsets.UTF_8)), options.fsync());
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
    }
}
