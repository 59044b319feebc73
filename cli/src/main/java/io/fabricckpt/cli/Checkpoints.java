package io.fabricckpt.cli;

import io.fabricckpt.cli.format.TensorInfo;
import io.fabricckpt.core.Parameter;
import io.fabricckpt.core.PyOrderedDict;
import io.fabricckpt.core.PyTuple;
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

/**
 * What the commands share about checkpoints. Every local checkpoint (a torch.save file of the zip or
 * legacy format, a safetensors file or Hugging Face sharded one, a sharded directory) is read through
 * the torch-free format library ({@link io.fabricckpt.cli.format.Outlines}): libtorch is never loaded and no tensor data is read
 * until a command asks for it, then piece by piece. Objects in storage ({@link ObjectLocations}) go
 * through the library, which loads libtorch; their trees are described here the same way.
 */
final class Checkpoints {
    private Checkpoints() {}

    /** Whether {@code path} names a safetensors target, a file or a Hugging Face index (which the library writes). */
    static boolean isSafetensorsName(Path path) {
        if (path.getFileName() == null) {
            return false;
        }
        String name = path.getFileName().toString();
        return name.toLowerCase(java.util.Locale.ROOT).endsWith(".safetensors") || name.endsWith(".safetensors.index.json");
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
