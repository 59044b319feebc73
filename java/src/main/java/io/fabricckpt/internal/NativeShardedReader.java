package io.fabricckpt.internal;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.ByRef;
import org.bytedeco.javacpp.annotation.ByVal;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Const;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.StdString;

/**
 * A torch.distributed.checkpoint directory opened for reading ({@code fabricckpt::jni::NativeShardedReader}):
 * its {@code .metadata} is parsed and checked on construction; values are read on demand, each
 * sharded tensor cut to this rank's region. Internal.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeShardedReader")
public final class NativeShardedReader extends Pointer {
    static {
        FabricNative.load();
    }

    public NativeShardedReader(BytePointer dir) {
        allocate(dir);
    }

    private native void allocate(@StdString BytePointer dir);

    public native int topLevelKeyCount();

    public native @StdString BytePointer topLevelKey(int index);

    private native @ByVal NativeValue read(@Cast("const signed char*") byte[] key, long keyLength,
            @Const @ByRef NativeShardPlan plan);

    private native @ByVal NativeValue readInto(@Cast("const signed char*") byte[] key, long keyLength,
            @Const @ByRef NativeShardPlan plan, Pointer module);

    public native @ByVal NativeValue readAll();

    /**
     * {@link #read} for restoring {@code module}: chunks that are exactly the region of one of its
     * parameters or buffers are read straight into it (that tensor is then the value), the rest as
     * {@link #read}. A read that fails midway may leave the module partly overwritten (as DCP's
     * in-place load).
     */
    public NativeValue readInto(String key, NativeShardPlan plan, Pointer module) {
        byte[] k = NativeShardPlan.utf8(key);
        return readInto(k, k.length, plan, module);
    }

    /** The value saved under {@code key}, sharded tensors cut to {@code plan}'s regions; None if absent. */
    public NativeValue read(String key, NativeShardPlan plan) {
        byte[] k = NativeShardPlan.utf8(key);
        return read(k, k.length, plan);
    }
}
