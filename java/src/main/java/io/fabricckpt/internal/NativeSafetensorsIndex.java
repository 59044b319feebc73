package io.fabricckpt.internal;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.ByRef;
import org.bytedeco.javacpp.annotation.ByVal;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.StdString;

/**
 * A downloaded Hugging Face index ({@code fabricckpt::jni::NativeSafetensorsIndex}): the shard files it
 * names, then each shard's downloaded bytes added in that order, then the tensors of them all, as a
 * local index loads. Internal.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeSafetensorsIndex")
public final class NativeSafetensorsIndex extends Pointer {
    static {
        FabricNative.load();
    }

    /** Parses the index's bytes; {@code name} (its URL) names it in errors. */
    public NativeSafetensorsIndex(byte[] json, BytePointer name) {
        allocate(json, json.length, name);
    }

    private native void allocate(@Cast("const signed char*") byte[] json, long length, @StdString BytePointer name);

    /** The shard file names, one a line, in the order {@link #addShard} takes them. */
    public native @StdString BytePointer files();

    /** The next shard's bytes (emptied: the loaded tensors view them). */
    public native void addShard(@ByRef NativeObjectBytes bytes);

    /** The tensors of every shard, in the index's order. */
    public native @ByVal NativeValue load();

    /** The index's string metadata, a dict of strings. */
    public native @ByVal NativeValue metadata();
}
