package io.fabricckpt.internal;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.StdString;

/**
 * The {@code .metadata} of a sharded save built from every rank's {@link NativeRankFile#report()}
 * ({@code fabricckpt::jni::NativeShardedMetadata}), reports added in rank order. Internal.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeShardedMetadata")
public final class NativeShardedMetadata extends Pointer {
    static {
        FabricNative.load();
    }

    public NativeShardedMetadata() {
        allocate();
    }

    private native void allocate();

    public native void addReport(@Cast("const signed char*") byte[] report, long length);

    /** The file's bytes; {@code checkpointId} is recorded in it (the checkpoint's URL). */
    public native @StdString BytePointer bytes(@StdString BytePointer checkpointId);
}
