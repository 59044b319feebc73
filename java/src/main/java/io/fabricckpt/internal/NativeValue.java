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
 * Handle on one node of a checkpoint tree held in C++ ({@code fabricckpt::jni::NativeValue}).
 * Each instance owns a reference to the node; JavaCPP frees it when the instance is deallocated.
 * Internal: {@link ValueConverter} turns these into plain Java values and back.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
@Name("NativeValue")
public final class NativeValue extends Pointer {
    static {
        FabricNative.load();
    }

    /** Node kinds, as fabricckpt::Kind. */
    public static final int NONE = 0, BOOL = 1, INT = 2, BIG_INT = 3, FLOAT = 4, STRING = 5, BYTES = 6,
            TUPLE = 7, LIST = 8, DICT = 9, SET = 10, FROZEN_SET = 11, GLOBAL = 12, OBJECT = 13, TENSOR = 14,
            STORAGE = 15;

    public NativeValue(Pointer p) {
        super(p);
    }

    public native int kind();
    public native long identity();
    @Cast("bool") public native boolean boolValue();
    public native long longValue();
    public native double doubleValue();
    public native @StdString BytePointer bytesValue();
    public native int size();
    public native @ByVal NativeValue item(int index);
    public native @ByVal NativeValue key(int index);
    public native @ByVal NativeValue value(int index);
    @Cast("bool") public native boolean ordered();
    public native @ByVal NativeValue dictState();
    public native @StdString BytePointer globalModule();
    public native @StdString BytePointer globalName();
    public native int construct();
    public native @ByVal NativeValue callable();
    public native @ByVal NativeValue args();
    public native @ByVal NativeValue kwargs();
    public native @ByVal NativeValue objectState();
    @Cast("bool") public native boolean hasObjectState();
    public native int listItemCount();
    public native @ByVal NativeValue listItem(int index);
    public native int dictItemCount();
    public native @ByVal NativeValue dictItemKey(int index);
    public native @ByVal NativeValue dictItemValue(int index);
    public native Pointer tensor();
    @Cast("bool") public native boolean requiresGrad();
    @Cast("bool") public native boolean isParameter();
    public native @StdString BytePointer location();

    public static native @ByVal NativeValue newNone();
    public static native @ByVal NativeValue newBool(@Cast("bool") boolean v);
    public static native @ByVal NativeValue newLong(long v);
    public static native @ByVal NativeValue newBigInt(@Cast("const signed char*") byte[] twosComplementLe, long length);
    public static native @ByVal NativeValue newDouble(double v);
    public static native @ByVal NativeValue newString(@Cast("const signed char*") byte[] utf8, long length);
    public static native @ByVal NativeValue newInternedString(@Cast("const signed char*") byte[] utf8, long length);
    public static native @ByVal NativeValue newBytes(@Cast("const signed char*") byte[] data, long length);
    public static native @ByVal NativeValue newTuple();
    public static native @ByVal NativeValue newList();
    public static native @ByVal NativeValue newSet(@Cast("bool") boolean frozen);
    public static native @ByVal NativeValue newDict(@Cast("bool") boolean ordered);
    public static native @ByVal NativeValue newGlobal(@Cast("const signed char*") byte[] module, long moduleLength,
            @Cast("const signed char*") byte[] name, long nameLength);
    public static native @ByVal NativeValue newObject(int construct, @Const @ByRef NativeValue callable,
            @Const @ByRef NativeValue args);
    public static native @ByVal NativeValue newTensor(Pointer tensor, @Cast("bool") boolean requiresGrad,
            @Cast("bool") boolean isParameter, @Cast("const signed char*") byte[] location, long locationLength);
    public native void append(@Const @ByRef NativeValue item);
    public native void put(@Const @ByRef NativeValue key, @Const @ByRef NativeValue value);
    public native void setDictState(@Const @ByRef NativeValue state);
    public native void setKwargs(@Const @ByRef NativeValue kwargs);
    public native void setObjectState(@Const @ByRef NativeValue state);
    public native void addListItem(@Const @ByRef NativeValue item);
    public native void addDictItem(@Const @ByRef NativeValue key, @Const @ByRef NativeValue value);
    @Cast("bool") public native boolean contains(@Cast("const signed char*") byte[] key, long length);
    public native @ByVal NativeValue get(@Cast("const signed char*") byte[] key, long length);
    @Cast("bool") public native boolean erase(@Cast("const signed char*") byte[] key, long length);

    // Conveniences over the UTF-8 entry points.
    public boolean containsKey(String key) {
        byte[] k = key.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        return contains(k, k.length);
    }

    public NativeValue getKey(String key) {
        byte[] k = key.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        return get(k, k.length);
    }

    public boolean removeKey(String key) {
        byte[] k = key.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        return erase(k, k.length);
    }

    public static NativeValue newString(String s) {
        byte[] utf8 = s.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        return newString(utf8, utf8.length);
    }

    /**
     * A key as CPython holds a string literal: identifier-like texts are one shared (interned)
     * object, which pickle writes once and refers back to. Byte-identical output depends on it.
     */
    public static NativeValue newKey(String s) {
        if (!s.isEmpty() && s.chars().allMatch(c -> c < 128 && (Character.isLetterOrDigit(c) || c == '_'))) {
            byte[] utf8 = s.getBytes(java.nio.charset.StandardCharsets.UTF_8);
            return newInternedString(utf8, utf8.length);
        }
        return newString(s);
    }
}
