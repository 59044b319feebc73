package io.fabricckpt.dist;

import io.fabricckpt.Fabric;
import io.fabricckpt.Net;
import io.fabricckpt.core.AsyncSave;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Adam;
import org.bytedeco.pytorch.AdamOptions;
import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * One rank of the sharded (FSDP) checkpoint tests, started by {@link LocalLauncher} (JUnit's FsdpTest
 * and python-compat-tests). The group comes from the environment (RANK, WORLD_SIZE, MASTER_ADDR,
 * MASTER_PORT; FABRICCKPT_DIST_TIMEOUT seconds). Modes:
 * <ul>
 *   <li>{@code save-sharded DIR [HIDDEN]}: every rank trains the same Net(4, 8, 2) (Net(4, HIDDEN, 2)) + Adam(lr=1e-3) for one step
 *       (seed 7), shards it by rows ({@link ShardedModule#shardRows}) and saves a
 *       torch.distributed.checkpoint directory under {@code Fsdp(SHARDED)}: "model", "optimizer",
 *       "step" = 5, "hparams" = {"lr": 1e-3, "name": "fsdp"}. Prints {@code saved} and
 *       {@code files=} (the sorted names in DIR, joined by ","). DIR may be an {@code s3://} prefix.
 *   <li>{@code save-sharded-denied-on-last-rank URL}: the same to an {@code s3://} prefix, the last rank
 *       with credentials the store refuses.
 *   <li>{@code save-sharded-safetensors DIR [HIDDEN]}: the same, with DCP's SAFETENSORS serialization.
 *   <li>{@code save-full FILE [HIDDEN]}: the same state, saved under {@code Fsdp(FULL)} as one torch.save
 *       file (a path or an {@code s3://} URL). Prints {@code saved}.
 *   <li>{@code save-full-memory FILE LAYERS}: (FILE a path or an s3:// URL) a Module of LAYERS Linear(2048, 2048) (16 MiB weights),
 *       sharded by rows, saved under {@code Fsdp(FULL)}; prints {@code extra-kib=}: how far this
 *       process's peak resident memory rose above its resident memory before the save (the peak is
 *       reset first through /proc/self/clear_refs).
 *   <li>{@code save-async DIR FILE}: the same state saved by {@code saveAsync} twice, sharded to DIR and
 *       FULL to FILE, with a foreground collective meanwhile (prints {@code foreground-sum=}); once
 *       both are staged every parameter is set to NaN; both are awaited, then
 *       prints {@code written}.
 *   <li>{@code save-async-sharded DIR}: only the sharded {@code saveAsync}, awaited; prints {@code written}.
 *   <li>{@code load PATH OUT}: fresh sharded objects (seed 100 + rank, Adam(lr=0.5)) load PATH (a sharded
 *       directory or a full file) under {@code Fsdp(SHARDED)}; prints {@code step=} and
 *       {@code remainder=}, then saves the loaded "model", "optimizer" and "step" under
 *       {@code Fsdp(FULL)} to OUT (full tensors, for comparing) and prints {@code loaded}.
 *   <li>{@code exit-during-save DIR}: the last rank leaves (exit 0) right after joining; the others
 *       attempt {@code save-sharded}'s save.
 *   <li>{@code stall-during-save DIR}: the last rank sleeps forever right after joining; the others
 *       attempt {@code save-sharded}'s save.
 *   <li>{@code wait-then-save DIR FLAG}: every rank joins, prints {@code waiting}, waits until the
 *       file FLAG exists (the multi-host test cuts the link meanwhile), then attempts
 *       {@code save-sharded}'s save.
 *   <li>{@code load-plain PATH OUT}: one process, no group: a plain Net(4, 8, 2) + Adam(lr=0.5)
 *       (seed 3) loads PATH with {@code new Fabric()}, prints {@code step=} and {@code remainder=},
 *       saves to OUT with {@code new Fabric()} (index-keyed optimizer) and prints {@code loaded}.
 * </ul>
 * A failure prints {@code error: <message>} and {@code elapsed-ms=} and exits 1.
 */
public final class FsdpWorker {
    private FsdpWorker() {}

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        Workers.run(() -> {
            if (mode.equals("load-plain")) {
                loadPlain(Path.of(args[1]), Path.of(args[2]));
                return;
            }
            try (ProcessGroup group = ProcessGroup.fromEnvironment()) {
                System.out.println("joined " + group);
                switch (mode) {
                    case "save-sharded" -> saveSharded(group, args[1], Fsdp.SerializationFormat.TORCH_SAVE,
                            args.length > 2 ? Integer.parseInt(args[2]) : 8);
                    case "save-sharded-denied-on-last-rank" -> {
                        if (group.rank() == group.worldSize() - 1) { // the SDK's first credential source
                            System.setProperty("aws.accessKeyId", "fabricckpt-test");
                            System.setProperty("aws.secretAccessKey", "not-the-secret");
                        }
                        saveSharded(group, args[1], Fsdp.SerializationFormat.TORCH_SAVE, 8);
                    }
                    case "save-sharded-safetensors" -> saveSharded(group, args[1],
                            Fsdp.SerializationFormat.SAFETENSORS, args.length > 2 ? Integer.parseInt(args[2]) : 8);
                    case "save-full" -> saveFull(group, args[1], args.length > 2 ? Integer.parseInt(args[2]) : 8);
                    case "save-full-memory" -> saveFullMemory(group, args[1], Integer.parseInt(args[2])); // or s3://
                    case "load" -> load(group, args[1], Path.of(args[2])); // a path or an s3:// URL
                    case "save-async" -> saveAsync(group, Path.of(args[1]), Path.of(args[2]));
                    case "save-async-sharded" -> saveAsyncSharded(group, args[1]); // a path or an s3:// prefix
                    case "exit-during-save", "stall-during-save" -> {
                        Workers.faultOnLastRank(group, mode.startsWith("stall"));
                        saveSharded(group, Path.of(args[1]));
                    }
                    case "wait-then-save" -> {
                        System.out.println("waiting");
                        System.out.flush();
                        while (!Files.exists(Path.of(args[2]))) {
                            Thread.sleep(20);
                        }
                        saveSharded(group, Path.of(args[1]));
                    }
                    default -> throw new IllegalArgumentException("unknown mode " + mode);
                }
            }
        });
    }

    /** The state every rank saves: Net(4, 8, 2) + Adam(lr=1e-3) after one identical step, sharded by rows. */
    private static Map<String, Object> trainedState(ProcessGroup group) {
        return trainedState(group, 8);
    }

    private static Map<String, Object> trainedState(ProcessGroup group, int hidden) {
        torch.manual_seed(7); // replicated before sharding: the same on every rank
        Net model = new Net(4, hidden, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        model.trainStep(optimizer);
        ShardedModule sharded = ShardedModule.shardRows(model, group.rank(), group.worldSize(), optimizer);
        Map<String, Object> hparams = new LinkedHashMap<>();
        hparams.put("lr", 1e-3);
        hparams.put("name", "fsdp");
        Map<String, Object> state = Workers.state(sharded, optimizer, 5L);
        state.put("hparams", hparams);
        return state;
    }

    private static void saveSharded(ProcessGroup group, Path dir) throws Exception {
        saveSharded(group, dir.toString(), Fsdp.SerializationFormat.TORCH_SAVE, 8);
    }

    private static void saveSharded(ProcessGroup group, String location, Fsdp.SerializationFormat format, int hidden)
            throws Exception {
        Map<String, Object> state = trainedState(group, hidden);
        new Fabric(new Fsdp(group, Fsdp.StateDictType.SHARDED, format)).save(location, state);
        System.out.println("saved");
        if (location.startsWith("s3://")) {
            return;
        }
        Path dir = Path.of(location);
        try (Stream<Path> files = Files.list(dir)) {
            System.out.println("files=" + files.map(p -> p.getFileName().toString()).sorted()
                    .collect(Collectors.joining(",")));
        }
    }

    /**
     * {@code save-async}: the trained state saved in the background twice, sharded to DIR and FULL to
     * FILE; meanwhile a foreground collective; once both are staged every shard is overwritten with
     * NaN (which must reach neither checkpoint); then both are awaited.
     */
    private static void saveAsync(ProcessGroup group, Path dir, Path file) {
        Map<String, Object> state = trainedState(group);
        try (Fabric sharded = new Fabric(new Fsdp(group, Fsdp.StateDictType.SHARDED));
                Fabric full = new Fabric(new Fsdp(group, Fsdp.StateDictType.FULL))) {
            AsyncSave inDirectory = sharded.saveAsync(dir, state);
            AsyncSave inFile = full.saveAsync(file, state);
            System.out.println("foreground-sum=" + group.allReduceSum(group.rank() + 1)); // while the saves run
            sharded.awaitStaged();
            full.awaitStaged();
            overwriteWithNaN(((ShardedModule) state.get("model")).module());
            inDirectory.awaitWritten();
            inFile.awaitWritten();
        }
        System.out.println("written");
    }

    /** {@code save-async-sharded}: only the sharded background save of the trained state, awaited. */
    private static void saveAsyncSharded(ProcessGroup group, String dir) {
        Map<String, Object> state = trainedState(group);
        new Fabric(new Fsdp(group, Fsdp.StateDictType.SHARDED)).saveAsync(dir, state).awaitWritten();
        System.out.println("written");
    }

    /** Every parameter (this rank's shards) set to NaN in place. */
    private static void overwriteWithNaN(Module model) {
        try (NoGradGuard noGrad = new NoGradGuard()) {
            for (Tensor p : model.parameters().get()) {
                p.fill_(new Scalar(Double.NaN));
            }
        }
    }

    private static void saveFull(ProcessGroup group, String location, int hidden) {
        Map<String, Object> state = trainedState(group, hidden);
        new Fabric(new Fsdp(group, Fsdp.StateDictType.FULL)).save(location, state);
        System.out.println("saved");
    }

    private static void saveFullMemory(ProcessGroup group, String location, int layers) throws Exception {
        torch.manual_seed(11); // the same layers on every rank, and in every run
        Module model = new Module();
        for (int i = 0; i < layers; i++) {
            model.register_module("l" + i, new LinearImpl(2048, 2048));
        }
        ShardedModule sharded = ShardedModule.shardRows(model, group.rank(), group.worldSize());
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", sharded);
        state.put("step", 1L);
        Fabric fabric = new Fabric(new Fsdp(group, Fsdp.StateDictType.FULL));
        if (location.startsWith("s3://")) {
            fabric.save(location, state); // warm-up: the SDK's classes and connections, the Java heap's growth
        }
        System.gc();
        group.barrier();
        Files.writeString(Path.of("/proc/self/clear_refs"), "5"); // VmHWM := VmRSS
        long before = statusKib("VmRSS");
        fabric.save(location, state);
        long peak = statusKib("VmHWM");
        System.out.println("rss-before-kib=" + before + " hwm-after-kib=" + peak + " heap-committed-kib="
                + Runtime.getRuntime().totalMemory() / 1024);
        System.out.println("extra-kib=" + (peak - before));
    }

    /** A "Name:   123 kB" line of /proc/self/status, in KiB. */
    private static long statusKib(String name) throws java.io.IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith(name + ":")) {
                return Long.parseLong(line.substring(name.length() + 1).replace("kB", "").trim());
            }
        }
        throw new IllegalStateException("no " + name + " in /proc/self/status");
    }

    private static void load(ProcessGroup group, String path, Path out) {
        torch.manual_seed(100 + group.rank()); // different on every rank: only the load makes them agree
        Net model = new Net(4, 8, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(0.5));
        ShardedModule sharded = ShardedModule.shardRows(model, group.rank(), group.worldSize(), optimizer);
        Map<String, Object> state = Workers.state(sharded, optimizer, 0L);
        Map<String, Object> remainder = new Fabric(new Fsdp(group, Fsdp.StateDictType.SHARDED)).load(path, state);
        System.out.println("step=" + state.get("step"));
        System.out.println("remainder=" + remainder.keySet());
        if (path.startsWith("s3://")) {
            System.out.println("s3-bytes=" + io.fabricckpt.internal.io.s3.S3Objects.shared().bytesDownloaded());
            System.out.println("s3-gets=" + io.fabricckpt.internal.io.s3.S3Objects.shared().getRequests());
        }
        Map<String, Object> loaded = Workers.state(sharded, optimizer, (Long) state.get("step"));
        new Fabric(new Fsdp(group, Fsdp.StateDictType.FULL)).save(out, loaded);
        System.out.println("loaded");
    }

    /** {@code load-plain}: a single process, no group, a plain (unsharded) module. */
    static void loadPlain(Path path, Path out) {
        torch.manual_seed(3);
        Net model = new Net(4, 8, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(0.5));
        Map<String, Object> state = Workers.state(model, optimizer, 0L);
        Fabric fabric = new Fabric();
        Map<String, Object> remainder = fabric.load(path, state);
        System.out.println("step=" + state.get("step"));
        System.out.println("remainder=" + remainder.keySet());
        Map<String, Object> loaded = Workers.state(model, optimizer, (Long) state.get("step"));
        fabric.save(out, loaded);
        System.out.println("loaded");
    }
}
