package io.fabricckpt.internal.io.s3;

import io.fabricckpt.internal.CallbackFailure;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;

/**
 * The native side of {@link StagedObject} (cpp/src/jni/staging_native.h), which both JNI libraries hold:
 * what an outline of a sparse, partly fetched file still reads, and the registration of staged files,
 * whose holes the native readers then read through {@link #readHole}. The library binds it over libtorch's
 * JNI library, the command line over its torch-free one (so its commands never load libtorch); each
 * binding supplies the raw calls and its own exception type.
 */
public abstract class StagingNatives {
    /** Where a staged file's holes are read from. */
    public interface HoleSource {
        /** Fills {@code dest} (all its remaining bytes) with the bytes at {@code offset} of the object. */
        void read(long offset, ByteBuffer dest);
    }

    /** Each registered file's source, by its absolute path (staged files are fresh temporary files: one binding each). */
    private static final Map<String, HoleSource> SOURCES = new ConcurrentHashMap<>();

    protected StagingNatives() {}

    /** outlineRangesMissing: "offset\tlength" lines in and out. */
    protected abstract String outlineRangesMissing(String path, String fetched);

    /** shardedOutlineRangesMissing: "name\toffset\tlength" lines in and out. */
    protected abstract String shardedOutlineRangesMissing(String dir, String fetched, boolean everyItem);

    /** safetensorsIndexFiles: one name a line. */
    protected abstract String safetensorsIndexFiles(String path);

    /** registerStagedFile with the binding's hole reader, whose calls go to {@link #readHole}. */
    protected abstract void registerStagedFile(String path, String held);

    protected abstract void unregisterStagedFile(String path);

    /** The binding's exception for a failure of a native call (its message naming a staged file) with {@code message} instead. */
    protected abstract RuntimeException withMessage(RuntimeException failure, String message);

    /** Whether {@code e} is the binding's exception for what a native call found wrong with a file. */
    protected abstract boolean isFormatError(RuntimeException e);

    /**
     * The byte ranges ({offset, length}) an outline of the checkpoint file at {@code sparse} (torch.save,
     * safetensors or legacy, by its first bytes) still reads beyond {@code fetched}, the only ranges of
     * it that hold the file's bytes; empty when none.
     */
    final List<long[]> rangesMissing(Path sparse, List<long[]> fetched) {
        List<long[]> out = new ArrayList<>();
        for (String line : lines(outlineRangesMissing(absolute(sparse), ranges(fetched)))) {
            String[] parts = line.split("\t");
            out.add(new long[] {Long.parseLong(parts[0]), Long.parseLong(parts[1])});
        }
        return out;
    }

    /**
     * The byte ranges ({offset, length} by file name) an outline of the sharded directory {@code dir}
     * still reads of its data files beyond {@code fetched}: {@code .metadata} and meta.pt are there
     * whole, each data file is sparse and holds its bytes only in the {@code fetched} ranges under its
     * name. Empty when none. {@code everyItem}: also what its verify reads (every tensor chunk's
     * torch.save directory, headers and small records).
     */
    final Map<String, List<long[]>> shardedRangesMissing(Path dir, Map<String, List<long[]>> fetched,
            boolean everyItem) {
        StringBuilder named = new StringBuilder();
        fetched.forEach((name, ranges) -> {
            for (long[] r : ranges) {
                named.append(name).append('\t').append(r[0]).append('\t').append(r[1]).append('\n');
            }
        });
        Map<String, List<long[]>> out = new TreeMap<>();
        for (String line : lines(shardedOutlineRangesMissing(absolute(dir), named.toString(), everyItem))) {
            String[] parts = line.split("\t");
            out.computeIfAbsent(parts[0], k -> new ArrayList<>())
                    .add(new long[] {Long.parseLong(parts[1]), Long.parseLong(parts[2])});
        }
        return out;
    }

    /** The shard files the Hugging Face index at {@code index} names (plain names beside it), in its order. */
    final List<String> indexFiles(Path index) {
        return lines(safetensorsIndexFiles(absolute(index)));
    }

    /** Until {@link #unregister}, the native readers read the bytes of {@code file} outside {@code held} from {@code source}. */
    final void register(Path file, List<long[]> held, HoleSource source) {
        String path = absolute(file);
        SOURCES.put(path, source);
        try {
            registerStagedFile(path, ranges(held));
        } catch (RuntimeException e) {
            SOURCES.remove(path);
            throw e;
        }
    }

    final void unregister(Path file) {
        String path = absolute(file);
        unregisterStagedFile(path);
        SOURCES.remove(path);
    }

    /**
     * What a binding's hole reader does when native code calls it: reads {@code [offset, offset + size)}
     * of the object behind the staged file {@code path} into {@code dest}; 0, or nonzero with the
     * failure kept for {@link CallbackFailure#run}. Never throws (it runs under native frames).
     */
    public static int readHole(BytePointer path, long offset, long size, Pointer dest) {
        try {
            String name = path.getString(StandardCharsets.UTF_8);
            HoleSource source = SOURCES.get(name);
            if (source == null) {
                throw new IllegalStateException(name + ": not a staged file");
            }
            source.read(offset, new BytePointer(dest).position(0).capacity(size).limit(size).asByteBuffer());
            return 0;
        } catch (RuntimeException | Error e) {
            return CallbackFailure.record(e);
        }
    }

    private static String absolute(Path path) {
        return path.toAbsolutePath().normalize().toString();
    }

    private static String ranges(List<long[]> ranges) {
        StringBuilder lines = new StringBuilder();
        for (long[] r : ranges) {
            lines.append(r[0]).append('\t').append(r[1]).append('\n');
        }
        return lines.toString();
    }

    private static List<String> lines(String text) {
        return text.lines().filter(line -> !line.isEmpty()).toList();
    }
}
