package io.fabricckpt.cli;

import io.fabricckpt.TorchFiles;
import io.fabricckpt.core.Parameter;
import io.fabricckpt.core.PyOrderedDict;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Supplier;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;

/**
 * {@code fabric-ckpt bench}: one table of save and load throughput for this library (sync save with
 * and without fsync, async save, mapped and eager loads), Python Lightning ({@code fabric.save},
 * {@code fabric.load}), plain torch ({@code torch.save}, {@code torch.load}, also {@code mmap=True})
 * and dd/cat as the physical baseline, all on the same disk, with the extra peak resident memory of
 * each operation and the Java figures as ratios to Python's and to dd/cat's.
 *
 * <pre>
 * fabric-ckpt bench [--size 256M,1G] [--4g] [--reps N] [--dir DIR] [--no-python] [--no-cold]
 * </pre>
 *
 * Timings are medians of N runs (after one warm-up save). Before every save the target is removed and
 * dirty pages are synced, so each save starts from the same state. Loads are timed with the file in
 * the page cache ("cached") and, when the page cache can be dropped (root), after dropping it
 * ("cold"). "extra peak RSS" is the peak resident memory during the operation minus the resident
 * memory before it (Linux /proc/self/clear_refs and VmHWM); the page cache is not part of it.
 */
public final class BenchCommand {
    private static final long MIB = 1L << 20;

    /** The state: tensors of these sizes and dtypes, in turn, to the total (as bench/bench.py's SPEC). */
    private static final long[] SPEC_BYTES = {32 * MIB, 8 * MIB, 8 * MIB, 2 * MIB, 512 * 1024, 64 * 1024, 4096, 4096};
    private static final torch.ScalarType[] SPEC_TYPES = {torch.ScalarType.Float, torch.ScalarType.BFloat16,
        torch.ScalarType.Float, torch.ScalarType.Long, torch.ScalarType.Float, torch.ScalarType.Half,
        torch.ScalarType.Float, torch.ScalarType.Long};

    private BenchCommand() {}

    /** One measured operation. */
    private record Row(long size, String op, String cache, double[] seconds, long extraRss) {
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
    }

    private static final class Options {
        List<Long> sizes = new ArrayList<>(List.of(256 * MIB, 1024 * MIB));
        int reps = 3;
        Path dir;
        boolean python = true;
        boolean cold = true;
        boolean prime = true;
    }

    /** Whether each timed run starts on primed memory (see {@link #prime}); set once from the options. */
    private static boolean priming = true;
    /** How much memory {@link #prime} touches before each timed run: twice the state, and some. */
    private static long primeBytes;

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
                    + " [--no-cold] [--no-prime]");
            return 2;
        }
        priming = o.prime;
        Path dir = o.dir;
        boolean madeDir = false;
        try {
            if (dir == null) {
                dir = Files.createTempDirectory("fabric-ckpt-bench");
                madeDir = true;
            } else {
                Files.createDirectories(dir);
            }
            boolean canDrop = o.cold && dropCaches();
            System.err.printf(Locale.ROOT, "bench in %s (%s), %d runs each, page cache %s%n", dir, fileSystem(dir),
                    o.reps, canDrop ? "dropped for cold runs" : "not droppable: cached runs only");
            List<Row> rows = new ArrayList<>();
            for (long size : o.sizes) {
                primeBytes = o.prime ? 2 * size + 256 * MIB : 0;
                rows.addAll(javaRows(size, dir, o.reps, canDrop));
                rows.addAll(baselineRows(size, dir, o.reps, canDrop));
                if (o.python) {
                    rows.addAll(pythonRows(size, dir, o.reps, canDrop));
                }
            }
            print(rows, o, System.out);
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

    // ------------------------------------------------------------------------------ Java

    private static Map<String, Object> buildState(long total) {
        PyOrderedDict model = new PyOrderedDict();
        long left = total;
        for (int i = 0; left > 0; i++) {
            torch.ScalarType dtype = SPEC_TYPES[i % SPEC_TYPES.length];
            int element = switch (dtype) {
                case BFloat16, Half -> 2;
                case Long -> 8;
                default -> 4;
            };
            long elements = Math.max(1, Math.min(SPEC_BYTES[i % SPEC_BYTES.length], left) / element);
            Tensor random = torch.rand(elements);
            Tensor t = dtype == torch.ScalarType.Float ? random
                    : dtype == torch.ScalarType.Long ? random.mul(new org.bytedeco.pytorch.Scalar(1000.0)).to(dtype)
                    : random.to(dtype);
            model.put("layer" + i + ".weight", t);
            left -= elements * element;
        }
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("step", 1000L);
        state.put("lr", 1e-3);
        state.put("name", "bench");
        return state;
    }

    private static List<Row> javaRows(long size, Path dir, int reps, boolean cold) {
        System.err.printf(Locale.ROOT, "[%s] Java: building the state%n", human(size));
        Map<String, Object> state = buildState(size);
        Path file = dir.resolve("java.ckpt");
        WriteOptions noSync = WriteOptions.DEFAULT.withFsync(false);
        WriteOptions sync = WriteOptions.DEFAULT;
        List<Row> rows = new ArrayList<>();
        Runnable fresh = () -> fresh(file);
        measure(() -> {
            TorchFiles.write(file, state, noSync);
            return null;
        }, fresh); // warm-up: JIT, native library, first-touch memory

        System.err.printf(Locale.ROOT, "[%s] Java: saves%n", human(size));
        rows.add(repeat(size, "Java save", "-", reps, fresh, () -> {
            TorchFiles.write(file, state, noSync);
            return null;
        }));
        rows.add(repeat(size, "Java save (fsync)", "-", reps, fresh, () -> {
            TorchFiles.write(file, state, sync);
            return null;
        }));
        for (AsyncSaveBench.Result r : AsyncSaveBench.run(size, file, reps, () -> {
            fresh(file);
            prime(primeBytes);
        })) {
            rows.add(new Row(size, r.op(), "-", r.seconds(), r.extraRss()));
        }

        System.err.printf(Locale.ROOT, "[%s] Java: loads%n", human(size));
        TorchFiles.write(file, state, sync);
        release(TorchFiles.read(file, ReadOptions.eager())); // into the page cache
        rows.add(repeat(size, "Java mmap load", "cached", reps, null,
                () -> TorchFiles.read(file, ReadOptions.mapped())));
        rows.add(repeat(size, "Java eager load", "cached", reps, null,
                () -> TorchFiles.read(file, ReadOptions.eager())));
        if (cold) {
            rows.add(repeat(size, "Java mmap load", "cold", reps, BenchCommand::dropCaches,
                    () -> TorchFiles.read(file, ReadOptions.mapped())));
            rows.add(repeat(size, "Java eager load", "cold", reps, BenchCommand::dropCaches,
                    () -> TorchFiles.read(file, ReadOptions.eager())));
        }
        release(state);
        delete(file);
        return rows;
    }

    private static Row repeat(long size, String op, String cache, int reps, Runnable before, Supplier<Object> call) {
        double[] seconds = new double[reps];
        long extra = 0;
        for (int r = 0; r < reps; r++) {
            long[] m = measure(call, before);
            seconds[r] = m[0] / 1e9;
            extra = Math.max(extra, m[1]);
        }
        if (System.getenv("FABRICCKPT_BENCH_VERBOSE") != null) {
            System.err.println(op + " " + cache + " " + Arrays.toString(seconds));
        }
        return new Row(size, op, cache, seconds, extra);
    }

    /** {nanoseconds, extra peak RSS bytes} of one call; what it returns is released afterwards. */
    private static long[] measure(Supplier<Object> call, Runnable before) {
        if (before != null) {
            before.run();
        }
        prime(primeBytes);
        long rss = status("VmRSS");
        resetPeak();
        long t = System.nanoTime();
        Object result = call.get();
        long nanos = System.nanoTime() - t;
        long extra = Math.max(0, status("VmHWM") - rss);
        release(result);
        collect();
        return new long[] {nanos, extra};
    }

    /**
     * Frees now what the JVM would free at its next GC: the native tree nodes that JavaCPP handles
     * (created while converting a loaded tree) keep alive until their Java objects are collected.
     */
    private static void collect() {
        System.gc();
        try {
            Thread.sleep(50);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        org.bytedeco.javacpp.Pointer.deallocateReferences();
    }

    /** Frees the native memory of every tensor in a loaded tree now rather than at some GC. */
    private static void release(Object value) {
        if (value instanceof Tensor t) {
            t.close();
        } else if (value instanceof Parameter p) {
            p.data().close();
        } else if (value instanceof Map<?, ?> m) {
            m.values().forEach(BenchCommand::release);
        } else if (value instanceof Collection<?> c) { // lists, sets, PyTuple
            c.forEach(BenchCommand::release);
        }
    }

    // ------------------------------------------------------------------------------ dd / cat

    private static List<Row> baselineRows(long size, Path dir, int reps, boolean cold) throws IOException {
        System.err.printf(Locale.ROOT, "[%s] dd/cat%n", human(size));
        Path file = dir.resolve("dd.bin");
        long blocks = Math.max(1, size / (4 * MIB));
        String f = quote(file.toString());
        List<Row> rows = new ArrayList<>();
        Runnable fresh = () -> fresh(file);
        rows.add(shell(size, "dd write (bs=4M)", "-", reps, fresh,
                "dd if=/dev/zero of=" + f + " bs=4M count=" + blocks + " status=none"));
        rows.add(shell(size, "dd write (bs=4M, conv=fsync)", "-", reps, fresh,
                "dd if=/dev/zero of=" + f + " bs=4M count=" + blocks + " conv=fsync status=none"));
        shellSeconds("cat " + f + " > /dev/null"); // cached from here on
        rows.add(shell(size, "cat > /dev/null", "cached", reps, null, "cat " + f + " > /dev/null"));
        if (cold) {
            rows.add(shell(size, "cat > /dev/null", "cold", reps, BenchCommand::dropCaches,
                    "cat " + f + " > /dev/null"));
        }
        delete(file);
        return rows;
    }

    private static Row shell(long size, String op, String cache, int reps, Runnable before, String command)
            throws IOException {
        double[] seconds = new double[reps];
        for (int r = 0; r < reps; r++) {
            if (before != null) {
                before.run();
            }
            prime(primeBytes);
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
        return new Row(size, op, cache, seconds, rss);
    }

    /** Runs a bash command, timed inside bash (no process start-up in the figure). */
    private static double shellSeconds(String command) {
        String script = "s=$EPOCHREALTIME; " + command + "; rc=$?; e=$EPOCHREALTIME; echo \"$s $e\"; exit $rc";
        String out = exec(List.of("bash", "-c", script), null);
        String[] parts = out.trim().lines().reduce((a, b) -> b).orElse("").split(" ");
        return Double.parseDouble(parts[1]) - Double.parseDouble(parts[0]);
    }

    // ------------------------------------------------------------------------------ Python

    private static List<Row> pythonRows(long size, Path dir, int reps, boolean cold) {
        System.err.printf(Locale.ROOT, "[%s] Python: fabric.save/load, torch.save/load%n", human(size));
        String python = firstNonEmpty(System.getenv("FABRICCKPT_PYTHON"),
                System.getenv("VENV") == null ? null : System.getenv("VENV") + "/bin/python", "python3");
        String root = firstNonEmpty(System.getenv("ROOT"), ".");
        Path script = Path.of(root, "bench", "bench.py");
        List<String> command = new ArrayList<>(List.of(python, script.toString(), "--bytes", Long.toString(size),
                "--dir", dir.toString(), "--reps", Integer.toString(reps)));
        if (cold) {
            command.add("--cold");
        }
        if (priming) {
            command.add("--prime");
        }
        String out = exec(command, null);
        List<Row> rows = new ArrayList<>();
        for (String line : out.split("\n")) {
            String[] f = line.split("\t");
            if (f.length != 4) {
                continue;
            }
            double[] seconds = Stream.of(f[2].split(",")).mapToDouble(Double::parseDouble).toArray();
            rows.add(new Row(size, f[0], f[1], seconds, Long.parseLong(f[3])));
        }
        if (rows.isEmpty()) {
            throw new IllegalStateException("bench/bench.py printed no results:\n" + out);
        }
        return rows;
    }

    // ------------------------------------------------------------------------------ table

    private static void print(List<Row> rows, Options o, PrintStream out) {
        String header = String.format(Locale.ROOT, "%-6s %-32s %-6s %10s %8s %7s %10s  %-34s %s", "size", "operation",
                "cache", "median ms", "best ms", "GB/s", "+peak MiB", "vs Python", "vs dd/cat");
        out.println();
        out.println(header);
        out.println("-".repeat(header.length() + 12));
        for (long size : o.sizes) {
            for (Row r : rows) {
                if (r.size() != size) {
                    continue;
                }
                out.printf(Locale.ROOT, "%-6s %-32s %-6s %10.1f %8.1f %7.2f %10s  %-34s %s%n", human(size), r.op(),
                        r.cache(), r.median() * 1000, r.best() * 1000, r.gbps(), r.extraRss() < 0 ? "-"
                        : String.format(Locale.ROOT, "%.0f",
                                r.extraRss() / (double) MIB), vsPython(rows, r), vsBaseline(rows, r));
            }
            out.println();
        }
        out.println("Targets (Java vs reference; medians, then the same from each side's best run):");
        for (long size : o.sizes) {
            targets(rows, size, out);
        }
        out.println();
        out.println("GB/s: state bytes / median time. +peak MiB: peak resident memory during the operation minus"
                + " resident memory before it (page cache excluded; for dd/cat the tool's whole peak).");
        out.println("vs Python / vs dd/cat: Java throughput divided by theirs (>1: Java faster); the Python"
                + " saves do not fsync. Cold: after dropping the page cache.");
        if (o.prime) {
            out.println("Every timed run (every tool) starts right after touching and freeing 2x size + 256 MiB of"
                    + " memory (--no-prime: not), see BenchCommand.prime.");
        }
    }

    private static Row find(List<Row> rows, long size, String op, String cache) {
        for (Row r : rows) {
            if (r.size() == size && r.op().equals(op) && r.cache().equals(cache)) {
                return r;
            }
        }
        return null;
    }

    private static String ratio(Row java, Row ref, String name) {
        return ref == null ? "" : String.format(Locale.ROOT, "%.2fx %s", ref.median() / java.median(), name);
    }

    private static String join(String... parts) {
        return String.join(", ", Stream.of(parts).filter(p -> !p.isEmpty()).toList());
    }

    private static String vsPython(List<Row> rows, Row r) {
        long s = r.size();
        if (r.op().startsWith("Java") && r.op().contains("save")) {
            return join(ratio(r, find(rows, s, "fabric.save", "-"), "fabric.save"),
                    ratio(r, find(rows, s, "torch.save", "-"), "torch.save"));
        }
        if (r.op().equals("Java mmap load")) {
            return ratio(r, find(rows, s, "torch.load(mmap=True)", r.cache()), "torch.load(mmap)");
        }
        if (r.op().equals("Java eager load")) {
            return join(ratio(r, find(rows, s, "fabric.load", r.cache()), "fabric.load"),
                    ratio(r, find(rows, s, "torch.load", r.cache()), "torch.load"));
        }
        return "";
    }

    private static String vsBaseline(List<Row> rows, Row r) {
        long s = r.size();
        if (r.op().equals("Java save (fsync)")) {
            return ratio(r, find(rows, s, "dd write (bs=4M, conv=fsync)", "-"), "dd fsync");
        }
        if (r.op().startsWith("Java") && r.op().contains("save")) {
            return ratio(r, find(rows, s, "dd write (bs=4M)", "-"), "dd");
        }
        if (r.op().startsWith("Java") && r.op().contains("load")) {
            return ratio(r, find(rows, s, "cat > /dev/null", r.cache()), "cat");
        }
        return "";
    }

    private static void targets(List<Row> rows, long size, PrintStream out) {
        String h = human(size);
        Row save = find(rows, size, "Java save", "-");
        Row saveSync = find(rows, size, "Java save (fsync)", "-");
        Row fabricSave = find(rows, size, "fabric.save", "-");
        Row dd = find(rows, size, "dd write (bs=4M)", "-");
        Row ddSync = find(rows, size, "dd write (bs=4M, conv=fsync)", "-");
        if (save != null && fabricSave != null) {
            check(out, h, "save >= 2.5x fabric.save", fabricSave.median() / save.median(),
                    fabricSave.best() / save.best(), 2.5, true, "x");
        }
        if (save != null && dd != null) {
            check(out, h, "save >= 0.9x dd", dd.median() / save.median(), dd.best() / save.best(), 0.9, true, "x");
        }
        if (saveSync != null && ddSync != null) {
            check(out, h, "save (fsync) >= 0.9x dd conv=fsync", ddSync.median() / saveSync.median(),
                    ddSync.best() / saveSync.best(), 0.9, true, "x");
        }
        for (String cache : List.of("cached", "cold")) {
            Row mmap = find(rows, size, "Java mmap load", cache);
            if (mmap != null) {
                double gb = size / 1e9;
                check(out, h, "mmap load < 10 ms/GB (" + cache + ")", mmap.median() * 1000 / gb, mmap.best() * 1000 / gb,
                        10, false, " ms/GB");
            }
            Row eager = find(rows, size, "Java eager load", cache);
            Row cat = find(rows, size, "cat > /dev/null", cache);
            if (eager != null && cat != null) {
                check(out, h, "eager load >= 0.9x cat (" + cache + ")", cat.median() / eager.median(),
                        cat.best() / eager.best(), 0.9, true, "x");
            }
        }
        long peak = Math.max(save == null ? 0 : save.extraRss(), saveSync == null ? 0 : saveSync.extraRss());
        check(out, h, "extra peak RSS during save <= 64 MiB", peak / (double) MIB, peak / (double) MIB, 64, false,
                " MiB");
    }

    private static void check(PrintStream out, String size, String what, double median, double best, double bound,
            boolean atLeast, String unit) {
        boolean met = atLeast ? median >= bound : median <= bound;
        boolean metAtBest = atLeast ? best >= bound : best <= bound;
        out.printf(Locale.ROOT, "  %-6s %-40s %8.2f%-6s %-7s (best runs: %.2f%s %s)%n", size, what, median, unit,
                met ? "met" : "MISSED", best, unit.trim(), metAtBest ? "met" : "missed");
    }

    // ------------------------------------------------------------------------------ helpers

    static String human(long bytes) {
        return bytes % (1024 * MIB) == 0 ? bytes / (1024 * MIB) + "G"
                : bytes % MIB == 0 ? bytes / MIB + "M" : bytes + "B";
    }

    private static long status(String field) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith(field + ":")) {
                    return Long.parseLong(line.substring(field.length() + 1).trim().split("\\s+")[0]) * 1024;
                }
            }
        } catch (IOException | NumberFormatException ignored) {
            // not Linux: no figure
        }
        return 0;
    }

    private static void resetPeak() {
        try {
            Files.writeString(Path.of("/proc/self/clear_refs"), "5");
        } catch (IOException ignored) {
            // older kernels: the peak is the process's since start
        }
    }

    /**
     * Touches and frees {@code bytes} of memory right before a timed run. Virtual machines that hand
     * memory left free for a while back to their host (virtio-balloon free page reporting; this one
     * does after 2 s) make the next first touch of it slow: 1 to 2.5 GB/s instead of 12 to 14 here.
     * Every save fills page cache and every eager load fresh memory, so without this the figures
     * would measure how long the machine had been idle before each run. Every tool gets the same.
     */
    private static void prime(long bytes) {
        if (bytes <= 0) {
            return;
        }
        try (Tensor memory = torch.empty(new long[] {bytes}, new TensorOptions(torch.ScalarType.Byte),
                new org.bytedeco.pytorch.MemoryFormatOptional())) {
            memory.fill_(new org.bytedeco.pytorch.Scalar(1.0));
        }
    }

    /** sync, then drop the page cache; false where that is not allowed. */
    private static boolean dropCaches() {
        exec(List.of("sync"), null);
        try {
            Files.writeString(Path.of("/proc/sys/vm/drop_caches"), "3");
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /** The target gone and earlier dirty pages on disk: every save starts alike. */
    private static void fresh(Path file) {
        delete(file);
        exec(List.of("sync"), null);
    }

    private static void delete(Path file) {
        try {
            Files.deleteIfExists(file);
        } catch (IOException e) {
            throw new IllegalStateException("cannot delete " + file + ": " + e.getMessage(), e);
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

    private static String fileSystem(Path dir) {
        try {
            return Files.getFileStore(dir).type() + " " + Files.getFileStore(dir).name();
        } catch (IOException e) {
            return "unknown file system";
        }
    }

    private static String exec(List<String> command, Path workDir) {
        try {
            ProcessBuilder pb = new ProcessBuilder(command).redirectErrorStream(false)
                    .redirectError(ProcessBuilder.Redirect.INHERIT);
            if (workDir != null) {
                pb.directory(workDir.toFile());
            }
            Process p = pb.start();
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            int rc = p.waitFor();
            if (rc != 0) {
                throw new IllegalStateException(String.join(" ", command) + " failed (exit " + rc + ")");
            }
            return out;
        } catch (IOException e) {
            throw new IllegalStateException("cannot run " + command.get(0) + ": " + e.getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
    }

    private static String quote(String s) {
        return "'" + s.replace("'", "'\\''") + "'";
    }

    private static String firstNonEmpty(String... values) {
        for (String v : values) {
            if (v != null && !v.isEmpty()) {
                return v;
            }
        }
        return "";
    }
}
