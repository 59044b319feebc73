package io.fabricckpt.dist;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.Fabric;
import io.fabricckpt.Net;
import io.fabricckpt.StateDicts;
import io.fabricckpt.TorchFiles;
import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.Parameter;
import io.fabricckpt.core.ReadOptions;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Adam;
import org.bytedeco.pytorch.AdamOptions;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Sharded (FSDP) checkpoints with real JVMs (FsdpWorker) on loopback: a torch.distributed.checkpoint
 * directory saved by 2 ranks loads on 2 ranks, on 1 rank and in a plain single process to the same
 * tensors; a full (FULL state dict) save equals the directory consolidated by {@code convert}; a rank
 * that leaves or stalls makes the save fail and the previous checkpoint stays; a corrupt {@code .metadata} is named.
 * The sharded directory is saved once and shared by the tests (every launch of 2 JVMs costs seconds).
 */
class FsdpTest {
    private static final List<String> SHARDED_FILES = List.of(".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt");
    private static final List<String> PARAMETERS = List.of("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias");

    @TempDir
    static Path shared;

    private static Path shardedDir;

    private static Optional<String> line(LocalLauncher.Result r, int rank, String prefix) {
        return r.output(rank).stream().filter(l -> l.startsWith(prefix)).map(l -> l.substring(prefix.length()))
                .findFirst();
    }

    private static LocalLauncher launcher(int n, String distTimeoutSeconds) {
        return new LocalLauncher(n).timeout(Duration.ofSeconds(120)).failureGrace(Duration.ofSeconds(30))
                .environment(Map.of("FABRICCKPT_DIST_TIMEOUT", distTimeoutSeconds));
    }

    /** Launches FsdpWorker and prints how long the launch took. */
    private static LocalLauncher.Result launch(LocalLauncher launcher, String... args) throws Exception {
        long start = System.nanoTime();
        LocalLauncher.Result r = launcher.launch(FsdpWorker.class.getName(), args);
        System.out.println("launch " + Arrays.toString(args) + ": " + r.describe() + " in "
                + (System.nanoTime() - start) / 1_000_000 + " ms");
        return r;
    }

    private static List<String> list(Path dir) throws Exception {
        try (Stream<Path> files = Files.list(dir)) {
            return files.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    /** The directory that 2 ranks saved with save-sharded (saved once, on first use, and checked then). */
    private static synchronized Path shardedDir() throws Exception {
        if (shardedDir == null) {
            Path dir = shared.resolve("sharded");
            LocalLauncher.Result r = launch(launcher(2, "60"), "save-sharded", dir.toString());
            assertTrue(r.succeeded(), r.describe());
            for (int rank = 0; rank < 2; rank++) {
                assertTrue(r.output(rank).contains("saved"), "rank " + rank + ": " + r.output(rank));
                assertEquals(Optional.of(String.join(",", SHARDED_FILES)), line(r, rank, "files="), "rank " + rank);
            }
            assertEquals(SHARDED_FILES, list(dir), "no temporary files are left");
            shardedDir = dir;
        }
        return shardedDir;
    }

    /** What save-sharded trained, recomputed here: the model's and the optimizer's state dicts. */
    private static Map<String, Object> reference() {
        torch.manual_seed(7);
        Net model = new Net(4, 8, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        model.trainStep(optimizer);
        return Map.of("model", StateDicts.of(model), "optimizer", StateDicts.of(optimizer));
    }

    @SuppressWarnings("unchecked")
    private static Map<Object, Object> read(Path path) {
        return (Map<Object, Object>) TorchFiles.read(path, ReadOptions.eager());
    }

    @SuppressWarnings("unchecked")
    private static Map<Object, Object> map(Object value) {
        assertTrue(value instanceof Map, () -> "a map, not " + value);
        return (Map<Object, Object>) value;
    }

    private static long[] shape(Tensor t) {
        long[] out = new long[(int) t.dim()];
        for (int i = 0; i < out.length; i++) {
            out[i] = t.size(i);
        }
        return out;
    }

    /** Equal trees: maps with the same keys, lists, tensors of the same dtype, shape and values, equal leaves. */
    private static void assertSameTree(String path, Object expected, Object actual) {
        if (expected instanceof Parameter p) {
            expected = p.data();
        }
        if (actual instanceof Parameter p) {
            actual = p.data();
        }
        if (expected instanceof Tensor e) {
            assertTrue(actual instanceof Tensor, path + ": a tensor, not " + actual);
            Tensor a = (Tensor) actual;
            assertEquals(e.scalar_type().intern(), a.scalar_type().intern(), path);
            assertEquals(Arrays.toString(shape(e)), Arrays.toString(shape(a)), path);
            assertTrue(torch.equal(e.contiguous(), a.contiguous()), path + ": values differ");
        } else if (expected instanceof Map<?, ?> e) {
            assertTrue(actual instanceof Map, path + ": a map, not " + actual);
            Map<?, ?> a = (Map<?, ?>) actual;
            assertEquals(e.keySet(), a.keySet(), path + ": keys");
            for (Map.Entry<?, ?> entry : e.entrySet()) {
                assertSameTree(path + "." + entry.getKey(), entry.getValue(), a.get(entry.getKey()));
            }
        } else if (expected instanceof List<?> e) {
            assertTrue(actual instanceof List, path + ": a list, not " + actual);
            List<?> a = (List<?>) actual;
            assertEquals(e.size(), a.size(), path + ": length");
            for (int i = 0; i < e.size(); i++) {
                assertSameTree(path + "." + i, e.get(i), a.get(i));
            }
        } else {
            assertEquals(expected, actual, path);
        }
    }

    /**
     * An optimizer state dict keyed by position instead of by parameter id (index or name): entry j of
     * group g is "g.j" -> the state of the group's j-th parameter; "g" -> the group without "params".
     * So Python's index-keyed layout and FSDP's name-keyed one compare directly.
     */
    private static Map<String, Object> byPosition(Object optimizer) {
        Map<Object, Object> o = map(optimizer);
        Map<Object, Object> state = map(o.get("state"));
        List<?> groups = (List<?>) o.get("param_groups");
        assertNotNull(groups, "param_groups");
        Map<String, Object> out = new LinkedHashMap<>();
        List<Object> seen = new ArrayList<>();
        for (int g = 0; g < groups.size(); g++) {
            Map<Object, Object> group = new LinkedHashMap<>(map(groups.get(g)));
            List<?> params = (List<?>) group.remove("params");
            out.put(Integer.toString(g), group);
            for (int j = 0; j < params.size(); j++) {
                out.put(g + "." + j, state.getOrDefault(params.get(j), "absent"));
                seen.add(params.get(j));
            }
        }
        assertTrue(seen.containsAll(state.keySet()), "state of parameters in no group: " + state.keySet());
        return out;
    }

    private static List<?> params(Object optimizer) {
        return (List<?>) map(((List<?>) map(optimizer).get("param_groups")).get(0)).get("params");
    }

    private static void assertLoaded(LocalLauncher.Result r, int ranks) {
        assertTrue(r.succeeded(), r.describe());
        for (int rank = 0; rank < ranks; rank++) {
            assertEquals(Optional.of("5"), line(r, rank, "step="), "rank " + rank + ": " + r.output(rank));
            assertEquals(Optional.of("[hparams]"), line(r, rank, "remainder="), "rank " + rank);
            assertTrue(r.output(rank).contains("loaded"), "rank " + rank);
        }
    }

    /** Runs FsdpWorker's load-plain in this JVM; returns what it printed. */
    private static String loadPlain(Path path, Path out) {
        PrintStream old = System.out;
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        System.setOut(new PrintStream(bytes, true, StandardCharsets.UTF_8));
        try {
            FsdpWorker.loadPlain(path, out);
        } finally {
            System.setOut(old);
        }
        String printed = bytes.toString(StandardCharsets.UTF_8);
        System.out.print(printed);
        return printed;
    }

    /** Saved by 2 ranks; loaded by 2 ranks, by 1 rank and by a plain single process: the same tensors as trained. */
    @Test
    void shardedDirectoryLoadsOnAnyWorldSizeAndInOneProcess() throws Exception {
        Path dir = shardedDir();
        Path out2 = shared.resolve("loaded-by-2.ckpt");
        Path out1 = shared.resolve("loaded-by-1.ckpt");
        Path out0 = shared.resolve("loaded-plain.ckpt");
        assertLoaded(launch(launcher(2, "60"), "load", dir.toString(), out2.toString()), 2);
        assertLoaded(launch(launcher(1, "60"), "load", dir.toString(), out1.toString()), 1);
        String printed = loadPlain(dir, out0);
        assertTrue(printed.contains("step=5\n") && printed.contains("remainder=[hparams]\n"), printed);

        Map<Object, Object> byTwo = read(out2);
        Map<Object, Object> byOne = read(out1);
        Map<Object, Object> plain = read(out0);
        assertEquals(List.of("model", "optimizer", "step"), List.copyOf(byTwo.keySet()));
        assertEquals(5L, byTwo.get("step"));
        assertSameTree("loaded-by-1 vs loaded-by-2", byTwo, byOne);
        assertEquals(PARAMETERS, List.copyOf(map(byTwo.get("model")).keySet()));
        assertEquals(PARAMETERS, params(byTwo.get("optimizer")), "FULL optimizer state is keyed by name");
        assertEquals(List.of(0L, 1L, 2L, 3L), params(plain.get("optimizer")));
        assertEquals(5L, plain.get("step"));

        Map<String, Object> trained = reference();
        assertSameTree("model (loaded-by-2 vs trained)", trained.get("model"), byTwo.get("model"));
        assertSameTree("model (plain vs trained)", trained.get("model"), plain.get("model"));
        assertSameTree("optimizer (loaded-by-2 vs trained)", byPosition(trained.get("optimizer")),
                byPosition(byTwo.get("optimizer")));
        assertSameTree("optimizer (plain vs trained)", byPosition(trained.get("optimizer")),
                byPosition(plain.get("optimizer")));
    }

    /** FULL: rank 0 writes one file, equal to the sharded directory consolidated by {@link TorchFiles#convert} ({@code fabric-ckpt convert}). */
    @Test
    void fullSaveEqualsTheConvertedShardedDirectory() throws Exception {
        Path dir = shardedDir();
        Path fullDir = Files.createDirectories(shared.resolve("full"));
        Path full = fullDir.resolve("full.ckpt");
        LocalLauncher.Result r = launch(launcher(2, "60"), "save-full", full.toString());
        assertTrue(r.succeeded(), r.describe());
        assertTrue(r.output(0).contains("saved") && r.output(1).contains("saved"), r.output(0) + " " + r.output(1));
        assertEquals(List.of("full.ckpt"), list(fullDir), "one file, no temporary files");

        Path converted = shared.resolve("converted.ckpt");
        TorchFiles.convert(dir, converted); // what `fabric-ckpt convert DIR FILE` runs

        Map<Object, Object> file = read(full);
        Map<Object, Object> consolidated = read(converted);
        assertEquals(List.of("model", "optimizer", "step", "hparams"), List.copyOf(file.keySet()));
        assertEquals(5L, file.get("step"));
        assertEquals(Map.of("lr", 1e-3, "name", "fsdp"), file.get("hparams"));
        assertEquals(PARAMETERS, List.copyOf(map(file.get("model")).keySet()));
        assertEquals(PARAMETERS, params(file.get("optimizer")));

        assertSameTree("model (full vs converted)", file.get("model"), consolidated.get("model"));
        assertSameTree("optimizer state (full vs converted)", map(file.get("optimizer")).get("state"),
                map(consolidated.get("optimizer")).get("state"));
        assertSameTree("optimizer (full vs converted)", byPosition(file.get("optimizer")),
                byPosition(consolidated.get("optimizer")));
        // as Lightning's consolidation: meta.pt's values come along
        assertEquals(5L, consolidated.get("step"));
        assertEquals(Map.of("lr", 1e-3, "name", "fsdp"), consolidated.get("hparams"));

        Map<String, Object> trained = reference();
        assertSameTree("model (full vs trained)", trained.get("model"), file.get("model"));
        assertSameTree("optimizer (full vs trained)", byPosition(trained.get("optimizer")),
                byPosition(file.get("optimizer")));

        // The full file loads into sharded models: each rank keeps its slice, and gathered again they are whole.
        Path reloaded = shared.resolve("full-reloaded.ckpt");
        assertLoaded(launch(launcher(2, "60"), "load", full.toString(), reloaded.toString()), 2);
        Map<Object, Object> again = read(reloaded);
        assertSameTree("model (full -> sharded -> full)", file.get("model"), again.get("model"));
        assertSameTree("optimizer (full -> sharded -> full)", byPosition(file.get("optimizer")),
                byPosition(again.get("optimizer")));
    }

    /**
     * saveAsync under Fsdp, sharded and full, with a foreground collective while they run: the directory
     * holds the foreground save's bytes (its shard files and meta.pt identical, consolidated equal), the file holds the trained state, and the NaN written
     * into every shard once both were staged reaches neither.
     */
    @Test
    void backgroundSavesEqualForegroundOnesAndLaterChangesNeverReachThem() throws Exception {
        Path dir = shardedDir();
        Path asyncDir = shared.resolve("async-sharded");
        Path asyncFileDir = Files.createDirectories(shared.resolve("async-full"));
        Path asyncFile = asyncFileDir.resolve("full.ckpt");
        LocalLauncher.Result r = launch(launcher(2, "60"), "save-async", asyncDir.toString(), asyncFile.toString());
        assertTrue(r.succeeded(), r.describe());
        for (int rank = 0; rank < 2; rank++) {
            assertEquals(Optional.of("3"), line(r, rank, "foreground-sum="), "rank " + rank + ": " + r.output(rank));
            assertTrue(r.output(rank).contains("written"), "rank " + rank + ": " + r.output(rank));
        }
        assertEquals(SHARDED_FILES, list(asyncDir), "no temporary files are left");
        for (String name : SHARDED_FILES) { // .metadata names its directory (DCP's checkpoint_id): compared below
            if (!name.equals(".metadata")) {
                assertArrayEquals(Files.readAllBytes(dir.resolve(name)), Files.readAllBytes(asyncDir.resolve(name)), name);
            }
        }
        Path foreground = shared.resolve("async-reference.ckpt");
        Path background = shared.resolve("async-converted.ckpt");
        TorchFiles.convert(dir, foreground);
        TorchFiles.convert(asyncDir, background);
        assertSameTree("background directory vs foreground directory", read(foreground), read(background));
        assertEquals(List.of("full.ckpt"), list(asyncFileDir));
        Map<Object, Object> file = read(asyncFile);
        Map<String, Object> trained = reference();
        assertSameTree("model (background full vs trained)", trained.get("model"), file.get("model"));
        assertSameTree("optimizer (background full vs trained)", byPosition(trained.get("optimizer")),
                byPosition(file.get("optimizer")));
        assertEquals(5L, file.get("step"));
    }

    /**
     * A disk error on one rank during a background sharded save fails written() on every rank, typed as
     * the foreground save's failure, and the previous checkpoint stays whole.
     */
    @Test
    void aDiskErrorOnOneRankFailsEveryRanksBackgroundSave() throws Exception {
        LocalLauncher.Result r = saveWithDiskErrorOnRankOne("save-async-sharded", "async-disk-fault");
        String type0 = line(r, 0, "error-type: ").orElseThrow(() -> new AssertionError(r.output(0)));
        assertTrue(type0.startsWith("DistributedException rank=0"), type0);
    }

    /**
     * FULL is streamed: rank 0 never holds a whole copy of the state. 16 layers of 16 MiB (256 MiB
     * whole, 128 MiB per rank): rank 0's peak resident memory during the save stays within 64 MiB plus
     * the largest tensor above what it held before (gathering it whole would add 256 MiB).
     */
    @Test
    void aFullSaveHoldsOneWholeTensorAtATimeOnRankZero() throws Exception {
        Path file = shared.resolve("memory").resolve("full.ckpt");
        // A fixed mmap threshold: freed tensors go back to the system instead of staying resident in
        // malloc's pool (glibc raises the threshold after the first large free), so RSS is live memory.
        LocalLauncher.Result r = launch(launcher(2, "120").environment(Map.of("MALLOC_MMAP_THRESHOLD_", "1048576")),
                "save-full-memory", file.toString(), "16");
        assertTrue(r.succeeded(), r.describe());
        long extraKib = Long.parseLong(line(r, 0, "extra-kib=").orElseThrow(() -> new AssertionError(r.output(0))));
        System.out.println("rank 0 extra peak during the full save: " + extraKib / 1024 + " MiB ("
                + line(r, 0, "rss-before-kib=").orElse("") + ")");
        long largestKib = 16L << 10;
        assertTrue(extraKib < (64L << 10) + largestKib, "rank 0's peak rose by " + extraKib + " KiB");
        assertTrue(Files.size(file) > 256L << 20, "the file holds every whole tensor");
        System.out.println(io.fabricckpt.TorchFiles.verify(file)); // throws unless every record's CRC-32 holds
        Map<Object, Object> model = map(read(file).get("model"));
        assertEquals(32, model.size(), "weights and biases of 16 layers: " + model.keySet());
    }

    /**
     * A disk error on rank 0 while it writes the streamed full file (EIO on its pwrites) fails every
     * rank, typed, and leaves the previous file as it was.
     */
    @Test
    void aDiskErrorDuringAFullSaveFailsEveryRankAndKeepsThePreviousFile() throws Exception {
        String shim = System.getenv("FABRICCKPT_IO_FAULT_SHIM");
        assertTrue(shim != null && Files.exists(Path.of(shim)), "the fault library is missing: " + shim);
        Path dir = Files.createDirectories(shared.resolve("full-fault"));
        Path file = dir.resolve("full.ckpt");
        assertTrue(launch(launcher(2, "60"), "save-full-memory", file.toString(), "1").succeeded());
        byte[] previous = Files.readAllBytes(file);
        LocalLauncher launcher = launcher(2, "30").environment(Map.of("FABRICCKPT_DIST_TIMEOUT", "30",
                "LD_PRELOAD", shim, "FABRICCKPT_FAULT", "pwrite:EIO:0", "FABRICCKPT_FAULT_RANK", "0"));
        LocalLauncher.Result r = launch(launcher, "save-full-memory", file.toString(), "2");
        assertEquals(List.of(1, 1), r.exitCodes(), r.describe());
        String error0 = line(r, 0, "error: ").orElseThrow(() -> new AssertionError(r.output(0)));
        assertTrue(error0.contains("Input/output error"), error0);
        assertEquals("CheckpointStorageException", line(r, 0, "error-type: ").orElseThrow());
        String type1 = line(r, 1, "error-type: ").orElseThrow(() -> new AssertionError(r.output(1)));
        assertTrue(type1.startsWith("DistributedException rank=1"), type1);
        assertEquals(List.of("full.ckpt"), list(dir), "no temporary file left");
        assertArrayEquals(previous, Files.readAllBytes(file), "the previous file is unchanged");
    }

    /** A previous 2-JVM sharded checkpoint in {@code dir}, as the fault tests save over one. */
    private String previousCheckpoint(Path dir) throws Exception {
        LocalLauncher.Result saved = launch(launcher(2, "60"), "save-sharded", dir.toString());
        assertTrue(saved.succeeded(), saved.describe());
        return io.fabricckpt.TorchFiles.verify(dir);
    }

    /** After a failed save: the previous checkpoint, whole, and nothing left beside it. */
    private void assertPreviousCheckpointKept(Path dir, String verified) throws Exception {
        assertEquals(SHARDED_FILES, list(dir));
        assertEquals(verified, io.fabricckpt.TorchFiles.verify(dir));
        try (var siblings = Files.list(dir.getParent())) {
            List<String> left = siblings.map(p -> p.getFileName().toString())
                    .filter(n -> n.startsWith("." + dir.getFileName() + ".tmp-")).toList();
            // rank 0 removes its new directory when the save fails
            assertEquals(List.of(), left);
        }
    }

    /**
     * A rank that leaves before the sharded save makes rank 0 fail, naming itself; the previous
     * checkpoint in the directory stays whole.
     */
    @Test
    void aRankThatLeavesDuringASaveKeepsThePreviousCheckpoint() throws Exception {
        Path dir = shared.resolve("fault");
        String verified = previousCheckpoint(dir);
        LocalLauncher.Result r = launch(launcher(2, "10"), "exit-during-save", dir.toString());
        assertFalse(r.succeeded());
        assertEquals(List.of(1, 0), r.exitCodes(), r.describe());
        String error = line(r, 0, "error: ").orElseThrow(() -> new AssertionError(r.output(0)));
        assertTrue(error.contains("rank 0 of 2"), error);
        assertTrue(error.contains("timed out after 10 s") || error.contains("another rank is gone"), error);
        String type = line(r, 0, "error-type: ").orElseThrow(() -> new AssertionError(r.output(0)));
        assertTrue(type.startsWith("DistributedException rank=0 operation="), type); // a rank that died, typed
        long elapsed = Long.parseLong(line(r, 0, "elapsed-ms=").orElseThrow());
        assertTrue(elapsed < 10_000 + 20_000, "failed after " + elapsed + " ms");
        assertPreviousCheckpointKept(dir, verified);
    }

    /** A rank that stalls makes the others fail once the group's timeout passes; the previous checkpoint stays. */
    @Test
    void aRankThatStallsFailsTheSaveWithinTheTimeout() throws Exception {
        Path dir = shared.resolve("stall");
        String verified = previousCheckpoint(dir);
        // the stalled rank is killed soon after rank 0 gives up
        LocalLauncher.Result r = launch(launcher(2, "4").failureGrace(Duration.ofSeconds(1)), "stall-during-save",
                dir.toString());
        assertFalse(r.succeeded());
        String error = line(r, 0, "error: ").orElseThrow(() -> new AssertionError(r.output(0)));
        assertTrue(error.contains("rank 0 of 2") && error.contains("timed out after 4 s"), error);
        long elapsed = Long.parseLong(line(r, 0, "elapsed-ms=").orElseThrow());
        assertTrue(elapsed >= 3_000 && elapsed < 4_000 + 20_000, "failed after " + elapsed + " ms");
        assertPreviousCheckpointKept(dir, verified);
    }

    /**
     * A disk error on one rank (EIO on every write of rank 1, injected by the LD_PRELOAD library of
     * cpp/tests/tools/io_fault_shim.cpp) fails the sharded save on every rank, and the previous
     * checkpoint stays whole.
     */
    @Test
    void aDiskErrorOnOneRankFailsEveryRankAndKeepsThePreviousCheckpoint() throws Exception {
        LocalLauncher.Result r = saveWithDiskErrorOnRankOne("save-sharded", "disk-fault");
        String error0 = line(r, 0, "error: ").orElseThrow(() -> new AssertionError(r.output(0)));
        assertTrue(error0.contains("rank 1 could not write its shard file") && error0.contains("Input/output error"),
                error0);
        // typed: the failing rank sees the disk, the others a rank that failed
        assertEquals("DistributedException rank=0 operation=sharded save: shard write on rank 1",
                line(r, 0, "error-type: ").orElseThrow());
    }

    /**
     * {@code mode}'s save over a previous checkpoint in {@code name} with EIO on every write of rank 1
     * (the LD_PRELOAD library of cpp/tests/tools/io_fault_shim.cpp): both ranks fail, rank 1 typed as
     * a storage error, and the previous checkpoint stays whole. Returns the launch for more checks.
     */
    private LocalLauncher.Result saveWithDiskErrorOnRankOne(String mode, String name) throws Exception {
        String shim = System.getenv("FABRICCKPT_IO_FAULT_SHIM");
        assertTrue(shim != null && Files.exists(Path.of(shim)), "the fault library is missing: " + shim);
        Path dir = shared.resolve(name);
        String verified = previousCheckpoint(dir);
        LocalLauncher launcher = launcher(2, "30").environment(Map.of("FABRICCKPT_DIST_TIMEOUT", "30",
                "LD_PRELOAD", shim, "FABRICCKPT_FAULT", "pwrite:EIO:0", "FABRICCKPT_FAULT_RANK", "1"));
        LocalLauncher.Result r = launch(launcher, mode, dir.toString());
        assertEquals(List.of(1, 1), r.exitCodes(), r.describe());
        String error1 = line(r, 1, "error: ").orElseThrow(() -> new AssertionError(r.output(1)));
        assertTrue(error1.contains("Input/output error"), error1);
        assertEquals("CheckpointStorageException", line(r, 1, "error-type: ").orElseThrow());
        assertPreviousCheckpointKept(dir, verified);
        return r;
    }

    /** A truncated .metadata is refused with an error that names it. */
    @Test
    void aTruncatedMetadataFileIsNamed() throws Exception {
        Path dir = shardedDir();
        Path copy = Files.createDirectories(shared.resolve("truncated"));
        for (String name : list(dir)) {
            Files.copy(dir.resolve(name), copy.resolve(name));
        }
        Path metadata = copy.resolve(".metadata");
        long size = Files.size(metadata);
        try (FileChannel channel = FileChannel.open(metadata, StandardOpenOption.WRITE)) {
            channel.truncate(size / 2);
        }
        torch.manual_seed(3);
        Net model = new Net(4, 8, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(0.5));
        Map<String, Object> state = Workers.state(model, optimizer, 0L);
        CheckpointException e = assertThrows(CheckpointException.class, () -> new Fabric().load(copy, state));
        assertTrue(e.getMessage().contains(".metadata"), e.getMessage());
        assertEquals(0L, state.get("step"), "nothing is replaced when the load fails");
    }
}
