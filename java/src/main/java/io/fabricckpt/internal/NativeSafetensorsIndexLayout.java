package io.fabricckpt.internal;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.ByRef;
import org.bytedeco.javacpp.annotation.Const;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.StdString;

/**
 * A Hugging Face sharded checkpoint ({@code *.safetensors.index.json}) planned for object storage
 * ({@code fabricckpt::jni::NativeSafetensorsIndexLayout}): each shard file filled by byte range straight
 * from the tensors' memory, then the index's bytes. The tree must stay open while this is used. Internal.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeSafetensorsIndexLayout")
public final class NativeSafetensorsIndexLayout extends Pointer {
    static {
        FabricNative.load();
    }

    /** Plans the shards of at most {@code maxShardSize} bytes; refuses what a local index save refuses. */
    public NativeSafetensorsIndexLayout(NativeValue root, BytePointer indexTarget, long maxShardSize) {
        allocate(root, indexTarget, maxShardSize);
    }

    private native void allocate(@Const @ByRef NativeValue root, @StdString BytePointer indexTarget, long maxShardSize);

    public native int shardCount();

    /** Shard {@code i}'s file name beside the index ({@code model-00001-of-00002.safetensors}). */
    public native @StdString BytePointer shardName(int i);

    public native long shardSize(int i);

    /** Copies {@code [offset, offset + length)} of shard {@code i} to {@code dest}. */
    public native void fill(int i, long offset, Pointer dest, long length);

    /** The index's bytes (JSON), written last. */
    public native @StdString BytePointer indexJson();
}
