package io.fabricckpt.internal;

import java.nio.ByteBuffer;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.ByVal;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.StdString;

/**
 * Native memory an object is downloaded into ({@code fabricckpt::jni::NativeObjectBytes}), then handed
 * to {@link FabricNative#loadTorchBytes} or {@link FabricNative#loadSafetensorsBytes}, whose tensors
 * view it (no copy). Internal.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeObjectBytes")
public final class NativeObjectBytes extends Pointer {
    static {
        FabricNative.load();
    }

    /** {@code size} bytes for the object {@code name} (its URL, in errors). */
    public NativeObjectBytes(long size, BytePointer name) {
        allocate(size, name);
    }

    private native void allocate(long size, @StdString BytePointer name);

    private native @Cast("char*") BytePointer data();

    public native long size();

    /** Whether the bytes start as a safetensors file does (else they are a torch.save file). */
    @Cast("bool")
    public native boolean isSafetensors();

    /** The safetensors file's {@code __metadata__}, a dict of strings (empty when it has none). */
    public native @ByVal NativeValue safetensorsMetadata();

    /**
     * {@code [offset, offset + length)} of the memory as a buffer to write into; valid until the bytes
     * are handed to a load or this is closed.
     */
    public ByteBuffer window(long offset, int length) {
        if (offset < 0 || length < 0 || offset + length > size()) {
            throw new IndexOutOfBoundsException("window " + offset + "+" + length + " of " + size() + " bytes");
        }
        BytePointer memory = data();
        return memory.capacity(offset + length).limit(offset + length).position(offset).asByteBuffer();
    }
}
