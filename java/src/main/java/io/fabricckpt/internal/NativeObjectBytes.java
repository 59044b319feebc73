package io.fabricckpt.internal;

import java.nio.ByteBuffer;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * Native memory an object is downloaded into ({@code fabricckpt::jni::NativeObjectBytes}), then handed
 * to {@link FabricNative#loadTorchBytes}, whose tensors view it (no copy). Internal.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeObjectBytes")
public final class NativeObjectBytes extends Pointer {
    static {
        FabricNative.load();
    }

    public NativeObjectBytes(long size) {
        allocate(size);
    }

    private native void allocate(long size);

    private native @Cast("char*") BytePointer data();

    public native long size();

    /**
     * {@code [offset, offset + length)} of the memory as a buffer to write into; valid until the bytes
     * are handed to {@link FabricNative#loadTorchBytes} or this is closed.
     */
    public ByteBuffer window(long offset, int length) {
        if (offset < 0 || length < 0 || offset + length > size()) {
            throw new IndexOutOfBoundsException("window " + offset + "+" + length + " of " + size() + " bytes");
        }
        BytePointer memory = data();
        return memory.capacity(offset + length).limit(offset + length).position(offset).asByteBuffer();
    }
}
