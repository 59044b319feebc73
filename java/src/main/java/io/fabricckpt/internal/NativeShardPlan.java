package io.fabricckpt.internal;

import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * Which parameters of a state's models are this rank's shards ({@code fabricckpt::jni::NativeShardPlan}).
 * Internal: built by {@code io.fabricckpt.Fabric} from {@code ShardedModule}s. Strings cross as UTF-8.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeShardPlan")
public final class NativeShardPlan extends Pointer {
    static {
        FabricNative.load();
    }

    public NativeShardPlan() {
        allocate();
    }

    private native void allocate();

    private native void addParameter(@Cast("const signed char*") byte[] moduleKey, long moduleKeyLength,
            @Cast("const signed char*") byte[] name, long nameLength, @Cast("const long long*") long[] globalShape,
            @Cast("const long long*") long[] offsets, @Cast("const long long*") long[] shape, int ndim);

    private native void addOptimizer(@Cast("const signed char*") byte[] optimizerKey, long optimizerKeyLength,
            @Cast("const signed char*") byte[] moduleKey, long moduleKeyLength);

    public void addParameter(String moduleKey, String name, long[] globalShape, long[] offsets, long[] shape) {
        byte[] m = utf8(moduleKey);
        byte[] n = utf8(name);
        addParameter(m, m.length, n, n.length, globalShape, offsets, shape, globalShape.length);
    }

    public void addOptimizer(String optimizerKey, String moduleKey) {
        byte[] o = utf8(optimizerKey);
        byte[] m = utf8(moduleKey);
        addOptimizer(o, o.length, m, m.length);
    }

    static byte[] utf8(String s) {
        return s.getBytes(java.nio.charset.StandardCharsets.UTF_8);
    }
}
