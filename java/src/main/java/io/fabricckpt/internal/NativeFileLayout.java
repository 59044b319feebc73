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
 * The bytes of a single-file checkpoint planned before any is produced ({@code fabricckpt::jni::NativeFileLayout}):
 * {@code torch.save(root)}, or the safetensors file a {@code .safetensors} save writes for it. A
 * multipart upload fills each part from it, straight from the tensors' memory. The tree must stay
 * open while this is used. Internal.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeFileLayout")
public final class NativeFileLayout extends Pointer {
    static {
        FabricNative.load();
    }

    /**
     * Plans the file: a safetensors file when {@code safetensors} (the archive name and unsafe globals
     * do not apply then), else torch.save's (unsafe globals refused unless allowed); {@code target}
     * names it in errors.
     */
    public NativeFileLayout(NativeValue root, boolean safetensors, BytePointer archiveName,
            boolean allowUnsafeGlobals, BytePointer target) {
        allocate(root, safetensors, archiveName, allowUnsafeGlobals, target);
    }

    private native void allocate(@Const @ByRef NativeValue root, @Cast("bool") boolean safetensors,
            @StdString BytePointer archiveName, @Cast("bool") boolean allowUnsafeGlobals, @StdString BytePointer target);

    /** Bytes of the whole file. */
    public native long size();

    /** Copies {@code [offset, offset + length)} of the file to {@code dest} (native memory of at least {@code length} bytes). */
    public native void fill(long offset, Pointer dest, long length);
}
