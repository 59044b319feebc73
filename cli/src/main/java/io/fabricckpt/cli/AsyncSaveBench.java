package io.fabricckpt.cli;

import io.fabricckpt.core.AsyncSave;
import io.fabricckpt.Fabric;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Adam;
import org.bytedeco.pytorch.AdamOptions;
import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * The async rows of {@code fabric-ckpt bench}: how long a training loop is held up by one checkpoint
 * per step, with a real step around it. The state is a preset model (an MLP of 1024 x 1024 linear
 * layers) and its Adam optimizer, sized so that model and optimizer state together are the bench
 * size. Each run is one training iteration in Lightning's order: save, forward and backward of a
 * batch of 8, then the optimizer step, which must wait for the save's staging.
 *
 * <ul>
 *   <li>sync: {@code fabric.save} (durable: fsync) at the start of the iteration, all of it blocking;
 *   <li>async blocked: the time inside {@code saveAsync} plus the wait for {@code staged()} before the
 *       step ({@link Fabric#step}); the copy overlaps the forward and backward pass;
 *   <li>async slowdown: the whole iteration minus the same iteration without a save, measured just
 *       before: what the caller really loses, the copy's competition for cores and memory included;
 *   <li>until written: saveAsync until {@code written()} (durable: fsync), with its extra peak RSS.
 * </ul>
 */
final class AsyncSaveBench {
    private static final int WIDTH = 1024;
    private static final int BATCH = 8;

    /** One measured quantity, a figure per run. */
    record Result(String op, double[] seconds, long extraRss) {}

    private AsyncSaveBench() {}

    /** A plain MLP: {@code depth} linear layers of {@code WIDTH} with ReLU between them. */
    private static final class Mlp extends Module {
        private final List<LinearImpl> layers = new ArrayList<>();

        Mlp(int depth) {
            for (int i = 0; i < depth; i++) {
                layers.add(register_module("layer" + i, new LinearImpl(WIDTH, WIDTH)));
            }
        }

        /** Forward and backward of one random batch: reads the parameters, writes their gradients. */
        void forwardBackward(Adam optimizer) {
            try (PointerScope scope = new PointerScope()) {
                optimizer.zero_grad();
                Tensor x = torch.randn(BATCH, WIDTH);
                for (LinearImpl layer : layers) {
                    x = torch.relu(layer.forward(x));
                }
                x.pow(new Scalar(2)).mean().backward();
            }
        }

        void step(Adam optimizer) {
            try (PointerScope scope = new PointerScope()) {
                optimizer.step();
            }
        }
    }

    /**
     * Measures {@code reps} iterations of each kind; {@code before} runs before each timed iteration
     * (removes the target, syncs, primes memory).
     */
    static List<Result> run(long size, Path file, int reps, Runnable before) {
        // Model and Adam state: 3 floats per parameter (weight, exp_avg, exp_avg_sq).
        long perLayer = 3L * 4 * ((long) WIDTH * WIDTH + WIDTH);
        int depth = (int) Math.max(1, Math.round((double) size / perLayer));
        System.err.printf(Locale.ROOT, "[%s] Java async: %d linear layers of %d with Adam, training steps%n",
                BenchSystem.human(size), depth, WIDTH);
        Mlp model = new Mlp(depth);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("optimizer", optimizer);
        state.put("step", 0L);
        double[] plain = new double[reps];
        double[] sync = new double[reps];
        double[] blocked = new double[reps];
        double[] slowdown = new double[reps];
        double[] written = new double[reps];
        long syncExtra = 0;
        long asyncExtra = 0;
        try (Fabric fabric = new Fabric()) {
            for (int warm = 0; warm < 2; warm++) { // Adam's state exists after the first step
                model.forwardBackward(optimizer);
                model.step(optimizer);
            }
            fabric.saveAsync(file, state).written().join(); // warm-up of the save paths
            fabric.save(file, state);
            for (int r = 0; r < reps; r++) {
                before.run();
                long t0 = System.nanoTime();
                model.forwardBackward(optimizer);
                model.step(optimizer);
                plain[r] = seconds(System.nanoTime() - t0);

                before.run();
                long rss = status("VmRSS");
                resetPeak();
                t0 = System.nanoTime();
                fabric.save(file, state);
                sync[r] = seconds(System.nanoTime() - t0);
                syncExtra = Math.max(syncExtra, status("VmHWM") - rss);
                model.forwardBackward(optimizer);
                model.step(optimizer);

                before.run();
                rss = status("VmRSS");
                resetPeak();
                t0 = System.nanoTime();
                AsyncSave save = fabric.saveAsync(file, state);
                long t1 = System.nanoTime();
                model.forwardBackward(optimizer);
                long t2 = System.nanoTime();
                fabric.awaitStaged();
                long t3 = System.nanoTime();
                model.step(optimizer);
                long t4 = System.nanoTime();
                save.written().join();
                long t5 = System.nanoTime();
                asyncExtra = Math.max(asyncExtra, status("VmHWM") - rss);
                blocked[r] = seconds((t1 - t0) + (t3 - t2));
                slowdown[r] = seconds(t4 - t0) - plain[r]; // may be slightly negative: noise
                written[r] = seconds(t5 - t0);
            }
        }
        model.close();
        return List.of(
                new Result("train step (no save)", plain, 0),
                new Result("Java sync save: step blocked", sync, syncExtra),
                new Result("Java async save: step blocked", blocked, asyncExtra),
                new Result("Java async save: step slowdown", slowdown, asyncExtra),
                new Result("Java async save: until written", written, asyncExtra));
    }

    private static double seconds(long nanos) {
        return nanos / 1e9;
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
}
