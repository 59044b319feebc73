package io.fabricckpt.cli;

import io.fabricckpt.Fabric;
import io.fabricckpt.dist.Fsdp;
import io.fabricckpt.dist.LocalLauncher;
import io.fabricckpt.dist.ProcessGroup;
import io.fabricckpt.dist.ShardedModule;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.function.Function;
import java.util.stream.Stream;
import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.Module;

/**
 * {@code fabric-ckpt bench-sharded [--size 256M] [--ranks 2] [--reps 3] [--dir DIR] [--no-python] [--json]}:
 * FSDP-style checkpoints across processes. N JVM ranks shard a stack of Linear(2048, 2048) layers of
 * the given total size (FSDP2's layout) and time, per repetition after one warm-up: a sharded save
 * (every rank writes its shard file, rank 0 the metadata), a load of it into the same shards, and a
 * FULL save (gathered to rank 0, one file). Python Lightning's ModelParallelStrategy (FSDP2 on CPU,
 * gloo) does the same with the same model in bench/sharded_bench.py, durable as the Java side. Medians of
 * the slowest rank, the targets (sharded save and load >= 2x, full save >= 1.5x Lightning) as
 * met/missed, as a table or (--json) one object in the form of {@code bench --json}.
 */
final class ShardedBench {
    private static final long LAYER_BYTES = 2048L * 2048 * 4 + 2048 * 4;

    private ShardedBench() {}

    static int run(String[] args) {
        try {
            return measure(args);
        } catch (IOException e) {
            System.err.println("fabric-ckpt bench-sharded: " + e.getMessage());
            return ExitCodes.IO;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return 130;
        }
    }

    private static int measure(String[] args) throws IOException, InterruptedException {
        long size = 256L << 20;
        int ranks = 2;
        int reps = 3;
        Path dir = null;
        boolean python = true;
        boolean json = false;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--size" -> size = BenchCommand.parseSize(args[++i]);
                case "--ranks" -> ranks = Integer.parseInt(args[++i]);
                case "--reps" -> reps = Integer.parseInt(args[++i]);
                case "--dir" -> dir = Path.of(args[++i]);
                case "--no-python" -> python = false;
                case "--json" -> json = true;
                default -> {
                    System.err.println("usage: fabric-ckpt bench-sharded [--size 256M] [--ranks 2] [--reps 3] [--dir DIR]"
                            + " [--no-python] [--json]");
                    return 2;
                }
            }
        }
        int layers = (int) Math.max(1, size / LAYER_BYTES);
        Path work = dir != null ? Files.createDirectories(dir) : Files.createTempDirectory("fabric-ckpt-bench-sharded");
        System.err.printf(Locale.ROOT, "%d ranks, %d Linear(2048, 2048) layers (%.0f MiB), %d reps, in %s%n", ranks,
                layers, layers * LAYER_BYTES / 1048576.0, reps, work);
        Map<String, double[]> java = collect(new LocalLauncher(ranks).timeout(Duration.ofMinutes(20))
                .output(line -> { })
                .launch(ShardedBench.class.getName() + "$Rank", List.of(Integer.toString(layers), Integer.toString(reps),
                        work.resolve("java").toString())), ranks);
        Map<String, double[]> py = python ? pythonTimes(layers, reps, ranks, work.resolve("python")) : Map.of();
        if (dir == null) {
            deleteTree(work);
        }
        long bytes = layers * LAYER_BYTES;
        List<BenchRow> rows = new ArrayList<>();
        List<BenchTarget> targets = new ArrayList<>();
        for (String op : List.of("sharded save", "sharded load", "full save")) {
            BenchRow j = java.containsKey(op) ? new BenchRow(bytes, "Java " + op, "-", java.get(op), -1) : null;
            BenchRow p = py.containsKey(op) ? new BenchRow(bytes, "Lightning " + op, "-", py.get(op), -1) : null;
            Stream.of(j, p).filter(Objects::nonNull).forEach(rows::add);
            BenchTarget t = BenchTarget.ratio(op + (op.startsWith("full") ? " >= 1.5x" : " >= 2x")
                    + " Lightning ModelParallel", j, p, op.startsWith("full") ? 1.5 : 2.0);
            if (t != null) {
                targets.add(t);
            }
        }
        Function<BenchRow, List<BenchRow>> reference = r -> !r.op().startsWith("Java ") ? List.of()
                : rows.stream().filter(x -> x.op().equals("Lightning " + r.op().substring(5))).toList();
        if (json) {
            Map<String, Object> settings = new LinkedHashMap<>();
            settings.put("sizes", List.of(bytes));
            settings.put("ranks", ranks);
            settings.put("reps", reps);
            settings.put("layers", layers);
            settings.put("python", python);
            System.out.println(BenchReport.json("bench-sharded", settings, rows, targets, reference));
            return 0;
        }
        System.out.printf(Locale.ROOT, "%-32s %10s %8s %8s  %s%n", "operation (slowest rank)", "median ms", "best ms",
                "GB/s", "Java vs Lightning (same run)");
        for (BenchRow r : rows) {
            String vs = String.join(", ", reference.apply(r).stream().map(ref -> String.format(Locale.ROOT, "%.2fx",
                    ref.median() / r.median())).toList());
            System.out.printf(Locale.ROOT, "%-32s %10.1f %8.1f %8.2f  %s%n", r.op(), r.median() * 1e3, r.best() * 1e3,
                    r.gbps(), vs);
        }
        System.out.println();
        BenchReport.printTargets(targets, System.out);
        System.out.println("Both sides: one warm-up repetition first; saves durable (Java fsyncs, Python os.fsync of"
                + " what each rank wrote); each time from barrier to barrier (the slowest rank).");
        return 0;
    }

    /** "op=seconds,seconds,..." lines of every rank -> per repetition, the slowest rank's time. */
    private static Map<String, double[]> collect(LocalLauncher.Result result, int ranks) {
        if (!result.succeeded()) {
            throw new IllegalStateException("the bench ranks failed:\n" + result.describe());
        }
        Map<String, double[]> slowest = new LinkedHashMap<>();
        for (int r = 0; r < ranks; r++) {
            for (String line : result.output(r)) {
                int eq = line.indexOf('=');
                if (!line.startsWith("time ") || eq < 0) {
                    continue;
                }
                String op = line.substring(5, eq);
                double[] t = Arrays.stream(line.substring(eq + 1).split(",")).mapToDouble(Double::parseDouble).toArray();
                slowest.merge(op, t, (a, b) -> {
                    double[] m = a.clone();
                    for (int i = 0; i < m.length; i++) {
                        m[i] = Math.max(a[i], b[i]);
                    }
                    return m;
                });
            }
        }
        return slowest;
    }

    private static Map<String, double[]> pythonTimes(int layers, int reps, int ranks, Path dir)
            throws IOException, InterruptedException {
        ProcessBuilder pb = new ProcessBuilder(BenchSystem.python(), BenchSystem.benchScript("sharded_bench.py").toString(),
                "--layers", Integer.toString(layers), "--reps", Integer.toString(reps), "--ranks",
                Integer.toString(ranks), "--dir", dir.toString()).redirectErrorStream(true);
        pb.environment().keySet().removeAll(List.of("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"));
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes());
        if (p.waitFor() != 0) {
            throw new IllegalStateException("bench/sharded_bench.py failed:\n" + out);
        }
        Map<String, double[]> times = new LinkedHashMap<>();
        for (String line : out.split("\n")) {
            int eq = line.indexOf('=');
            if (line.startsWith("time ") && eq > 0) {
                times.put(line.substring(5, eq),
                        Arrays.stream(line.substring(eq + 1).trim().split(",")).mapToDouble(Double::parseDouble).toArray());
            }
        }
        return times;
    }

    private static void deleteTree(Path root) throws IOException {
        try (var paths = Files.walk(root)) {
            for (Path p : paths.sorted(java.util.Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }

    /** One rank of the bench (started by the driver through LocalLauncher). */
    public static final class Rank {
        private Rank() {}

        public static void main(String[] args) throws Exception {
            int layers = Integer.parseInt(args[0]);
            int reps = Integer.parseInt(args[1]);
            Path dir = Path.of(args[2]);
            try (ProcessGroup group = ProcessGroup.fromEnvironment()) {
                Module model = new Module();
                for (int i = 0; i < layers; i++) {
                    model.register_module("l" + i, new LinearImpl(2048, 2048));
                }
                ShardedModule sharded = ShardedModule.shardRows(model, group.rank(), group.worldSize());
                Map<String, Object> state = new LinkedHashMap<>();
                state.put("model", sharded);
                state.put("step", 1L);
                Fabric fabric = new Fabric(new Fsdp(group));
                Fabric full = new Fabric(new Fsdp(group, Fsdp.StateDictType.FULL));
                Path shardedDir = dir.resolve("sharded");
                Path fullFile = dir.resolve("full.ckpt");
                List<Double> save = new ArrayList<>();
                List<Double> load = new ArrayList<>();
                List<Double> fullSave = new ArrayList<>();
                for (int rep = 0; rep <= reps; rep++) { // rep 0 warms up
                    group.barrier();
                    long t0 = System.nanoTime();
                    fabric.save(shardedDir, state);
                    long t1 = System.nanoTime();
                    group.barrier();
                    long t2 = System.nanoTime();
                    fabric.load(shardedDir, state);
                    long t3 = System.nanoTime();
                    group.barrier();
                    long t4 = System.nanoTime();
                    full.save(fullFile, state);
                    long t5 = System.nanoTime();
                    if (rep > 0) {
                        save.add((t1 - t0) / 1e9);
                        load.add((t3 - t2) / 1e9);
                        fullSave.add((t5 - t4) / 1e9);
                    }
                }
                print("sharded save", save);
                print("sharded load", load);
                print("full save", fullSave);
            }
        }

        private static void print(String op, List<Double> seconds) {
            System.out.println("time " + op + "=" + String.join(",", seconds.stream().map(String::valueOf).toList()));
        }
    }
}
