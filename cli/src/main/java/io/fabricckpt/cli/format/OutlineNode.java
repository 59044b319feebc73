package io.fabricckpt.cli.format;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.ByVal;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.StdString;

/**
 * Handle on one node of a torch.save file's outline ({@code fabricckpt::formatjni::OutlineNode}): the
 * tree read without libtorch, tensors described (dtype, shape, bytes) but not read. Each handle keeps
 * the file open; JavaCPP frees it when the instance is deallocated or closed.
 */
@Platform(include = "format_native.h", link = "fabricckptformat", compiler = "cpp17", library = FormatNative.LIBRARY)
@Namespace("fabricckpt::formatjni")
@Name("OutlineNode")
public final class OutlineNode extends Pointer {
    static {
        Loader.load(FormatNative.class);
    }

    /** Node kinds, as fabricckpt::Kind (TENSOR also for parameters). */
    static final int NONE = 0, BOOL = 1, INT = 2, BIG_INT = 3, FLOAT = 4, STRING = 5, BYTES = 6, TUPLE = 7, LIST = 8,
            DICT = 9, SET = 10, FROZEN_SET = 11, GLOBAL = 12, OBJECT = 13, TENSOR = 14;

    public OutlineNode(Pointer p) {
        super(p);
    }

    public native int kind();
    public native long identity();
    @Cast("bool") public native boolean boolValue();
    public native long longValue();
    public native double doubleValue();
    public native @StdString BytePointer bytesValue();
    public native int size();
    public native @ByVal OutlineNode item(int index);
    public native @ByVal OutlineNode key(int index);
    public native @ByVal OutlineNode value(int index);
    @Cast("bool") public native boolean ordered();
    public native @ByVal OutlineNode dictState();
    public native @StdString BytePointer globalModule();
    public native @StdString BytePointer globalName();
    public native int construct();
    public native @ByVal OutlineNode callable();
    public native @ByVal OutlineNode args();
    public native @ByVal OutlineNode kwargs();
    public native @ByVal OutlineNode objectState();
    @Cast("bool") public native boolean hasObjectState();
    public native int listItemCount();
    public native @ByVal OutlineNode listItem(int index);
    public native int dictItemCount();
    public native @ByVal OutlineNode dictItemKey(int index);
    public native @ByVal OutlineNode dictItemValue(int index);
    public native @StdString BytePointer dtype();
    public native int dim();
    public native long sizeAt(int d);
    public native long nbytes();
    @Cast("bool") public native boolean isParameter();
    @Cast("bool") public native boolean requiresGrad();
}
