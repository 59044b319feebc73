package io.fabricckpt.cli.format;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.StdString;

/**
 * A Hugging Face sharded checkpoint ({@code *.safetensors.index.json}) planned from a checkpoint without
 * libtorch ({@code fabricckpt::formatjni::IndexOutline}), for writers that send each shard in order: its
 * shard files and sizes, each shard's bytes written once, then the index's bytes. Keeps the source
 * open; JavaCPP frees it when the instance is deallocated or closed.
 */
@Platform(include = "format_native.h", link = "fabricckptformat", compiler = "cpp17", library = FormatNative.LIBRARY)
@Namespace("fabricckpt::formatjni")
@Name("IndexOutline")
final class IndexOutline extends Pointer {
    static {
        Loader.load(FormatNative.class);
    }

    IndexOutline(BytePointer source, boolean sharded, BytePointer indexTarget, long maxShardSize) {
        allocate(source, sharded, indexTarget, maxShardSize);
    }

    private native void allocate(@StdString BytePointer source, @Cast("bool") boolean sharded,
            @StdString BytePointer indexTarget, long maxShardSize);

    native int shardCount();

    /** Shard {@code i}'s file name beside the index ({@code model-00001-of-00002.safetensors}). */
    native @StdString BytePointer shardName(int i);

    native long shardSize(int i);

    /** Shard {@code i}'s bytes handed to {@code writer} as output {@code stream}, in order. */
    native void writeShardInto(int i, @StdString BytePointer target, @Cast("int64_t") long stream,
            FormatNative.OutputWriter writer);

    /** The index's bytes (JSON). */
    native @StdString BytePointer indexJson();
}
