package io.fabricckpt.cli;

import io.fabricckpt.TorchFiles;
import io.fabricckpt.cli.format.Outlines;
import io.fabricckpt.cli.format.TensorInfo;
import io.fabricckpt.core.Parameter;
import io.fabricckpt.core.PyOrderedDict;
import io.fabricckpt.core.PyTuple;
import io.fabricckpt.core.ReadOptions;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * How the commands read checkpoints. A torch.save file of the zip format (what torch >= 1.6 and
 * Lightning write) and a sharded directory go through the torch-free format library
 * ({@link Outlines}): libtorch is never loaded and no tensor data is read until a command asks for
 * it. A legacy (pre-1.6) file and a safetensors file go through the library ({@link TorchFiles}), which
 * loads libtorch (safetensors mapped: no tensor byte is read until asked for), and so does diff of a
 * sharded directory (its tensors are assembled from chunks to be compared).
 */
final class Checkpoints {
    private Checkpoints() {}

    /**
     * Whether {@code path} is a legacy file (a pickle stream: its first byte is pickle's PROTO opcode),
     * which needs the library. A directory is a sharded checkpoint; anything else is read as a zip
     * file, which fails with a clear message when it is not one.
     */
    static boolean isLegacyFile(Path path) {
        if (Files.isDirectory(path)) {
            return false;
        }
        try (InputStream in = Files.newInputStream(path)) {
            return in.read() == PICKLE_PROTO;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + path + ": " + e.getMessage(), e);
        }
    }

    private static final int PICKLE_PROTO = 0x80;

    /**
     * Whether {@code path} is a safetensors file (an 8-byte little-endian header length that fits, then
     * '{'), or a Hugging Face sharded checkpoint: its {@code *.safetensors.index.json} or a directory
     * holding {@code model.safetensors.index.json}.
     */
    static boolean isSafetensorsFile(Path path) {
        if (Files.isDirectory(path)) {
            return Files.isRegularFile(path.resolve("model.safetensors.index.json"));
        }
        if (path.getFileName() != null && path.getFileName().toString().endsWith(".safetensors.index.json")) {
            return true;
        }
        try (InputStream in = Files.newInputStream(path)) {
            byte[] head = in.readNBytes(9);
            if (head.length < 9 || head[8] != '{') {
                return false;
            }
            long n = java.nio.ByteBuffer.wrap(head, 0, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
            return n >= 0 && n <= SAFETENSORS_MAX_HEADER && n <= Files.size(path) - 8;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + path + ": " + e.getMessage(), e);
        }
    }

    private static final long SAFETENSORS_MAX_HEADER = 100_000_000L; // the Rust crate's limit

    /** Whether {@code path} is a file the torch-free outlines cannot read: legacy or safetensors. */
    static boolean needsLibrary(Path path) {
        return isLegacyFile(path) || isSafetensorsFile(path);
    }

    /** Whether {@code path} names a safetensors target (which the library writes). */
    static boolean isSafetensorsName(Path path) {
        return path.getFileName() != null
                && path.getFileName().toString().toLowerCase(java.util.Locale.ROOT).endsWith(".safetensors");
    }

    /** The tree, tensors as {@link TensorInfo}s: an outline, or mapped by the library for a legacy file. */
    static Object read(Path path) {
        if (needsLibrary(path)) {
            return describeTensors(TorchFiles.read(path, ReadOptions.mapped()));
        }
        if (Files.isDirectory(path)) {
            return Outlines.readSharded(path);
        }
        return Outlines.read(path);
    }

    /**
     * Two checkpoints to compare, read the same way: as outlines when both are zip files (their tensors
     * compared piece by piece from the files), else both by the library into owned memory.
     */
    static Object[] readForComparison(Path a, Path b) {
        if (Files.isDirectory(a) || Files.isDirectory(b) || needsLibrary(a) || needsLibrary(b)) {
            return new Object[] {describeTensors(TorchFiles.read(a)), describeTensors(TorchFiles.read(b))};
        }
        return new Object[] {Outlines.read(a), Outlines.read(b)};
    }

    /** The largest absolute difference of two tensors of one dtype and shape read by {@link #readForComparison}. */
    static double maxAbsDifference(TensorInfo a, TensorInfo b) {
        if (a.source() instanceof Tensor x && b.source() instanceof Tensor y) {
            return x.to(torch.ScalarType.Double).sub(y.to(torch.ScalarType.Double)).abs().max().item_double();
        }
        return Outlines.maxAbsDifference(a, b);
    }

    static List<String> unsafeGlobals(Path path) {
        if (isSafetensorsFile(path)) {
            return List.of(); // no pickle, no globals
        }
        return isLegacyFile(path) ? TorchFiles.unsafeGlobals(path) : Outlines.unsafeGlobals(path);
    }

    /** The library's tree with each tensor (and parameter) replaced by its {@link TensorInfo}. */
    static Object describeTensors(Object root) {
        return new Describer().convert(root);
    }

    private static final class Describer {
        private final Map<Object, Object> seen = new IdentityHashMap<>();

        Object convert(Object v) {
            if (v instanceof Tensor t) {
                return info(t, false);
            }
            if (v instanceof Parameter p) {
                return info(p.data(), true);
            }
            if (!(v instanceof Map<?, ?> || v instanceof Collection<?>)) {
                return v;
            }
            Object known = seen.get(v);
            if (known != null) {
                return known;
            }
            Object out;
            if (v instanceof Map<?, ?> map) {
                Map<Object, Object> copy = v instanceof PyOrderedDict od ? orderedCopy(od) : new LinkedHashMap<>();
                map.forEach((k, x) -> copy.put(k, convert(x)));
                out = copy;
            } else if (v instanceof PyTuple tuple) {
                List<Object> items = new ArrayList<>();
                tuple.forEach(x -> items.add(convert(x)));
                out = PyTuple.copyOf(items);
            } else if (v instanceof Set<?> set) {
                Set<Object> copy = new LinkedHashSet<>();
                set.forEach(x -> copy.add(convert(x)));
                out = copy;
            } else {
                List<Object> items = new ArrayList<>();
                ((Collection<?>) v).forEach(x -> items.add(convert(x)));
                out = items;
            }
            seen.put(v, out);
            return out;
        }

        private static Map<Object, Object> orderedCopy(PyOrderedDict od) {
            PyOrderedDict copy = new PyOrderedDict();
            copy.setAttributes(od.attributes());
            return copy;
        }

        private static TensorInfo info(Tensor t, boolean parameter) {
            long[] shape = new long[(int) t.dim()];
            for (int i = 0; i < shape.length; i++) {
                shape[i] = t.size(i);
            }
            return new TensorInfo(t.scalar_type().intern().name(), shape, t.nbytes(), parameter, t);
        }
    }
}
