package io.fabricckpt.internal;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.ByRef;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Const;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.StdString;

/**
 * A gathered ({@code Fsdp} FULL) save's torch.save file planned for a multipart upload
 * ({@code fabricckpt::jni::NativeFullFileLayout}): every rank constructs it (collective: the ranks'
 * shards are checked) and calls {@link #gather()} (collective: the shards go to rank 0); on rank 0
 * gather runs on a thread of its own while the upload's threads {@link #fill} the parts, which wait
 * for the whole tensors as they arrive. The state must stay open while this is used. Internal.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeFullFileLayout")
public final class NativeFullFileLayout extends Pointer {
    static {
        FabricNative.load();
    }

    /** {@code target} names the file in errors (rank 0 refuses unsafe globals unless allowed). */
    public NativeFullFileLayout(NativeValue state, NativeShardPlan plan, NativeProcessGroup group,
            BytePointer archiveName, boolean allowUnsafeGlobals, BytePointer target) {
        allocate(state, plan, group, archiveName, allowUnsafeGlobals, target);
    }

    private native void allocate(@Const @ByRef NativeValue state, @Const @ByRef NativeShardPlan plan,
            NativeProcessGroup group, @StdString BytePointer archiveName, @Cast("bool") boolean allowUnsafeGlobals,
            @StdString BytePointer target);

    /** Rank 0: whether the file was planned (if not, {@link #gather()} reports why to every rank). */
    @Cast("bool")
    public native boolean planned();

    /** Rank 0: bytes of the whole file. */
    public native long size();

    /** Rank 0: copies {@code [offset, offset + length)} of the file to {@code dest}, waiting for the tensors it needs. */
    public native void fill(long offset, Pointer dest, long length);

    /** Collective: the shards sent to rank 0, which hands each whole tensor to the layout; every rank learns the outcome. */
    public native void gather();

    /** Rank 0: the upload failed; fills fail and what arrives is dropped while {@link #gather()} goes on. */
    public native void abandon(@StdString BytePointer why);
}
