package io.fabricckpt.cli.format;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;

/**
 * Local files that hold an object's bytes only in some ranges (sparse files into which the structure of
 * an object in storage was fetched), whose other bytes, the holes, the native readers read through a
 * {@link HoleSource} (cpp/include/fabricckpt/staged_files.h). A failure of a hole read is rethrown by
 * the {@link Outlines} call that made it, as itself.
 */
public final class StagedFiles {
    private StagedFiles() {}

    /** Where a staged file's holes are read from. */
    public interface HoleSource {
        /** Fills {@code dest} (all its remaining bytes) with the bytes at {@code offset} of the object. */
        void read(long offset, ByteBuffer dest);
    }

    private static final Map<String, HoleSource> SOURCES = new ConcurrentHashMap<>();
    private static volatile Reader reader;

    /** Until {@link #unregister}, the readers read the bytes of {@code file} outside {@code held} ({offset, length}) from {@code source}. */
    public static void register(Path file, List<long[]> held, HoleSource source) {
        String path = file.toAbsolutePath().normalize().toString();
        StringBuilder lines = new StringBuilder();
        for (long[] r : held) {
            lines.append(r[0]).append('\t').append(r[1]).append('\n');
        }
        SOURCES.put(path, source);
        FormatNative.registerStagedFile(new BytePointer(path, StandardCharsets.UTF_8),
                new BytePointer(lines.toString(), StandardCharsets.UTF_8), reader());
    }

    public static void unregister(Path file) {
        String path = file.toAbsolutePath().normalize().toString();
        FormatNative.unregisterStagedFile(new BytePointer(path, StandardCharsets.UTF_8));
        SOURCES.remove(path);
    }

    // One callback for every file: JavaCPP binds a callback class to one live instance.
    private static Reader reader() {
        if (reader == null) {
            synchronized (StagedFiles.class) {
                if (reader == null) {
                    reader = new Reader();
                }
            }
        }
        return reader;
    }

    private static final class Reader extends FormatNative.HoleReader {
        @Override
        public int call(BytePointer path, long offset, long size, Pointer dest) {
            try {
                String name = path.getString(StandardCharsets.UTF_8);
                HoleSource source = SOURCES.get(name);
                if (source == null) {
                    throw new IllegalStateException(name + ": not a staged file");
                }
                source.read(offset, new BytePointer(dest).position(0).capacity(size).limit(size).asByteBuffer());
                return 0;
            } catch (RuntimeException | Error e) { // never into native code
                return CallbackFailure.record(e);
            }
        }
    }
}
