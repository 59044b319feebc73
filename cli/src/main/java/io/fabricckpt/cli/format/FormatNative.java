package io.fabricckpt.cli.format;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FunctionPointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.ByRef;
import org.bytedeco.javacpp.annotation.ByVal;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Const;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.StdString;

/**
 * The torch-free native entry points of the command line (cpp/src/jni/format_native.h). A
 * {@code @Platform} of its own, so JavaCPP builds a JNI library of its own
 * ({@value #LIBRARY}) linked against libfabricckptformat.so only: loading it never loads libtorch,
 * so inspect, verify, diff, convert and clean start at once. Paths cross as UTF-8 bytes.
 */
@Platform(include = "format_native.h", link = "fabricckptformat", compiler = "cpp17", library = FormatNative.LIBRARY)
@Namespace("fabricckpt::formatjni")
public final class FormatNative {
    /** The JNI library JavaCPP builds from this class and {@link OutlineNode}. */
    static final String LIBRARY = "jnifabricckptformat";

    /** The namespace of the staging functions both JNI libraries hold (cpp/src/jni/staging_native.h). */
    static final String STAGING = "::fabricckpt::stagingjni";

    static {
        Loader.load();
    }

    private FormatNative() {}

    public static native @ByVal OutlineNode readOutline(@StdString BytePointer path);

    public static native @StdString BytePointer verifyFile(@StdString BytePointer path);

    /** The shard files the Hugging Face index at {@code path} names, one a line. */
    @Namespace(STAGING)
    public static native @StdString BytePointer safetensorsIndexFiles(@StdString BytePointer path);

    /** Whether {@code name} is a file a Hugging Face sharded save under {@code stem} writes (FabricNative's). */
    @Namespace(STAGING)
    @Cast("bool") public static native boolean isSafetensorsFileOf(@StdString BytePointer name,
            @StdString BytePointer stem);

    public static native @ByVal OutlineNode readShardedOutline(@StdString BytePointer dir);

    /** The ranges ("offset\tlength" lines) an outline of the sparse file at {@code path} still needs beyond {@code fetched}. */
    @Namespace(STAGING)
    public static native @StdString BytePointer outlineRangesMissing(@StdString BytePointer path,
            @StdString BytePointer fetched);

    /**
     * The ranges ("file name\toffset\tlength" lines) an outline of the sharded directory {@code dir},
     * staged sparse, still needs beyond {@code fetched} (lines of the same form); {@code everyItem}: what
     * its verify needs too (every tensor chunk's stream, beyond the bytes verify checks).
     */
    @Namespace(STAGING)
    public static native @StdString BytePointer shardedOutlineRangesMissing(@StdString BytePointer dir,
            @StdString BytePointer fetched, @Cast("bool") boolean everyItem);

    public static native @StdString BytePointer verifyShardedDirectory(@StdString BytePointer dir);

    public static native @StdString BytePointer unsafeGlobalsOfShardedDirectory(@StdString BytePointer dir);

    public static native @StdString BytePointer unsafeGlobalsOfFile(@StdString BytePointer path);

    public static native double maxAbsDifference(@Const @ByRef OutlineNode a, @Const @ByRef OutlineNode b);

    public static native void convertFile(@StdString BytePointer source, @StdString BytePointer target,
            @Cast("bool") boolean allowUnsafeGlobals);

    public static native void convertShardedDirectory(@StdString BytePointer dir, @StdString BytePointer target,
            @StdString BytePointer archiveName, @Cast("bool") boolean allowUnsafeGlobals);

    /**
     * Takes a convert's output in order ({@link #convertFileInto}); native code calls {@link #call} from
     * the converting thread.
     */
    public static class OutputWriter extends FunctionPointer {
        static {
            Loader.load();
        }

        protected OutputWriter() {
            allocate();
        }

        private native void allocate();

        /** Takes the next {@code size} bytes of output {@code stream} from {@code data}: 0, or nonzero. */
        public int call(@Cast("int64_t") long stream, @Cast("const void*") Pointer data, @Cast("int64_t") long size) {
            return 1;
        }
    }

    /** {@link #convertFile}'s bytes handed to {@code writer} as output {@code stream}; {@code target} names them in errors. */
    public static native void convertFileInto(@StdString BytePointer source, @StdString BytePointer target,
            @Cast("int64_t") long stream, OutputWriter writer, @Cast("bool") boolean allowUnsafeGlobals);

    /** {@link #convertShardedDirectory}'s bytes handed to {@code writer}, as {@link #convertFileInto}. */
    public static native void convertShardedDirectoryInto(@StdString BytePointer dir, @StdString BytePointer target,
            @StdString BytePointer archiveName, @Cast("int64_t") long stream, OutputWriter writer,
            @Cast("bool") boolean allowUnsafeGlobals);

    /** A file, or with {@code sharded} a sharded directory, written as safetensors at {@code target}. */
    public static native void convertToSafetensors(@StdString BytePointer source, @Cast("bool") boolean sharded,
            @StdString BytePointer target, @Cast("int64_t") long maxShardSize);

    /** {@link #convertToSafetensors}'s single file handed to {@code writer}, as {@link #convertFileInto}. */
    public static native void convertToSafetensorsInto(@StdString BytePointer source, @Cast("bool") boolean sharded,
            @StdString BytePointer target, @Cast("int64_t") long stream, OutputWriter writer);

    public static native @StdString BytePointer removeStaleTemporaries(@StdString BytePointer target);

    /**
     * Reads the holes of staged files ({@link #registerStagedFile}); native code calls {@link #call},
     * possibly from threads of its own.
     */
    public static class HoleReader extends FunctionPointer {
        static {
            Loader.load();
        }

        protected HoleReader() {
            allocate();
        }

        private native void allocate();

        /** Reads {@code [offset, offset + size)} of the object behind {@code path} into {@code dest}: 0, or nonzero. */
        public int call(@Cast("const char*") BytePointer path, @Cast("int64_t") long offset, @Cast("int64_t") long size,
                Pointer dest) {
            return 1;
        }
    }

    /**
     * The file at {@code path} holds its object's bytes only in the {@code held} ranges ("offset\tlength"
     * lines); until {@link #unregisterStagedFile}, the native readers read its other bytes through {@code reader}.
     */
    @Namespace(STAGING)
    public static native void registerStagedFile(@StdString BytePointer path, @StdString BytePointer held,
            HoleReader reader);

    @Namespace(STAGING)
    public static native void unregisterStagedFile(@StdString BytePointer path);
}
