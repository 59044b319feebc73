package io.fabricckpt.dist;

import io.fabricckpt.Fabric;
import io.fabricckpt.Net;
import io.fabricckpt.StateDicts;
import io.fabricckpt.core.AsyncSave;
import io.fabricckpt.core.Parameter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Adam;
import org.bytedeco.pytorch.AdamOptions;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * One rank of the multi-process tests, started by {@link LocalLauncher} (JUnit's DdpTest and
 * python-compat-tests/test_ddp.py). The group comes from the environment (RANK, WORLD_SIZE,
 * MASTER_ADDR, MASTER_PORT; FABRICCKPT_DIST_TIMEOUT seconds). Modes:
 * <ul>
 *   <li>{@code save DIR}: every rank trains the same Net(4, 8, 2) + Adam for one step, saves
 *       DIR/ddp.ckpt under DDP, then reloads it into fresh objects and prints the files in DIR and a
 *       digest of what it loaded ({@code files=}, {@code digest=}, {@code restored-equal=}).
 *   <li>{@code load PATH}: every rank loads a checkpoint ("model": Net(4, 8, 2), "optimizer": Adam,
 *       "step") into fresh objects and prints the digest.
 *   <li>{@code save-async DIR}: as {@code save}, but through {@code saveAsync} to DIR/ddp-async.ckpt,
 *       with a foreground collective while it runs ({@code foreground-sum=}) and a training step
 *       through {@code fabric.step} right after it; prints {@code written}, then as {@code save}
 *       whether the file holds the state before that step ({@code restored-equal=}) and whether the
 *       step changed the model ({@code step-changed=}).
 *   <li>{@code save-async-exit DIR}: {@code saveAsync} of a Net(256, 1024, 8) (seed 7) to
 *       DIR/ddp-exit.ckpt, then {@code System.exit(0)} at once on every rank.
 *   <li>{@code exit-before-save DIR}: the last rank leaves (exit 0) right after joining; the others save.
 *   <li>{@code stall-before-save DIR}: the last rank sleeps forever after joining; the others save.
 * </ul>
 * A failure prints {@code error: <message>} and {@code elapsed-ms=} and exits 1.
 */
public final class DdpWorker {
    private DdpWorker() {}

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        Path target = Path.of(args[1]);
        Workers.run(() -> {
            try (ProcessGroup group = ProcessGroup.fromEnvironment()) {
                System.out.println("joined " + group);
                Fabric fabric = new Fabric(new Ddp(group));
                switch (mode) {
                    case "save" -> save(fabric, target);
                    case "load" -> load(fabric, target);
                    case "save-async" -> saveAsync(fabric, group, target);
                    case "save-async-exit" -> {
                        torch.manual_seed(7);
                        Net model = new Net(256, 1024, 8); // big enough that the save is still running
                        Map<String, Object> state = Workers.state(model, new Adam(model.parameters(),
                                new AdamOptions(1e-3)), 5L);
                        fabric.saveAsync(target.resolve("ddp-exit.ckpt"), state);
                        System.out.println("exiting");
                        System.out.flush();
                        System.exit(0); // the shutdown hook must finish the save on every rank
                    }
                    case "exit-before-save", "stall-before-save" -> {
                        Workers.faultOnLastRank(group, mode.startsWith("stall"));
                        save(fabric, target);
                    }
                    default -> throw new IllegalArgumentException("unknown mode " + mode);
                }
            }
        });
    }

    private static void save(Fabric fabric, Path dir) throws Exception {
        torch.manual_seed(7); // replicated state: the same on every rank
        Net model = new Net(4, 8, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        model.trainStep(optimizer);
        Map<String, Object> state = Workers.state(model, optimizer, 5L);
        state.put("hparams", Map.of("lr", 1e-3, "name", "ddp"));
        Path path = dir.resolve("ddp.ckpt");
        fabric.save(path, state);
        String before = digest(model, optimizer);
        // every rank can load: into fresh objects, then compare
        torch.manual_seed(99);
        Net restored = new Net(4, 8, 2);
        Adam restoredOptimizer = new Adam(restored.parameters(), new AdamOptions(0.5));
        Map<String, Object> into = Workers.state(restored, restoredOptimizer, 0L);
        fabric.load(path, into);
        try (Stream<Path> files = Files.list(dir)) {
            System.out.println("files=" + files.map(p -> p.getFileName().toString()).sorted().toList());
        }
        String after = digest(restored, restoredOptimizer);
        System.out.println("digest=" + after + ";step=" + into.get("step"));
        System.out.println("restored-equal=" + before.equals(after));
    }

    private static void saveAsync(Fabric fabric, ProcessGroup group, Path dir) {
        torch.manual_seed(7); // replicated state: the same on every rank
        Net model = new Net(4, 8, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        model.trainStep(optimizer);
        Map<String, Object> state = Workers.state(model, optimizer, 5L);
        String before = digest(model, optimizer);
        Path path = dir.resolve("ddp-async.ckpt");
        model.forwardBackward(optimizer); // gradients first: the step below changes every parameter
        AsyncSave save = fabric.saveAsync(path, state);
        System.out.println("foreground-sum=" + group.allReduceSum(group.rank() + 1)); // while the save runs
        fabric.step(optimizer); // must wait for the staging: this step never reaches the file
        System.out.println("step-changed=" + !before.equals(digest(model, optimizer)));
        save.awaitWritten();
        System.out.println("written");
        torch.manual_seed(99);
        Net restored = new Net(4, 8, 2);
        Adam restoredOptimizer = new Adam(restored.parameters(), new AdamOptions(0.5));
        Map<String, Object> into = Workers.state(restored, restoredOptimizer, 0L);
        fabric.load(path, into);
        System.out.println("restored-equal=" + before.equals(digest(restored, restoredOptimizer)));
    }

    private static void load(Fabric fabric, Path path) {
        torch.manual_seed(99);
        Net model = new Net(4, 8, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(0.5));
        Map<String, Object> state = Workers.state(model, optimizer, 0L);
        Map<String, Object> remainder = fabric.load(path, state);
        System.out.println("digest=" + digest(model, optimizer) + ";step=" + state.get("step"));
        System.out.println("remainder=" + remainder.keySet());
    }

    /**
     * Every tensor of the model's and the optimizer's state dicts as "path:sum", sorted; maps and
     * lists are walked, other values skipped (python-compat-tests/test_ddp.py computes the same).
     */
    static String digest(Net model, Adam optimizer) {
        List<String> parts = new ArrayList<>();
        walk("model", StateDicts.of(model), parts);
        walk("optimizer", StateDicts.of(optimizer), parts);
        parts.sort(null);
        return String.join(",", parts);
    }

    private static void walk(String path, Object value, List<String> out) {
        if (value instanceof Map<?, ?> map) {
            map.forEach((k, v) -> walk(path + "." + k, v, out));
        } else if (value instanceof List<?> list) {
            for (int i = 0; i < list.size(); i++) {
                walk(path + "." + i, list.get(i), out);
            }
        } else if (value instanceof Tensor t) {
            out.add(path + ":" + sum(t));
        } else if (value instanceof Parameter p) {
            out.add(path + ":" + sum(p.data()));
        }
    }

    static String sum(Tensor t) {
        return String.format("%.6e", t.detach().reshape(-1).to(torch.ScalarType.Double).sum().item_double());
    }
}
