package io.fabricckpt.cli;

import static io.fabricckpt.cli.BenchSystem.MIB;
import static io.fabricckpt.cli.BenchSystem.human;

import io.fabricckpt.TorchFiles;
import io.fabricckpt.core.Parameter;
import io.fabricckpt.core.PyOrderedDict;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Supplier;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/** The Java side of {@code fabric-ckpt bench}: saves (plain, fsync, async) and loads (mapped, eager). */
final class JavaBench {
    /** The state: tensors of these sizes and dtypes, in turn, to the total (as bench/bench.py's SPEC). */
    private static final long[] SPEC_BYTES = {32 * MIB, 8 * MIB, 8 * MIB, 2 * MIB, 512 * 1024, 64 * 1024, 4096, 4096};
    private static final torch.ScalarType[] SPEC_TYPES = {torch.ScalarType.Float, torch.ScalarType.BFloat16,
        torch.ScalarType.Float, torch.ScalarType.Long, torch.ScalarType.Float, torch.ScalarType.Half,
        torch.ScalarType.Float, torch.ScalarType.Long};

    /** How much memory each timed run primes first (see {@link BenchSystem#prime}); 0: none. */
    private final long primeBytes;

    JavaBench(long primeBytes) {
        this.primeBytes = primeBytes;
    }

    static Map<String, Object> buildState(long total) {
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

    List<BenchRow> rows(long size, Path dir, int reps, boolean cold) {
        System.err.printf(Locale.ROOT, "[%s] Java: building the state%n", human(size));
        Map<String, Object> state = buildState(size);
        Path file = dir.resolve("java.ckpt");
        WriteOptions noSync = WriteOptions.DEFAULT.withFsync(false);
        WriteOptions sync = WriteOptions.DEFAULT;
        List<BenchRow> rows = new ArrayList<>();
        Runnable fresh = () -> BenchSystem.fresh(file);
        // Warm-up round, untimed: JIT, native library, first-touch memory, each path once.
        measure(() -> {
            TorchFiles.write(file, state, sync);
            return null;
        }, fresh);
        measure(() -> TorchFiles.read(file, ReadOptions.eager()), null);
        measure(() -> TorchFiles.read(file, ReadOptions.mapped()), null);

        System.err.printf(Locale.ROOT, "[%s] Java: saves%n", human(size));
        rows.add(repeat(size, "Java save", "-", reps, fresh, () -> {
            TorchFiles.write(file, state, noSync);
            return null;
        }));
        rows.add(repeat(size, "Java save (fsync)", "-", reps, fresh, () -> {
            TorchFiles.write(file, state, sync);
            return null;
        }));
        rows.addAll(asyncRows(size, file, state, noSync, reps));

        System.err.printf(Locale.ROOT, "[%s] Java: loads%n", human(size));
        TorchFiles.write(file, state, sync);
        release(TorchFiles.read(file, ReadOptions.eager())); // into the page cache
        rows.add(repeat(size, "Java mmap load", "cached", reps, null,
                () -> TorchFiles.read(file, ReadOptions.mapped())));
        rows.add(repeat(size, "Java eager load", "cached", reps, null,
                () -> TorchFiles.read(file, ReadOptions.eager())));
        if (cold) {
            rows.add(repeat(size, "Java mmap load", "cold", reps, BenchSystem::dropCaches,
                    () -> TorchFiles.read(file, ReadOptions.mapped())));
            rows.add(repeat(size, "Java eager load", "cold", reps, BenchSystem::dropCaches,
                    () -> TorchFiles.read(file, ReadOptions.eager())));
        }
        BenchSystem.delete(file);
        rows.addAll(safetensorsRows(size, dir, state, reps, cold));
        release(state);
        return rows;
    }

    /**
     * The state's model (its flat tensors) as a safetensors file: the rows bench/bench.py's
     * safetensors save_file/load_file rows are measured against.
     */
    private List<BenchRow> safetensorsRows(long size, Path dir, Map<String, Object> state, int reps, boolean cold) {
        System.err.printf(Locale.ROOT, "[%s] Java: safetensors%n", human(size));
        Object model = state.get("model");
        Path file = dir.resolve("java.safetensors");
        WriteOptions noSync = WriteOptions.DEFAULT.withFsync(false);
        Runnable fresh = () -> BenchSystem.fresh(file);
        measure(() -> {
            TorchFiles.write(file, model, noSync);
            return null;
        }, fresh); // warm-up
        List<BenchRow> rows = new ArrayList<>();
        rows.add(repeat(size, "Java safetensors save", "-", reps, fresh, () -> {
            TorchFiles.write(file, model, noSync);
            return null;
        }));
        rows.add(repeat(size, "Java safetensors save (fsync)", "-", reps, fresh, () -> {
            TorchFiles.write(file, model, WriteOptions.DEFAULT);
            return null;
        }));
        TorchFiles.write(file, model, WriteOptions.DEFAULT);
        release(TorchFiles.read(file, ReadOptions.eager())); // into the page cache
        rows.add(repeat(size, "Java safetensors mmap load", "cached", reps, null,
                () -> TorchFiles.read(file, ReadOptions.mapped())));
        rows.add(repeat(size, "Java safetensors eager load", "cached", reps, null,
                () -> TorchFiles.read(file, ReadOptions.eager())));
        if (cold) {
            rows.add(repeat(size, "Java safetensors mmap load", "cold", reps, BenchSystem::dropCaches,
                    () -> TorchFiles.read(file, ReadOptions.mapped())));
            rows.add(repeat(size, "Java safetensors eager load", "cold", reps, BenchSystem::dropCaches,
                    () -> TorchFiles.read(file, ReadOptions.eager())));
        }
        BenchSystem.delete(file);
        return rows;
    }

    /**
     * Background saves with a real training step between the save and the next mutation
     * ({@link AsyncSaveBench}): how long the caller is blocked, the step's slowdown, until written.
     */
    private List<BenchRow> asyncRows(long size, Path file, Map<String, Object> state, WriteOptions options, int reps) {
        List<BenchRow> rows = new ArrayList<>();
        for (AsyncSaveBench.Result r : AsyncSaveBench.run(size, file, reps, () -> {
            BenchSystem.fresh(file);
            BenchSystem.prime(primeBytes);
        })) {
            rows.add(new BenchRow(size, r.op(), "-", r.seconds(), r.extraRss()));
        }
        return rows;
    }

    BenchRow repeat(long size, String op, String cache, int reps, Runnable before, Supplier<Object> call) {
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
        return new BenchRow(size, op, cache, seconds, extra);
    }

    /** {nanoseconds, extra peak RSS bytes} of one call; what it returns is released afterwards. */
    private long[] measure(Supplier<Object> call, Runnable before) {
        if (before != null) {
            before.run();
        }
        BenchSystem.prime(primeBytes);
        long rss = BenchSystem.status("VmRSS");
        BenchSystem.resetPeak();
        long t = System.nanoTime();
        Object result = call.get();
        long nanos = System.nanoTime() - t;
        long extra = Math.max(0, BenchSystem.status("VmHWM") - rss);
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
            m.values().forEach(JavaBench::release);
        } else if (value instanceof Collection<?> c) { // lists, sets, PyTuple
            c.forEach(JavaBench::release);
        }
    }
}
