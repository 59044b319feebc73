package io.fabricckpt.cli;

import java.util.Arrays;

/**
 * One measured operation of a bench run: the state size, the operation ("Java eager load",
 * "cat > /dev/null", ...), the cache state ("cached", "cold", or "-" for saves), the time of each
 * run and the extra peak resident memory (bytes, -1 when unknown). Rows from every source (Java,
 * dd/cat, Python, async saves) are of this type, so the report and the targets treat them alike.
 */
record BenchRow(long size, String op, String cache, double[] seconds, long extraRss) {
    double median() {
        double[] s = seconds.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }

    double best() {
        return Arrays.stream(seconds).min().orElse(Double.NaN);
    }

    double gbps() {
        return size / median() / 1e9;
    }

    /** The operation with its cache state where it has one: "Java eager load (cold)". */
    String label() {
        return cache.equals("-") ? op : op + " (" + cache + ")";
    }
}
