package io.fabricckpt.cli;

import static io.fabricckpt.cli.BenchSystem.MIB;
import static io.fabricckpt.cli.BenchSystem.human;
import static io.fabricckpt.cli.BenchSystem.quote;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;

/**
 * The references of {@code fabric-ckpt bench}, measured in the same run as the Java rows: dd/cat as
 * the physical baseline, and Python (Lightning's fabric.save/load, torch.save/load) through
 * bench/bench.py, with the same state, the same priming and the same cache states.
 */
final class ReferenceBench {
    private final long primeBytes;

    ReferenceBench(long primeBytes) {
        this.primeBytes = primeBytes;
    }

    List<BenchRow> ddCatRows(long size, Path dir, int reps, boolean cold) throws IOException {
        System.err.printf(Locale.ROOT, "[%s] dd/cat%n", human(size));
        Path file = dir.resolve("dd.bin");
        long blocks = Math.max(1, size / (4 * MIB));
        String f = quote(file.toString());
        List<BenchRow> rows = new ArrayList<>();
        Runnable fresh = () -> BenchSystem.fresh(file);
        String write = "dd if=/dev/zero of=" + f + " bs=4M count=" + blocks + " status=none";
        fresh.run();
        shellSeconds(write); // warm-up
        rows.add(timed(size, "dd write (bs=4M)", "-", reps, fresh, write));
        rows.add(timed(size, "dd write (bs=4M, conv=fsync)", "-", reps, fresh, write.replace(" status=", " conv=fsync status=")));
        warm("cat " + f + " > /dev/null"); // cached from here on
        rows.add(timed(size, "cat > /dev/null", "cached", reps, null, "cat " + f + " > /dev/null"));
        if (cold) {
            rows.add(timed(size, "cat > /dev/null", "cold", reps, BenchSystem::dropCaches,
                    "cat " + f + " > /dev/null"));
        }
        BenchSystem.delete(file);
        return rows;
    }

    /** Runs a bash command once, untimed (a warm-up, or to bring files into the page cache). */
    void warm(String command) {
        shellSeconds(command);
    }

    /**
     * A bash command timed {@code reps} times (each after {@code before} and the priming), and its
     * whole peak resident memory from one more run under /usr/bin/time (-1 without it).
     */
    BenchRow timed(long size, String op, String cache, int reps, Runnable before, String command)
            throws IOException {
        double[] seconds = new double[reps];
        for (int r = 0; r < reps; r++) {
            if (before != null) {
                before.run();
            }
            BenchSystem.prime(primeBytes);
            seconds[r] = shellSeconds(command);
        }
        // Peak memory of the tool itself, from one more (untimed) run.
        if (before != null) {
            before.run();
        }
        long rss = -1;
        Path out = Files.createTempFile("fabric-ckpt-bench", ".rss");
        try {
            if (Files.isExecutable(Path.of("/usr/bin/time"))) {
                String tool = command.replaceFirst("^(\\S+)", "/usr/bin/time -f %M -o " + quote(out.toString()) + " $1");
                shellSeconds(tool);
                String kb = Files.readString(out).trim();
                rss = kb.isEmpty() ? -1 : Long.parseLong(kb.lines().reduce((a, b) -> b).orElse("-1").trim()) * 1024;
            }
        } catch (NumberFormatException ignored) {
            rss = -1;
        } finally {
            Files.deleteIfExists(out);
        }
        return new BenchRow(size, op, cache, seconds, rss);
    }

    /** Runs a bash command, timed inside bash (no start-up of bash in the figure; the command's own is). */
    private static double shellSeconds(String command) {
        String script = "s=$EPOCHREALTIME; " + command + "; rc=$?; e=$EPOCHREALTIME; echo \"$s $e\"; exit $rc";
        String out = BenchSystem.exec(List.of("bash", "-c", script));
        String[] parts = out.trim().lines().reduce((a, b) -> b).orElse("").split(" ");
        return Double.parseDouble(parts[1]) - Double.parseDouble(parts[0]);
    }

    /** bench/bench.py's rows: one tab-separated line per operation (see its docstring). */
    List<BenchRow> pythonRows(long size, Path dir, int reps, boolean cold) {
        System.err.printf(Locale.ROOT, "[%s] Python: fabric.save/load, torch.save/load%n", human(size));
        List<String> command = new ArrayList<>(List.of(BenchSystem.python(),
                BenchSystem.benchScript("bench.py").toString(), "--bytes", Long.toString(size), "--dir", dir.toString(),
                "--reps", Integer.toString(reps)));
        if (cold) {
            command.add("--cold");
        }
        if (primeBytes > 0) {
            command.add("--prime");
        }
        String out = BenchSystem.exec(command);
        List<BenchRow> rows = new ArrayList<>();
        for (String line : out.split("\n")) {
            String[] f = line.split("\t");
            if (f.length != 4) {
                continue;
            }
            double[] seconds = Stream.of(f[2].split(",")).mapToDouble(Double::parseDouble).toArray();
            rows.add(new BenchRow(size, f[0], f[1], seconds, Long.parseLong(f[3])));
        }
        if (rows.isEmpty()) {
            throw new IllegalStateException("bench/bench.py printed no results:\n" + out);
        }
        return rows;
    }
}
