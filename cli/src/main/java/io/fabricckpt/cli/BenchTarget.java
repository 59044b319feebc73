package io.fabricckpt.cli;

import java.util.List;
import java.util.Locale;

/**
 * One target of the "Performance" issue checked against a bench run: a Java figure next to the
 * reference it is measured against in the same run, the ratio (reference time / Java time, so >1
 * means Java is faster) or an absolute figure (ms/GB), and the bound it must meet. The targets are
 * built by {@link #ratio} / {@link #absolute} from rows; new kinds of rows (async saves, CLI
 * start-up) add their targets the same way.
 */
record BenchTarget(long size, String name, String java, String reference, double value, double best, String unit,
        double bound, boolean atLeast) {

    boolean met() {
        return atLeast ? value >= bound : value <= bound;
    }

    boolean metAtBest() {
        return atLeast ? best >= bound : best <= bound;
    }

    /** The bound as text: ">= 0.90x", "< 10.00 ms/GB". */
    String target() {
        return String.format(Locale.ROOT, "%s %.2f%s", atLeast ? ">=" : "<=", bound, unit);
    }

    /** Java at least (or at most) {@code bound} times as fast as {@code reference}; null if either is missing. */
    static BenchTarget ratio(String name, BenchRow java, BenchRow reference, double bound) {
        if (java == null || reference == null) {
            return null;
        }
        return new BenchTarget(java.size(), name, java.label(), reference.label(), reference.median() / java.median(),
                reference.best() / java.best(), "x", bound, true);
    }

    /** Milliseconds per GB of a Java row at most {@code bound}; null if the row is missing. */
    static BenchTarget msPerGb(String name, BenchRow java, double bound) {
        if (java == null) {
            return null;
        }
        double gb = java.size() / 1e9;
        return new BenchTarget(java.size(), name, java.label(), null, java.median() * 1000 / gb,
                java.best() * 1000 / gb, " ms/GB", bound, false);
    }

    /** An absolute figure of a Java row (peak memory, ...) at most {@code bound}; null if the row is missing. */
    static BenchTarget atMost(String name, BenchRow java, double value, String unit, double bound) {
        if (java == null) {
            return null;
        }
        return new BenchTarget(java.size(), name, java.label(), null, value, value, unit, bound, false);
    }

    /** The row of {@code size}, {@code op}, {@code cache} in {@code rows}, or null. */
    static BenchRow find(List<BenchRow> rows, long size, String op, String cache) {
        for (BenchRow r : rows) {
            if (r.size() == size && r.op().equals(op) && r.cache().equals(cache)) {
                return r;
            }
        }
        return null;
    }
}
