package io.fabricckpt.cli;

import io.fabricckpt.Fabric;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Adam;
import org.bytedeco.pytorch.AdamOptions;
import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * The README's main job: a Java training loop that checkpoints every {@value #EVERY} steps with
 * {@link Fabric#save} and, when started again, resumes from the latest checkpoint with
 * {@link Fabric#load}. Each run trains {@value #STEPS_PER_RUN} steps; the files load in Python with
 * {@code torch.load} or Lightning's {@code fabric.load}.
 */
final class Demo {
    static final int EVERY = 25;
    static final int STEPS_PER_RUN = 100;

    /** torch.nn.Sequential(Linear(8, 32), ReLU(), Linear(32, 1)) in Python terms, named fc1/fc2. */
    static final class Regressor extends Module {
        final LinearImpl fc1 = register_module("fc1", new LinearImpl(8, 32));
        final LinearImpl fc2 = register_module("fc2", new LinearImpl(32, 1));

        Tensor forward(Tensor x) {
            return fc2.forward(torch.relu(fc1.forward(x)));
        }
    }

    private Demo() {}

    static void run(Path dir) {
        torch.manual_seed(0);
        Regressor model = new Regressor();
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-2));
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("optimizer", optimizer);
        state.put("step", 0L);
        Fabric fabric = new Fabric();

        Optional<Path> latest = latestCheckpoint(dir);
        if (latest.isPresent()) {
            fabric.load(latest.get(), state);
            System.out.println("resumed from " + latest.get() + " at step " + state.get("step"));
        } else {
            System.out.println("no checkpoint in " + dir + ": starting from scratch");
        }

        Tensor trueWeights = torch.arange(new org.bytedeco.pytorch.Scalar(8.0)).div(new org.bytedeco.pytorch.Scalar(8.0))
                .reshape(8, 1);
        long step = (Long) state.get("step");
        long end = step + STEPS_PER_RUN;
        while (step < end) {
            torch.manual_seed(1000 + step); // the batch depends on the step only, so a resumed run sees the same data
            Tensor x = torch.randn(64, 8);
            Tensor y = x.matmul(trueWeights);
            optimizer.zero_grad();
            Tensor loss = torch.mse_loss(model.forward(x), y);
            loss.backward();
            optimizer.step();
            step++;
            if (step % EVERY == 0) {
                state.put("step", step);
                Map<String, Object> checkpoint = new LinkedHashMap<>(state);
                checkpoint.put("loss", loss.item_double());
                Path file = dir.resolve(String.format("step-%06d.ckpt", step));
                fabric.save(file, checkpoint);
                System.out.printf("step %4d  loss %.6f  saved %s%n", step, loss.item_double(), file);
            }
        }
        System.out.println("run again to resume; in Python: torch.load('" + dir.resolve(String.format("step-%06d.ckpt", step))
                + "', weights_only=True)");
    }

    private static Optional<Path> latestCheckpoint(Path dir) {
        if (!Files.isDirectory(dir)) {
            return Optional.empty();
        }
        try (Stream<Path> files = Files.list(dir)) {
            return files.filter(p -> p.getFileName().toString().matches("step-\\d{6}\\.ckpt"))
                    .max(Comparator.comparing(p -> p.getFileName().toString()));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
