package io.fabricckpt.cli;

import io.fabricckpt.core.Parameter;
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
import org.bytedeco.pytorch.Tensor;

/** {@code inspect}: the tree of a checkpoint with dtypes, shapes and sizes, as text or JSON. */
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
                && c.stream().anyMatch(x -> x instanceof Map<?, ?> || x instanceof Collection<?> || x instanceof Tensor);
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

    static long[] shape(Tensor t) {
        long[] shape = new long[(int) t.dim()];
        for (int i = 0; i < shape.length; i++) {
            shape[i] = t.size(i);
        }
        return shape;
    }

    static String dtype(Tensor t) {
        return t.scalar_type().intern().name();
    }

    private static String describe(Object v, long[] totals) {
        if (v instanceof Tensor t) {
            totals[0]++;
            totals[1] += t.nbytes();
            return "tensor " + dtype(t) + " " + java.util.Arrays.toString(shape(t)) + " (" + t.nbytes() + " bytes)";
        }
        if (v instanceof Parameter p) {
            return "parameter " + describe(p.data(), totals);
        }
        return describe(v);
    }

    static String describe(Object v) {
        if (v instanceof Tensor t) {
            return "tensor " + dtype(t) + " " + java.util.Arrays.toString(shape(t));
        }
        if (v instanceof String s) {
            return "'" + s + "'";
        }
        if (v instanceof byte[] b) {
            return "bytes[" + b.length + "]";
        }
        return String.valueOf(v);
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
        } else if (v instanceof Tensor t) {
            out.append("{\"type\":\"tensor\",\"dtype\":\"").append(dtype(t)).append("\",\"shape\":")
                    .append(java.util.Arrays.toString(shape(t)).replace(" ", "")).append(",\"bytes\":")
                    .append(t.nbytes()).append('}');
        } else if (v instanceof Parameter p) {
            out.append("{\"type\":\"parameter\",\"data\":");
            json(p.data(), out);
            out.append('}');
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
