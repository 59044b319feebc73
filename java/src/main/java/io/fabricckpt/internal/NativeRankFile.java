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
 * One rank's {@code __<rank>_0.distcp} of a sharded save planned before any byte is produced
 * ({@code fabricckpt::jni::NativeRankFile}): a multipart upload fills each part from it, straight from
 * the tensors' memory; {@link #report()} is what the rank tells rank 0 of it. The state must stay
 * open while this is used. Internal.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeRankFile")
public final class NativeRankFile extends Pointer {
    static {
        FabricNative.load();
    }

    /**
     * Plans the file ({@code safetensors}: DCP's SAFETENSORS serialization); {@code target} names it in
     * errors (rank 0 refuses unsafe globals unless allowed).
     */
    public NativeRankFile(NativeValue state, NativeShardPlan plan, int rank, boolean safetensors,
            boolean allowUnsafeGlobals, BytePointer target) {
        allocate(state, plan, rank, safetensors, allowUnsafeGlobals, target);
    }

    private native void allocate(@Const @ByRef NativeValue state, @Const @ByRef NativeShardPlan plan, int rank,
            @Cast("bool") boolean safetensors, @Cast("bool") boolean allowUnsafeGlobals, @StdString BytePointer target);

    /** Bytes of the whole file. */
    public native long size();

    /** Copies {@code [offset, offset + length)} of the file to {@code dest} (native memory of at least {@code length} bytes). */
    public native void fill(long offset, Pointer dest, long length);

    /** What rank 0 builds {@code .metadata} from ({@link NativeShardedMetadata#addReport}). */
    public native @StdString BytePointer report();
}
