package io.fabricckpt;

import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeValue;
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

    /** Reads a torch.save file (zip or legacy format); tensors are CPU tensors. */
    public static Object read(Path path) {
        return ValueConverter.toJava(readNative(path));
    }

    /** Writes {@code value} as torch.save does, atomically: a failure leaves any existing file intact. */
    public static void write(Path path, Object value, WriteOptions options) {
        writeNative(path, ValueConverter.toNative(value), options);
    }

    public static void write(Path path, Object value) {
        write(path, value, WriteOptions.DEFAULT);
    }

    /** Reads a file and writes it back unchanged in the current format (same archive folder). */
    public static void convert(Path source, Path target) {
        NativeValue root = readNative(source);
        String archive;
        try {
            archive = NativeCalls.string(FabricNative.torchFileArchiveName(NativeCalls.path(source)));
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
        writeNative(target, root, WriteOptions.DEFAULT.withArchiveName(archive.isEmpty() ? "archive" : archive));
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
