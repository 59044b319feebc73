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
 * One rank's membership of a c10d process group ({@code fabricckpt::jni::NativeProcessGroup}): a
 * TCPStore rendezvous served by rank 0 and a Gloo group over it. Internal: see
 * {@code io.fabricckpt.dist.ProcessGroup}. Strings cross as UTF-8 bytes.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeProcessGroup")
public final class NativeProcessGroup extends Pointer {
    static {
        FabricNative.load();
    }

    /** Blocks until every rank has joined; throws after {@code timeoutMillis}. */
    public NativeProcessGroup(byte[] hostUtf8, long hostLength, int port, int rank, int worldSize, long timeoutMillis) {
        allocate(hostUtf8, hostLength, port, rank, worldSize, timeoutMillis);
    }

    private native void allocate(@Cast("const signed char*") byte[] hostUtf8, long hostLength, int port, int rank,
            int worldSize, long timeoutMillis);

    /**
     * A background group of {@code parent}'s ranks over its store, keys under the prefix: its
     * collectives never interleave with the parent's. Collective: every rank, same prefix.
     */
    public NativeProcessGroup(NativeProcessGroup parent, byte[] prefixUtf8, long prefixLength) {
        allocate(parent, prefixUtf8, prefixLength);
    }

    private native void allocate(@Const @ByRef NativeProcessGroup parent, @Cast("const signed char*") byte[] prefixUtf8,
            long prefixLength);

    public native int rank();

    public native int worldSize();

    public native long timeoutMillis();

    public native void barrier();

    @Cast("bool") public native boolean allAgree(@Cast("bool") boolean ok);

    public native long allReduceSum(long value);

    /** Rank {@code src}'s bytes on every rank; JavaCPP returns null for an empty string. */
    public native @StdString BytePointer broadcastBytes(@Cast("const signed char*") byte[] data, long length, int src);

    /**
     * Every rank's bytes on rank {@code dst}, in rank order, each as its 8-byte little-endian length then
     * the bytes (null elsewhere, as JavaCPP maps an empty string).
     */
    public native @StdString BytePointer gatherBytes(@Cast("const signed char*") byte[] data, long length, int dst);

    public native void close();
}
