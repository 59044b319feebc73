package io.fabricckpt.internal;

import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * Progress of one long native load, save or snapshot ({@code fabricckpt::jni::NativeProgress}): the
 * call runs on one thread while another polls {@link #bytesDone()} of {@link #bytesTotal()}.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeProgress")
public final class NativeProgress extends Pointer {
    static {
        FabricNative.load();
    }

    public NativeProgress() {
        allocate();
    }

    public NativeProgress(Pointer p) {
        super(p);
    }

    private native void allocate();

    /** Bytes done so far. */
    public native long bytesDone();

    /** Bytes in all; 0 until known. */
    public native long bytesTotal();
}
