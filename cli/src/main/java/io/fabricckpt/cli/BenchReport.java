package io.fabricckpt.cli;

import static io.fabricckpt.cli.BenchSystem.MIB;
import static io.fabricckpt.cli.BenchSystem.human;
import static io.fabricckpt.cli.BenchTarget.find;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.function.Function;

/**
 * The report of {@code fabric-ckpt bench}: which reference each Java row is measured against
 * (durable against durable), the targets as met/missed, the table and the JSON object.
 */
final class BenchReport {
    private BenchReport() {}

    /** The references of a row, Python's first, then dd/cat's; absent ones left out. */
    static List<BenchRow> references(List<BenchRow> rows, BenchRow r) {
        long s = r.size();
        String op = r.op();
        List<BenchRow> refs = new ArrayList<>();
        if (op.equals("Java save (fsync)")) {
            refs.add(find(rows, s, "fabric.save (fsync)", "-"));
            refs.add(find(rows, s, "torch.save (fsync)", "-"));
            refs.add(find(rows, s, "dd write (bs=4M, conv=fsync)", "-"));
        } else if (op.startsWith("Java") && op.contains("save")) {
            refs.add(find(rows, s, "fabric.save", "-"));
            refs.add(find(rows, s, "torch.save", "-"));
            refs.add(find(rows, s, "dd write (bs=4M)", "-"));
        } else if (op.equals("Java mmap load")) {
            refs.add(find(rows, s, "torch.load(mmap=True)", r.cache()));
            refs.add(find(rows, s, "cat > /dev/null", r.cache()));
        } else if (op.equals("Java eager load")) {
            refs.add(find(rows, s, "fabric.load", r.cache()));
            refs.add(find(rows, s, "torch.load", r.cache()));
            refs.add(find(rows, s, "cat > /dev/null", r.cache()));
        } else if (op.equals("CLI diff (two copies)")) {
            refs.add(find(rows, s, "cmp (two copies)", r.cache()));
        } else if (op.equals("CLI verify")) {
            refs.add(find(rows, s, "cat > /dev/null", r.cache()));
        }
        return refs.stream().filter(Objects::nonNull).toList();
    }

    /** The targets of the "Performance" issue (and the earlier save targets) for one size. */
    static List<BenchTarget> targets(List<BenchRow> rows, long size) {
        List<BenchTarget> t = new ArrayList<>();
        BenchRow save = find(rows, size, "Java save", "-");
        BenchRow saveSync = find(rows, size, "Java save (fsync)", "-");
        t.add(BenchTarget.ratio("save >= 2.5x fabric.save", save, find(rows, size, "fabric.save", "-"), 2.5));
        t.add(BenchTarget.ratio("save >= 0.9x dd", save, find(rows, size, "dd write (bs=4M)", "-"), 0.9));
        t.add(BenchTarget.ratio("save (fsync) >= 0.9x dd conv=fsync", saveSync,
                find(rows, size, "dd write (bs=4M, conv=fsync)", "-"), 0.9));
        t.add(BenchTarget.ratio("eager load >= 0.9x cat (cached)", find(rows, size, "Java eager load", "cached"),
                find(rows, size, "cat > /dev/null", "cached"), 0.9));
        t.add(BenchTarget.ratio("eager load >= 0.95x cat (cold)", find(rows, size, "Java eager load", "cold"),
                find(rows, size, "cat > /dev/null", "cold"), 0.95));
        t.add(BenchTarget.msPerGb("mmap load < 10 ms/GB (cached)", find(rows, size, "Java mmap load", "cached"), 10));
        t.add(BenchTarget.msPerGb("mmap load < 10 ms/GB (cold)", find(rows, size, "Java mmap load", "cold"), 10));
        // safetensors (issue 14): the same model's tensors against safetensors.torch in the same run.
        // load_file (0.8, mmap backend) maps the file and reads no tensor byte, so it is the
        // reference of the mapped load only; the eager load's row stands without a target.
        t.add(BenchTarget.ratio("safetensors save >= 2x save_file", find(rows, size, "Java safetensors save", "-"),
                find(rows, size, "safetensors save_file", "-"), 2));
        t.add(BenchTarget.ratio("safetensors save (fsync) >= 2x save_file + fsync",
                find(rows, size, "Java safetensors save (fsync)", "-"), find(rows, size, "safetensors save_file (fsync)", "-"),
                2));
        t.add(BenchTarget.ratio("safetensors mmap load >= 2x load_file (cached)",
                find(rows, size, "Java safetensors mmap load", "cached"), find(rows, size, "safetensors load_file", "cached"),
                2));
        t.add(BenchTarget.ratio("safetensors mmap load >= 2x load_file (cold)",
                find(rows, size, "Java safetensors mmap load", "cold"), find(rows, size, "safetensors load_file", "cold"),
                2));
        t.add(BenchTarget.msPerGb("safetensors mmap load < 10 ms/GB (cached)",
                find(rows, size, "Java safetensors mmap load", "cached"), 10));
        BenchRow peakRow = save != null && saveSync != null && saveSync.extraRss() > save.extraRss() ? saveSync : save;
        if (peakRow != null) {
            t.add(BenchTarget.atMost("extra peak RSS during save <= 64 MiB", peakRow, peakRow.extraRss() / (double) MIB,
                    " MiB", 64));
        }
        // Background saves: the caller's stall (saveAsync plus the wait before optimizer.step())
        // cut >= 10x against a synchronous save around the same training step.
        t.add(BenchTarget.ratio("async save: step blocked >= 10x less than sync",
                find(rows, size, "Java async save: step blocked", "-"), find(rows, size, "Java sync save: step blocked", "-"),
                10));
        // The command line (CliBench): inspect (start-up bound) done in under 0.5 s; verify, diff and
        // convert within 64 MiB plus the largest tensor above the JVM's own footprint (inspect's peak).
        BenchRow inspect = find(rows, size, "CLI inspect (JVM start to exit)", "cached");
        if (inspect != null) {
            t.add(new BenchTarget(size, "CLI inspect: start to exit < 0.5 s", inspect.label(), null,
                    inspect.median() * 1000, inspect.best() * 1000, " ms", 500, false));
            for (String op : List.of("CLI verify", "CLI diff (two copies)", "CLI convert")) {
                BenchRow r = find(rows, size, op, "cached");
                if (r != null && r.extraRss() >= 0 && inspect.extraRss() >= 0) {
                    t.add(BenchTarget.atMost(op + ": peak RSS <= JVM + 64 MiB + largest tensor", r,
                            (r.extraRss() - inspect.extraRss()) / (double) MIB, " MiB",
                            64 + CliBench.LARGEST_TENSOR / (double) MIB));
                }
            }
        }
        return t.stream().filter(Objects::nonNull).toList();
    }

    static void printTable(List<BenchRow> rows, List<Long> sizes, PrintStream out) {
        String header = String.format(Locale.ROOT, "%-6s %-32s %-6s %10s %8s %7s %10s  %s", "size", "operation",
                "cache", "median ms", "best ms", "GB/s", "+peak MiB", "Java vs references (same run)");
        out.println();
        out.println(header);
        out.println("-".repeat(header.length() + 40));
        for (long size : sizes) {
            for (BenchRow r : rows) {
                if (r.size() != size) {
                    continue;
                }
                String vs = String.join(", ", references(rows, r).stream().map(ref -> String.format(Locale.ROOT,
                        "%.2fx %s", ref.median() / r.median(), ref.op())).toList());
                out.printf(Locale.ROOT, "%-6s %-32s %-6s %10.1f %8.1f %7.2f %10s  %s%n", human(size), r.op(), r.cache(),
                        r.median() * 1000, r.best() * 1000, r.gbps(), r.extraRss() < 0 ? "-"
                        : String.format(Locale.ROOT, "%.0f", r.extraRss() / (double) MIB), vs);
            }
            out.println();
        }
    }

    static void printTargets(List<BenchTarget> targets, PrintStream out) {
        out.println("Targets (medians; in brackets the same from each side's best run):");
        for (BenchTarget t : targets) {
            out.printf(Locale.ROOT, "  %-6s %-40s %8.2f%-6s %-7s (best runs: %.2f%s %s)%s%n", human(t.size()), t.name(),
                    t.value(), t.unit(), t.met() ? "met" : "MISSED", t.best(), t.unit().trim(),
                    t.metAtBest() ? "met" : "missed", t.reference() == null ? "" : "  " + t.java() + " vs " + t.reference());
        }
    }

    static void printNotes(boolean primed, PrintStream out) {
        out.println();
        out.println("GB/s: state bytes / median time. +peak MiB: peak resident memory during the operation minus"
                + " resident memory before it (page cache excluded; for dd/cat/cmp and the CLI rows the process's"
                + " whole peak, a fresh JVM for each CLI row).");
        out.println("Ratios: reference time / Java time (>1: Java faster), every reference measured in this run;"
                + " durable saves (fsync) against durable references (Python os.fsync, dd conv=fsync)."
                + " Cold: after dropping the page cache.");
        if (primed) {
            out.println("Every timed run (every tool) starts right after touching and freeing 2x size + 256 MiB of"
                    + " memory (--no-prime: not), see BenchSystem.prime.");
        }
    }

    /** One JSON object: the run's settings, every row with its references, every target. */
    static String json(String command, Map<String, Object> settings, List<BenchRow> rows, List<BenchTarget> targets,
            Function<BenchRow, List<BenchRow>> referencesOf) {
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("command", command);
        root.putAll(settings);
        List<Object> rowObjects = new ArrayList<>();
        for (BenchRow r : rows) {
            List<BenchRow> refs = referencesOf.apply(r);
            BenchTarget target = targets.stream().filter(t -> t.size() == r.size() && t.java().equals(r.label()))
                    .findFirst().orElse(null);
            Map<String, Object> o = new LinkedHashMap<>();
            o.put("name", r.label());
            o.put("op", r.op());
            o.put("cache", r.cache());
            o.put("size", r.size());
            o.put("value", r.median() * 1000);
            o.put("unit", "ms");
            o.put("best", r.best() * 1000);
            o.put("runs", r.seconds().length);
            o.put("gbps", r.gbps());
            o.put("extra_peak_rss", r.extraRss() < 0 ? null : r.extraRss());
            o.put("reference", refs.isEmpty() ? null : refs.get(0).label());
            o.put("ratio", refs.isEmpty() ? null : refs.get(0).median() / r.median());
            List<Object> refObjects = new ArrayList<>();
            for (BenchRow ref : refs) {
                Map<String, Object> ro = new LinkedHashMap<>();
                ro.put("name", ref.label());
                ro.put("ratio", ref.median() / r.median());
                refObjects.add(ro);
            }
            o.put("references", refObjects);
            o.put("target", target == null ? null : target.name());
            o.put("met", target == null ? null : target.met());
            rowObjects.add(o);
        }
        root.put("rows", rowObjects);
        root.put("targets", targets.stream().map(BenchReport::targetJson).toList());
        return BenchJson.write(root);
    }

    private static Object targetJson(BenchTarget t) {
        Map<String, Object> o = new LinkedHashMap<>();
        o.put("name", t.name());
        o.put("size", t.size());
        o.put("value", t.value());
        o.put("unit", t.unit().trim());
        o.put("best", t.best());
        o.put("java", t.java());
        o.put("reference", t.reference());
        o.put("ratio", t.unit().equals("x") ? t.value() : null);
        o.put("target", t.target().trim());
        o.put("met", t.met());
        o.put("met_at_best", t.metAtBest());
        return o;
    }
}
