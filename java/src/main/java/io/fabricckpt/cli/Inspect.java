package io.fabricckpt.cli;

import io.fabricckpt.Parameter;
import java.io.PrintStream;
import java.util.Collection;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;

/** Prints a checkpoint tree: keys, and dtype/shape for tensors. */
final class Inspect {
    private Inspect() {}

    static void print(Object value, PrintStream out) {
        print(value, "", out);
    }

    private static void print(Object value, String indent, PrintStream out) {
        if (value instanceof Map<?, ?> map) {
            for (Map.Entry<?, ?> e : map.entrySet()) {
                Object v = e.getValue();
                if (v instanceof Map<?, ?> || (v instanceof Collection<?> c && containsContainers(c))) {
                    out.println(indent + e.getKey() + ":");
                    print(v, indent + "  ", out);
                } else {
                    out.println(indent + e.getKey() + ": " + describe(v));
                }
            }
        } else if (value instanceof Collection<?> items) {
            int i = 0;
            for (Object item : items) {
                out.println(indent + "[" + i++ + "] " + describe(item));
            }
        } else {
            out.println(indent + describe(value));
        }
    }

    private static boolean containsContainers(Collection<?> c) {
        return c.stream().anyMatch(v -> v instanceof Map<?, ?> || v instanceof Collection<?>);
    }

    static String describe(Object v) {
        if (v instanceof Tensor t) {
            long[] shape = new long[(int) t.dim()];
            for (int i = 0; i < shape.length; i++) {
                shape[i] = t.size(i);
            }
            return "tensor " + t.dtype().name().getString() + " " + java.util.Arrays.toString(shape);
        }
        if (v instanceof Parameter p) {
            return "parameter " + describe(p.data());
        }
        if (v instanceof String s) {
            return "'" + s + "'";
        }
        if (v instanceof byte[] b) {
            return "bytes[" + b.length + "]";
        }
        return String.valueOf(v);
    }
}
