package io.fabricckpt.cli.format;

import io.fabricckpt.core.PyFrozenSet;
import io.fabricckpt.core.PyGlobal;
import io.fabricckpt.core.PyObject;
import io.fabricckpt.core.PyOrderedDict;
import io.fabricckpt.core.PyTuple;
import io.fabricckpt.internal.CallbackFailure;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.AbstractMap;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Supplier;
import org.bytedeco.javacpp.BytePointer;

/**
 * Checkpoints through the torch-free native library ({@link FormatNative}): torch.save files (zip and
 * legacy), safetensors files and Hugging Face sharded ones, and sharded torch.distributed.checkpoint
 * directories; the tree as the library's value types with {@link TensorInfo} for tensors, verify,
 * compare, convert, clean. Native failures come back as {@link FormatException} carrying the native
 * message (file, record, offset).
 */
public final class Outlines {
    private Outlines() {}

    /** A failure of the format library, its message naming the file and what is wrong. */
    public static final class FormatException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        public FormatException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /**
     * Whether {@code path} is a torch.distributed.checkpoint directory (any directory but a Hugging Face
     * sharded checkpoint's, which holds {@code model.safetensors.index.json}).
     */
    public static boolean isShardedDirectory(Path path) {
        return Files.isDirectory(path) && !Files.isRegularFile(path.resolve("model.safetensors.index.json"));
    }

    /**
     * The tree of a checkpoint (a sharded directory: {@link #readSharded}); tensors are
     * {@link TensorInfo}s whose source is their node. No tensor data is read.
     */
    public static Object read(Path path) {
        if (isShardedDirectory(path)) {
            return readSharded(path);
        }
        OutlineNode root = call(() -> FormatNative.readOutline(path(path)));
        try {
            return new ToJava().convert(root);
        } finally {
            root.close();
        }
    }

    /**
     * A sharded directory consolidated (every tensor whole, then meta.pt's entries), tensors as
     * {@link TensorInfo}s; no tensor data is read.
     */
    public static Object readSharded(Path dir) {
        OutlineNode root = call(() -> FormatNative.readShardedOutline(path(dir)));
        try {
            return new ToJava().convert(root);
        } finally {
            root.close();
        }
    }

    /** verify of a checkpoint file or sharded directory, record by record or item by item. */
    public static String verify(Path path) {
        if (isShardedDirectory(path)) {
            return call(() -> string(FormatNative.verifyShardedDirectory(path(path))));
        }
        return call(() -> string(FormatNative.verifyFile(path(path))));
    }

    /** The globals outside torch's weights_only allowlist of a checkpoint file or sharded directory. */
    public static List<String> unsafeGlobals(Path path) {
        String lines = call(() -> string(isShardedDirectory(path)
                ? FormatNative.unsafeGlobalsOfShardedDirectory(path(path)) : FormatNative.unsafeGlobalsOfFile(path(path))));
        return lines.isEmpty() ? List.of() : List.of(lines.split("\n"));
    }

    /** The largest absolute difference of two tensors read by {@link #read} (same dtype and shape). */
    public static double maxAbsDifference(TensorInfo a, TensorInfo b) {
        if (!(a.source() instanceof OutlineNode x) || !(b.source() instanceof OutlineNode y)) {
            throw new IllegalArgumentException("not tensors of outlines");
        }
        return call(() -> FormatNative.maxAbsDifference(x, y));
    }

    /** Where a streamed convert's bytes go, in order ({@link #convertInto}). */
    @FunctionalInterface
    public interface ByteSink {
        /** Takes all of {@code bytes} (native memory, valid only during the call). */
        void write(ByteBuffer bytes);
    }

    /** A checkpoint file written again as one torch.save file, one storage in memory at a time. */
    public static void convert(Path source, Path target, boolean allowUnsafeGlobals) {
        call(() -> {
            FormatNative.convertFile(path(source), path(target), allowUnsafeGlobals);
            return null;
        });
    }

    /**
     * {@link #convert}'s bytes into {@code out} instead of a file ({@code target} names them in errors).
     * They are whole only when this returns; on a failure, what {@code out} took is to be dropped.
     */
    public static void convertInto(Path source, String target, ByteSink out, boolean allowUnsafeGlobals) {
        long stream = ConvertOutputs.open(out);
        try {
            call(() -> {
                FormatNative.convertFileInto(path(source), utf8(target), stream, ConvertOutputs.writer(),
                        allowUnsafeGlobals);
                return null;
            });
        } finally {
            ConvertOutputs.close(stream);
        }
    }

    /**
     * A sharded directory consolidated into one torch.save file as the library's convert writes it
     * (archive folder: {@link #archiveNameFor} the target's name), one tensor in memory at a time.
     */
    public static void convertSharded(Path dir, Path target, boolean allowUnsafeGlobals) {
        String archive = archiveNameFor(target.getFileName().toString());
        call(() -> {
            FormatNative.convertShardedDirectory(path(dir), path(target), utf8(archive), allowUnsafeGlobals);
            return null;
        });
    }

    /** {@link #convertSharded}'s bytes into {@code out}, as {@link #convertInto}; {@code fileName}: the target's. */
    public static void convertShardedInto(Path dir, String target, String fileName, ByteSink out,
            boolean allowUnsafeGlobals) {
        long stream = ConvertOutputs.open(out);
        try {
            call(() -> {
                FormatNative.convertShardedDirectoryInto(path(dir), utf8(target), utf8(archiveNameFor(fileName)),
                        stream, ConvertOutputs.writer(), allowUnsafeGlobals);
                return null;
            });
        } finally {
            ConvertOutputs.close(stream);
        }
    }

    /**
     * A checkpoint file, or with {@code sharded} a sharded directory, written as safetensors at
     * {@code target} as the library's convert writes it (a Hugging Face sharded checkpoint at a
     * {@code *.safetensors.index.json} target, shards of at most {@code maxShardSize} bytes), one tensor
     * in memory at most: tensors are streamed from their records, views that are not contiguous and
     * tensors assembled from chunks gathered first.
     */
    public static void convertToSafetensors(Path source, boolean sharded, Path target, long maxShardSize) {
        call(() -> {
            FormatNative.convertToSafetensors(path(source), sharded, path(target), maxShardSize);
            return null;
        });
    }

    /** {@link #convertToSafetensors}'s single file into {@code out}, as {@link #convertInto}. */
    public static void convertToSafetensorsInto(Path source, boolean sharded, String target, ByteSink out) {
        long stream = ConvertOutputs.open(out);
        try {
            call(() -> {
                FormatNative.convertToSafetensorsInto(path(source), sharded, utf8(target), stream,
                        ConvertOutputs.writer());
                return null;
            });
        } finally {
            ConvertOutputs.close(stream);
        }
    }

    /**
     * What {@link #convertToSafetensors} writes at a {@code *.safetensors.index.json} target, planned for
     * writers that send each file in order (object storage): every check made, no byte produced yet.
     */
    public static IndexPlan planIndex(Path source, boolean sharded, String indexTarget, long maxShardSize) {
        return new IndexPlan(call(() -> new IndexOutline(path(source), sharded, utf8(indexTarget), maxShardSize)));
    }

    /** A Hugging Face sharded checkpoint planned from a checkpoint ({@link #planIndex}); keeps the source open. */
    public static final class IndexPlan implements AutoCloseable {
        private final IndexOutline index;

        private IndexPlan(IndexOutline index) {
            this.index = index;
        }

        /** The shard files beside the index ({@code model-00001-of-00002.safetensors}), in order. */
        public List<String> shardNames() {
            return call(() -> {
                List<String> names = new ArrayList<>();
                for (int i = 0; i < index.shardCount(); i++) {
                    names.add(string(index.shardName(i)));
                }
                return names;
            });
        }

        /** Shard {@code i}'s bytes into {@code out}, in order, as {@link #convertInto}; each shard once. */
        public void writeShard(int i, String target, ByteSink out) {
            long stream = ConvertOutputs.open(out);
            try {
                call(() -> {
                    index.writeShardInto(i, utf8(target), stream, ConvertOutputs.writer());
                    return null;
                });
            } finally {
                ConvertOutputs.close(stream);
            }
        }

        /** The index's bytes (JSON), which go last. */
        public byte[] indexJson() {
            return call(() -> bytes(index.indexJson()));
        }

        @Override
        public void close() {
            index.close();
        }
    }

    /** Whether {@code name} is a file a Hugging Face sharded save under {@code stem} writes (and replaces). */
    public static boolean isSafetensorsFileOf(String name, String stem) {
        return FormatNative.isSafetensorsFileOf(utf8(name), utf8(stem));
    }

    /** The archive folder torch.save names for a file: its name without the extension. */
    static String archiveNameFor(String fileName) {
        int dot = fileName.lastIndexOf('.');
        return dot > 0 ? fileName.substring(0, dot) : fileName;
    }

    /** The paths removed or restored beside {@code target} (what saves killed midway left). */
    public static List<Path> clean(Path target) {
        String removed = call(() -> string(FormatNative.removeStaleTemporaries(path(target))));
        return removed.isEmpty() ? List.of() : Arrays.stream(removed.split("\n")).map(Path::of).toList();
    }

    /**
     * JavaCPP rethrows C++ exceptions as RuntimeException carrying what(); one that a Java callback's
     * failure caused (a read of a staged file's hole, a write to a convert's output) is that failure.
     */
    public static <T> T call(Supplier<T> call) {
        return CallbackFailure.run(call, e -> new FormatException(e.getMessage(), e));
    }

    private static BytePointer path(Path path) {
        return utf8(path.toAbsolutePath().toString());
    }

    /**
     * {@code text} for a native {@code std::string} parameter. NUL-terminated: JavaCPP takes the length
     * of a pointer with no bytes from strlen, so an empty string must still end in a NUL.
     */
    private static BytePointer utf8(String text) {
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        BytePointer p = new BytePointer(bytes.length + 1L);
        p.put(bytes).put(bytes.length, (byte) 0);
        return p.limit(bytes.length);
    }

    private static byte[] bytes(BytePointer p) {
        if (p == null) { // JavaCPP maps an empty std::string to null
            return new byte[0];
        }
        try (p) {
            byte[] out = new byte[Math.toIntExact(p.limit())];
            p.get(out);
            return out;
        }
    }

    private static String string(BytePointer p) {
        return new String(bytes(p), StandardCharsets.UTF_8);
    }

    /** Nodes to Java values as the library's ValueConverter maps them; shared nodes become one object. */
    private static final class ToJava {
        private final Map<Long, Object> seen = new HashMap<>();

        /** Converts a child; tensors keep their handle (diff reads through it), the rest are freed at once. */
        private Object child(OutlineNode c) {
            Object out = convert(c);
            if (!(out instanceof TensorInfo t && t.source() == c)) {
                c.close();
            }
            return out;
        }

        Object convert(OutlineNode v) {
            int kind = v.kind();
            switch (kind) {
                case OutlineNode.NONE:
                    return null;
                case OutlineNode.BOOL:
                    return v.boolValue();
                case OutlineNode.INT:
                    return v.longValue();
                case OutlineNode.FLOAT:
                    return v.doubleValue();
                default:
                    break;
            }
            long id = v.identity();
            Object known = seen.get(id);
            if (known != null) {
                return known;
            }
            Object out = switch (kind) {
                case OutlineNode.BIG_INT -> bigInteger(bytes(v.bytesValue()));
                case OutlineNode.STRING -> string(v.bytesValue());
                case OutlineNode.BYTES -> bytes(v.bytesValue());
                case OutlineNode.TUPLE -> {
                    Object[] items = new Object[v.size()];
                    for (int i = 0; i < items.length; i++) {
                        items[i] = child(v.item(i));
                    }
                    yield PyTuple.of(items);
                }
                case OutlineNode.LIST -> {
                    List<Object> list = new ArrayList<>(v.size());
                    seen.put(id, list);
                    for (int i = 0, n = v.size(); i < n; i++) {
                        list.add(child(v.item(i)));
                    }
                    yield list;
                }
                case OutlineNode.SET, OutlineNode.FROZEN_SET -> {
                    Set<Object> set = new LinkedHashSet<>();
                    for (int i = 0, n = v.size(); i < n; i++) {
                        set.add(child(v.item(i)));
                    }
                    yield kind == OutlineNode.SET ? set : new PyFrozenSet(set);
                }
                case OutlineNode.DICT -> dict(v, id);
                case OutlineNode.GLOBAL -> new PyGlobal(string(v.globalModule()), string(v.globalName()));
                case OutlineNode.OBJECT -> object(v);
                case OutlineNode.TENSOR -> tensor(v);
                default -> throw new FormatException("unexpected node kind " + kind + " in checkpoint tree", null);
            };
            seen.put(id, out);
            return out;
        }

        private Map<Object, Object> dict(OutlineNode v, long id) {
            Map<Object, Object> map;
            if (v.ordered()) {
                PyOrderedDict od = new PyOrderedDict();
                map = od;
                seen.put(id, map);
                if (child(v.dictState()) instanceof Map<?, ?> attributes) {
                    @SuppressWarnings("unchecked")
                    Map<Object, Object> typed = (Map<Object, Object>) attributes;
                    od.setAttributes(typed);
                }
            } else {
                map = new LinkedHashMap<>();
                seen.put(id, map);
            }
            for (int i = 0, n = v.size(); i < n; i++) {
                map.put(child(v.key(i)), child(v.value(i)));
            }
            return map;
        }

        private PyObject object(OutlineNode v) {
            PyObject.Construction construction = PyObject.Construction.values()[v.construct()];
            Object callable = child(v.callable());
            Object args = child(v.args());
            @SuppressWarnings("unchecked")
            Map<Object, Object> kwargs = (Map<Object, Object>) child(v.kwargs()); // None -> null
            Object state = v.hasObjectState() ? child(v.objectState()) : null;
            List<Object> listItems = new ArrayList<>();
            for (int i = 0, n = v.listItemCount(); i < n; i++) {
                listItems.add(child(v.listItem(i)));
            }
            List<Map.Entry<Object, Object>> dictItems = new ArrayList<>();
            for (int i = 0, n = v.dictItemCount(); i < n; i++) {
                dictItems.add(new AbstractMap.SimpleImmutableEntry<>(child(v.dictItemKey(i)), child(v.dictItemValue(i))));
            }
            PyTuple argTuple = args instanceof PyTuple t ? t : PyTuple.of(args);
            return new PyObject(construction, callable, argTuple, kwargs, state, listItems, dictItems);
        }

        private TensorInfo tensor(OutlineNode v) {
            long[] shape = new long[v.dim()];
            for (int d = 0; d < shape.length; d++) {
                shape[d] = v.sizeAt(d);
            }
            return new TensorInfo(string(v.dtype()), shape, v.nbytes(), v.isParameter(), v);
        }
    }

    private static BigInteger bigInteger(byte[] littleEndian) {
        byte[] bigEndian = new byte[littleEndian.length];
        for (int i = 0; i < littleEndian.length; i++) {
            bigEndian[i] = littleEndian[littleEndian.length - 1 - i];
        }
        return bigEndian.length == 0 ? BigInteger.ZERO : new BigInteger(bigEndian);
    }
}
