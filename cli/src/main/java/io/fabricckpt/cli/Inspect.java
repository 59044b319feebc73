package io.fabricckpt.cli;

import io.fabricckpt.cli.format.TensorInfo;
import io.fabricckpt.core.PyFrozenSet;
import io.fabricckpt.core.PyGlobal;
import io.fabricckpt.core.PyObject;
import io.fabricckpt.core.PyOrderedDict;
import io.fabricckpt.core.PyTuple;
import java.io.PrintStream;
import java.math.BigInteger;
import java.util.Collection;
import java.util.Map;
import java.util.Set;

/**
 * {@code inspect}: the tree of a checkpoint with dtypes, shapes and sizes, as text or JSON. Tensors are
 * {@link TensorInfo}s ({@link Checkpoints#read}): nothing here needs libtorch.
 */
final class Inspect {
    private Inspect() {}

    static void print(Object value, PrintStream out) {
        long[] totals = new long[2];
        print(value, "", out, totals);
        out.println(totals[0] + " tensors, " + totals[1] + " bytes");
    }

    private static void print(Object value, String indent, PrintStream out, long[] totals) {
        if (value instanceof Map<?, ?> map) {
            for (Map.Entry<?, ?> e : map.entrySet()) {
                Object v = e.getValue();
                String key = e.getKey() instanceof String s ? s : String.valueOf(e.getKey());
                if (isContainer(v)) {
                    out.println(indent + key + ": " + typeName(v));
                    print(v, indent + "  ", out, totals);
                } else {
                    out.println(indent + key + ": " + describe(v, totals));
                }
            }
        } else if (value instanceof Collection<?> items) {
            int i = 0;
            for (Object item : items) {
                if (isContainer(item)) {
                    out.println(indent + "[" + i++ + "]: " + typeName(item));
                    print(item, indent + "  ", out, totals);
                } else {
                    out.println(indent + "[" + i++ + "]: " + describe(item, totals));
                }
            }
        } else {
            out.println(indent + describe(value, totals));
        }
    }

    private static boolean isContainer(Object v) {
        return v instanceof Map<?, ?> m && !m.isEmpty() || v instanceof Collection<?> c && !c.isEmpty()
                && c.stream().anyMatch(x -> x instanceof Map<?, ?> || x instanceof Collection<?> || x instanceof TensorInfo);
    }

    private static String typeName(Object v) {
        if (v instanceof PyOrderedDict) {
            return "OrderedDict";
        }
        if (v instanceof Map<?, ?>) {
            return "dict";
        }
        if (v instanceof PyTuple) {
            return "tuple";
        }
        if (v instanceof Set<?>) {
            return "set";
        }
        return "list";
    }

    private static String describe(Object v, long[] totals) {
        if (v instanceof TensorInfo t) {
            totals[0]++;
            totals[1] += t.nbytes();
            return (t.parameter() ? "parameter " : "") + tensorText(t) + " (" + t.nbytes() + " bytes)";
        }
        return describe(v);
    }

    static String describe(Object v) {
        if (v instanceof TensorInfo t) {
            return (t.parameter() ? "parameter " : "") + tensorText(t);
        }
        if (v instanceof String s) {
            return "'" + s + "'";
        }
        if (v instanceof byte[] b) {
            return "bytes[" + b.length + "]";
        }
        return String.valueOf(v);
    }

    private static String tensorText(TensorInfo t) {
        return "tensor " + t.dtype() + " " + java.util.Arrays.toString(t.shape());
    }

    // ------------------------------------------------------------------------------------ JSON

    static String json(Object v) {
        StringBuilder out = new StringBuilder();
        json(v, out);
        return out.toString();
    }

    private static void json(Object v, StringBuilder out) {
        if (v == null) {
            out.append("null");
        } else if (v instanceof Boolean || v instanceof Long) {
            out.append(v);
        } else if (v instanceof BigInteger big) {
            out.append(big);
        } else if (v instanceof Double d) {
            out.append(d.isNaN() || d.isInfinite() ? "\"" + d + "\"" : d.toString());
        } else if (v instanceof String s) {
            string(s, out);
        } else if (v instanceof byte[] b) {
            out.append("{\"type\":\"bytes\",\"length\":").append(b.length).append('}');
        } else if (v instanceof TensorInfo t) {
            if (t.parameter()) {
                out.append("{\"type\":\"parameter\",\"data\":");
            }
            out.append("{\"type\":\"tensor\",\"dtype\":\"").append(t.dtype()).append("\",\"shape\":")
                    .append(java.util.Arrays.toString(t.shape()).replace(" ", "")).append(",\"bytes\":")
                    .append(t.nbytes()).append('}');
            if (t.parameter()) {
                out.append('}');
            }
        } else if (v instanceof PyGlobal g) {
            out.append("{\"type\":\"global\",\"name\":");
            string(g.toString(), out);
            out.append('}');
        } else if (v instanceof PyObject o) {
            out.append("{\"type\":\"object\",\"class\":");
            string(String.valueOf(o.callable()), out);
            out.append(",\"state\":");
            json(o.state(), out);
            out.append('}');
        } else if (v instanceof Map<?, ?> m) {
            out.append("{\"type\":\"").append(typeName(v)).append("\",\"items\":{");
            boolean first = true;
            for (Map.Entry<?, ?> e : m.entrySet()) {
                out.append(first ? "" : ",");
                string(String.valueOf(e.getKey()), out);
                out.append(':');
                json(e.getValue(), out);
                first = false;
            }
            out.append("}}");
        } else if (v instanceof Collection<?> c) {
            String type = v instanceof PyFrozenSet ? "frozenset" : typeName(v);
            out.append("{\"type\":\"").append(type).append("\",\"items\":[");
            boolean first = true;
            for (Object item : c) {
                out.append(first ? "" : ",");
                json(item, out);
                first = false;
            }
            out.append("]}");
        } else if (v instanceof PyFrozenSet fs) {
            json(fs.items(), out);
        } else {
            string(String.valueOf(v), out);
        }
    }

    private static void string(String s, StringBuilder out) {
        out.append('"');
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        out.append('"');
    }
}
