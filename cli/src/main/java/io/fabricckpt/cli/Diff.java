package io.fabricckpt.cli;

import io.fabricckpt.cli.format.Outlines;
import io.fabricckpt.cli.format.TensorInfo;
import java.io.PrintStream;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/**
 * {@code diff A B}: compares two checkpoints key by key: keys only in one of them, tensors whose
 * dtype or shape differ, the largest absolute difference of each tensor, and other values that differ.
 * Tensors are {@link TensorInfo}s, compared by {@link Checkpoints#maxAbsDifference} one at a time.
 */
final class Diff {
    private Diff() {}

    /** Prints the differences; returns whether the checkpoints are equal. */
    static boolean run(Object a, Object b, PrintStream out) {
        Map<String, Object> left = new LinkedHashMap<>();
        Map<String, Object> right = new LinkedHashMap<>();
        flatten("", a, left);
        flatten("", b, right);
        boolean same = true;
        for (Map.Entry<String, Object> e : left.entrySet()) {
            String key = e.getKey();
            if (!right.containsKey(key)) {
                out.println("- " + key + ": only in A");
                same = false;
                continue;
            }
            String difference = compare(e.getValue(), right.get(key));
            if (difference != null) {
                out.println("~ " + key + ": " + difference);
                same = false;
            }
        }
        for (String key : right.keySet()) {
            if (!left.containsKey(key)) {
                out.println("+ " + key + ": only in B");
                same = false;
            }
        }
        out.println(same ? "checkpoints are equal (" + left.size() + " entries)" : "checkpoints differ");
        return same;
    }

    private static void flatten(String prefix, Object v, Map<String, Object> out) {
        if (v instanceof Map<?, ?> map && !map.isEmpty()) {
            map.forEach((k, x) -> flatten(prefix.isEmpty() ? String.valueOf(k) : prefix + "." + k, x, out));
        } else if (v instanceof Collection<?> items && items.stream().anyMatch(x -> x instanceof TensorInfo || x instanceof Map<?, ?>)) {
            int i = 0;
            for (Object item : items) {
                flatten(prefix + "[" + i++ + "]", item, out);
            }
        } else {
            out.put(prefix, v);
        }
    }

    private static String compare(Object a, Object b) {
        if (a instanceof TensorInfo x && b instanceof TensorInfo y) {
            String dx = x.dtype(), dy = y.dtype();
            String sx = java.util.Arrays.toString(x.shape()), sy = java.util.Arrays.toString(y.shape());
            if (!dx.equals(dy) || !sx.equals(sy)) {
                return "tensor " + dx + " " + sx + " vs " + dy + " " + sy;
            }
            if (java.util.Arrays.stream(x.shape()).anyMatch(d -> d == 0)) {
                return null;
            }
            double max = Outlines.maxAbsDifference(x, y);
            return max == 0.0 ? null : "max abs difference " + max;
        }
        if (a instanceof byte[] x && b instanceof byte[] y) {
            return java.util.Arrays.equals(x, y) ? null : "bytes differ";
        }
        if (a instanceof Double x && b instanceof Double y && x.isNaN() && y.isNaN()) {
            return null;
        }
        return Objects.equals(a, b) ? null : Inspect.describe(a) + " vs " + Inspect.describe(b);
    }
}
