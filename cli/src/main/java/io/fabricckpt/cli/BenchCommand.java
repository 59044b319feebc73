package io.fabricckpt.cli;

import static io.fabricckpt.cli.BenchSystem.MIB;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Stream;

/**
 * {@code fabric-ckpt bench}: one table of save and load throughput for this library (sync save with
 * and without fsync, async save, mapped and eager loads), Python Lightning ({@code fabric.save},
 * {@code fabric.load}), plain torch ({@code torch.save}, {@code torch.load}, also {@code mmap=True})
 * and dd/cat as the physical baseline, all on the same disk and in the same run, with the extra peak
 * resident memory of each operation, the Java figures as ratios to their references, and the
 * "Performance" issue's targets as met/missed.
 *
 * <pre>
 * fabric-ckpt bench [--size 256M,1G] [--4g] [--reps N] [--dir DIR] [--no-python] [--no-cold] [--no-prime] [--json]
 * </pre>
 *
 * Every side runs a warm-up round first; timings are medians of N runs. Before every save the target
 * is removed and dirty pages are synced, so each save starts from the same state. Loads are timed
 * with the file in the page cache ("cached") and, when the page cache can be dropped (root), after
 * dropping it ("cold"). The measurements live in {@link JavaBench} and {@link ReferenceBench} (with
 * bench/bench.py), the table, targets and JSON in {@link BenchReport}.
 */
public final class BenchCommand {
    private BenchCommand() {}

    private static final class Options {
        List<Long> sizes = new ArrayList<>(List.of(256 * MIB, 1024 * MIB));
        int reps = 3;
        Path dir;
        boolean python = true;
        boolean cold = true;
        boolean prime = true;
        boolean json;
    }

    public static void main(String[] args) {
        System.exit(run(args));
    }

    public static int run(String[] args) {
        Options o;
        try {
            o = parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("fabric-ckpt bench: " + e.getMessage());
            System.err.println("usage: fabric-ckpt bench [--size 256M,1G] [--4g] [--reps N] [--dir DIR] [--no-python]"
                    + " [--no-cold] [--no-prime] [--json]");
            return 2;
        }
        Path dir = o.dir;
        boolean madeDir = false;
        try {
            if (dir == null) {
                dir = Files.createTempDirectory("fabric-ckpt-bench");
                madeDir = true;
            } else {
                Files.createDirectories(dir);
            }
            boolean canDrop = o.cold && BenchSystem.dropCaches();
            System.err.printf(Locale.ROOT, "bench in %s (%s), %d runs each after a warm-up, page cache %s%n", dir,
                    BenchSystem.fileSystem(dir), o.reps, canDrop ? "dropped for cold runs" : o.cold ? "not droppable: cached runs only" : "kept (--no-cold): cached runs only");
            List<BenchRow> rows = new ArrayList<>();
            List<BenchTarget> targets = new ArrayList<>();
            for (long size : o.sizes) {
                long primeBytes = o.prime ? 2 * size + 256 * MIB : 0;
                ReferenceBench references = new ReferenceBench(primeBytes);
                rows.addAll(new JavaBench(primeBytes).rows(size, dir, o.reps, canDrop));
                rows.addAll(references.ddCatRows(size, dir, o.reps, canDrop));
                rows.addAll(new CliBench(references).rows(size, dir, o.reps));
                if (o.python) {
                    rows.addAll(references.pythonRows(size, dir, o.reps, canDrop));
                }
                targets.addAll(BenchReport.targets(rows, size));
            }
            if (o.json) {
                Map<String, Object> settings = new LinkedHashMap<>();
                settings.put("sizes", List.copyOf(o.sizes));
                settings.put("reps", o.reps);
                settings.put("cold", canDrop);
                settings.put("primed", o.prime);
                settings.put("python", o.python);
                settings.put("file_system", BenchSystem.fileSystem(dir));
                System.out.println(BenchReport.json("bench", settings, rows, targets,
                        r -> BenchReport.references(rows, r)));
            } else {
                BenchReport.printTable(rows, o.sizes, System.out);
                BenchReport.printTargets(targets, System.out);
                BenchReport.printNotes(o.prime, System.out);
            }
            return 0;
        } catch (IOException | RuntimeException e) {
            System.err.println("fabric-ckpt bench: " + (e.getMessage() != null ? e.getMessage() : e.toString()));
            return e instanceof IOException ? ExitCodes.IO : ExitCodes.FAILED;
        } finally {
            if (dir != null) {
                cleanUp(dir, madeDir);
            }
        }
    }

    private static Options parse(String[] args) {
        Options o = new Options();
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--size", "--sizes" -> {
                    o.sizes.clear();
                    for (String s : value(args, ++i).split(",")) {
                        o.sizes.add(parseSize(s.trim()));
                    }
                }
                case "--4g" -> o.sizes.add(4096 * MIB);
                case "--reps" -> o.reps = Integer.parseInt(value(args, ++i));
                case "--dir" -> o.dir = Path.of(value(args, ++i));
                case "--no-python" -> o.python = false;
                case "--no-cold" -> o.cold = false;
                case "--no-prime" -> o.prime = false;
                case "--json" -> o.json = true;
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        if (o.reps < 1) {
            throw new IllegalArgumentException("--reps must be at least 1");
        }
        return o;
    }

    private static String value(String[] args, int i) {
        if (i >= args.length) {
            throw new IllegalArgumentException(args[i - 1] + " needs a value");
        }
        return args[i];
    }

    static long parseSize(String s) {
        String u = s.toUpperCase(Locale.ROOT);
        long unit = u.endsWith("G") ? 1024 * MIB : u.endsWith("M") ? MIB : u.endsWith("K") ? 1024 : 1;
        String digits = unit == 1 ? u : u.substring(0, u.length() - 1);
        try {
            long v = Long.parseLong(digits) * unit;
            if (v <= 0) {
                throw new NumberFormatException();
            }
            return v;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("bad size '" + s + "' (e.g. 256M, 1G)");
        }
    }

    private static void cleanUp(Path dir, boolean removeDir) {
        for (String name : List.of("java.ckpt", "dd.bin", "python.ckpt")) {
            try {
                Files.deleteIfExists(dir.resolve(name));
            } catch (IOException ignored) {
                // best effort
            }
        }
        if (removeDir) {
            try (Stream<Path> left = Files.list(dir)) {
                for (Path p : left.toList()) {
                    Files.deleteIfExists(p);
                }
                Files.deleteIfExists(dir);
            } catch (IOException ignored) {
                // best effort
            }
        }
    }
}
