package io.fabricckpt.internal;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.annotation.ByVal;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Const;
import org.bytedeco.javacpp.annotation.ByRef;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.StdString;

/**
 * The native entry points of libfabricckpt (cpp/src/jni/fabric_native.h). JavaCPP generates the JNI
 * glue from these declarations. Paths cross as UTF-8 bytes.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY)
@Namespace("fabricckpt::jni")
public final class FabricNative {
    /** The JNI library JavaCPP builds from this class and {@link NativeValue}. */
    static final String LIBRARY = "jnifabricckpt";

    private static volatile boolean loaded;

    private FabricNative() {}

    /** Loads the preset's libtorch first (so ours binds to the same copy), then our library. */
    public static void load() {
        if (loaded) {
            return;
        }
        synchronized (FabricNative.class) {
            if (!loaded) {
                Loader.load(org.bytedeco.pytorch.global.torch.class);
                Loader.load(FabricNative.class);
                loaded = true;
            }
        }
    }

    static {
        load();
    }

    public static native @ByVal NativeValue loadTorchFile(@StdString BytePointer path, @Cast("bool") boolean verifyCrc);

    public static native @StdString BytePointer torchFileArchiveName(@StdString BytePointer path);

    public static native void saveTorchFile(@StdString BytePointer path, @Const @ByRef NativeValue root,
            @StdString BytePointer archiveName, @Cast("bool") boolean fsync);
}
