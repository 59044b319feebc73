package io.fabricckpt.dist;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.Fabric;
import io.fabricckpt.Net;
import io.fabricckpt.core.CheckpointException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Process groups, the DDP strategy and the launcher, with real JVMs (DdpWorker) on loopback. */
class DdpTest {
    @TempDir
    Path dir;

    private static Optional<String> line(LocalLauncher.Result r, int rank, String prefix) {
        return r.output(rank).stream().filter(l -> l.startsWith(prefix)).map(l -> l.substring(prefix.length()))
                .findFirst();
    }

    private static LocalLauncher launcher(int n, String distTimeoutSeconds, List<String> sink) {
        return new LocalLauncher(n).timeout(Duration.ofSeconds(90)).failureGrace(Duration.ofSeconds(30))
                .environment(Map.of("FABRICCKPT_DIST_TIMEOUT", distTimeoutSeconds))
                .output(l -> {
                    synchronized (sink) {
                        sink.add(l);
                    }
                    System.out.println(l);
                });
    }

    /** A group of one, in this JVM: every collective works and is trivial. */
    @Test
    void groupOfOneInProcess() {
        try (ProcessGroup group = ProcessGroup.connect("127.0.0.1", LocalLauncher.freePort(), 0, 1,
                Duration.ofSeconds(10))) {
            assertEquals(0, group.rank());
            assertEquals(1, group.worldSize());
            group.barrier();
            assertTrue(group.allAgree(true));
            assertFalse(group.allAgree(false));
            assertEquals(42, group.allReduceSum(42));
            assertEquals("héllo", group.broadcast("héllo", 0));
            assertEquals("", group.broadcast("", 0));
            byte[] bytes = new byte[100_000];
            bytes[99_999] = 7;
            assertArrayEquals(bytes, group.broadcast(bytes, 0));

            Fabric fabric = new Fabric(new Ddp(group));
            Path path = dir.resolve("one.ckpt");
            fabric.save(path, Map.of("step", 3L, "name", "x"));
            Map<String, Object> state = new LinkedHashMap<>(Map.of("step", 0L));
            fabric.load(path, state);
            assertEquals(3L, state.get("step"));
            // a failed load fails on every rank (here: the only one)
            assertThrows(CheckpointException.class, () -> fabric.load(dir.resolve("missing.ckpt")));
            group.close();
            assertThrows(IllegalStateException.class, group::barrier);
        }
    }

    @Test
    void badArgumentsAreRefusedBeforeAnyNetworking() {
        assertThrows(IllegalArgumentException.class, () -> ProcessGroup.connect("127.0.0.1", 29500, 2, 2,
                Duration.ofSeconds(1)));
        assertThrows(IllegalArgumentException.class, () -> ProcessGroup.connect("127.0.0.1", 0, 0, 1,
                Duration.ofSeconds(1)));
        assertThrows(IllegalArgumentException.class, () -> ProcessGroup.fromEnvironment(
                Map.of("RANK", "x", "WORLD_SIZE", "2"), Duration.ofSeconds(1)));
    }

    /** DDP: rank 0 writes the one file; every rank loads it and gets the same state back. */
    @Test
    void ddpSaveWritesOneFileThatEveryRankLoads() throws Exception {
        List<String> sink = new ArrayList<>();
        LocalLauncher.Result r = launcher(2, "60", sink).launch(DdpWorker.class.getName(), "save", dir.toString());
        assertTrue(r.succeeded(), r.describe());
        for (int rank = 0; rank < 2; rank++) {
            assertEquals(Optional.of("[ddp.ckpt]"), line(r, rank, "files="), "rank " + rank);
            assertEquals(Optional.of("true"), line(r, rank, "restored-equal="), "rank " + rank);
            assertTrue(line(r, rank, "digest=").orElseThrow().endsWith(";step=5"));
        }
        assertEquals(line(r, 0, "digest="), line(r, 1, "digest="));
        assertTrue(sink.stream().anyMatch(l -> l.startsWith("[rank 1] joined ProcessGroup[rank 1 of 2")), "prefixed output");
        try (var files = Files.list(dir)) {
            assertEquals(List.of(dir.resolve("ddp.ckpt")), files.toList());
        }
        Map<String, Object> checkpoint = new Fabric().load(dir.resolve("ddp.ckpt"));
        assertEquals(List.of("model", "optimizer", "step", "hparams"), List.copyOf(checkpoint.keySet()));
    }

    /**
     * saveAsync under DDP: rank 0 writes in the background while a foreground collective runs; the
     * step made through fabric.step right after the call never reaches the file, which every rank
     * loads back equal to the state before that step.
     */
    @Test
    void ddpBackgroundSaveHoldsTheStateBeforeTheNextStep() throws Exception {
        LocalLauncher.Result r = launcher(2, "60", new ArrayList<>()).launch(DdpWorker.class.getName(), "save-async",
                dir.toString());
        assertTrue(r.succeeded(), r.describe());
        for (int rank = 0; rank < 2; rank++) {
            assertEquals(Optional.of("3"), line(r, rank, "foreground-sum="), "rank " + rank);
            assertEquals(Optional.of("true"), line(r, rank, "step-changed="), "rank " + rank + ": the test proves nothing");
            assertTrue(r.output(rank).contains("written"), "rank " + rank);
            assertEquals(Optional.of("true"), line(r, rank, "restored-equal="), "rank " + rank);
        }
        try (var files = Files.list(dir)) {
            assertEquals(List.of(dir.resolve("ddp-async.ckpt")), files.toList(), "one file, no temporary files");
        }
    }

    /** System.exit right after saveAsync on every rank: the shutdown hooks finish the save, and say so. */
    @Test
    void exitingRightAfterABackgroundSaveFinishesItOnEveryRank() throws Exception {
        List<String> sink = new ArrayList<>();
        LocalLauncher.Result r = launcher(2, "60", sink).launch(DdpWorker.class.getName(), "save-async-exit",
                dir.toString());
        assertEquals(List.of(0, 0), r.exitCodes(), r.describe());
        for (int rank = 0; rank < 2; rank++) {
            assertTrue(r.output(rank).stream().anyMatch(l -> l.contains("finishing the background checkpoint saves of")),
                    "rank " + rank + ": " + r.output(rank));
        }
        Map<String, Object> checkpoint = new Fabric().load(dir.resolve("ddp-exit.ckpt"));
        assertEquals(List.of("model", "optimizer", "step"), List.copyOf(checkpoint.keySet()));
        torch.manual_seed(7);
        Net expected = new Net(256, 1024, 8);
        Map<?, ?> model = (Map<?, ?>) checkpoint.get("model");
        assertTrue(((Tensor) model.get("fc1.weight")).equal(expected.fc1.weight()), "the saved weights");
    }

    /** A background save that rank 0 cannot write fails written() on every rank: typed on rank 0, named on rank 1. */
    @Test
    void aFailedBackgroundWriteOnRankZeroFailsEveryRank() throws Exception {
        Path notADirectory = Files.writeString(dir.resolve("plain-file"), "x");
        LocalLauncher.Result r = launcher(2, "60", new ArrayList<>()).launch(DdpWorker.class.getName(), "save-async",
                notADirectory.toString());
        assertEquals(List.of(1, 1), r.exitCodes(), r.describe());
        assertEquals(Optional.of("CheckpointStorageException"), line(r, 0, "error-type: "), r.describe());
        String error1 = line(r, 1, "error: ").orElseThrow(() -> new AssertionError(r.output(1)));
        assertTrue(error1.contains("global rank 0 failed") && error1.contains("ddp-async.ckpt"), error1);
        assertTrue(line(r, 1, "error-type: ").orElseThrow().startsWith("DistributedException rank=1"), r.describe());
    }

    /** A rank that leaves before the save makes rank 0 fail at once, naming itself; the launcher reports it. */
    @Test
    void aRankThatLeavesMakesTheOthersFail() throws Exception {
        LocalLauncher.Result r = launcher(2, "10", new ArrayList<>()).launch(DdpWorker.class.getName(),
                "exit-before-save", dir.toString());
        assertFalse(r.succeeded());
        assertEquals(List.of(1, 0), r.exitCodes(), r.describe());
        assertTrue(r.describe().contains("rank 0: exit 1"), r.describe());
        String error = line(r, 0, "error: ").orElseThrow();
        assertTrue(error.contains("rank 0 of 2"), error);
        assertTrue(error.contains("timed out after 10 s") || error.contains("another rank is gone"), error);
        long elapsed = Long.parseLong(line(r, 0, "elapsed-ms=").orElseThrow());
        assertTrue(elapsed < 10_000 + 15_000, "failed after " + elapsed + " ms");
        // rank 0 wrote its file before it noticed (as Lightning: the write comes before the barrier)
        assertTrue(Files.exists(dir.resolve("ddp.ckpt")));
    }

    /** A rank that stalls makes rank 0 fail after the configured timeout; the launcher kills the staller. */
    @Test
    void aRankThatStallsMakesTheOthersFailWithinTheTimeout() throws Exception {
        LocalLauncher.Result r = new LocalLauncher(2).timeout(Duration.ofSeconds(90))
                .environment(Map.of("FABRICCKPT_DIST_TIMEOUT", "5"))
                .launch(DdpWorker.class.getName(), "stall-before-save", dir.toString());
        assertFalse(r.succeeded());
        assertEquals(1, r.exitCodes().get(0), r.describe());
        assertEquals(List.of(false, true), r.killed(), r.describe());
        String error = line(r, 0, "error: ").orElseThrow();
        assertTrue(error.contains("rank 0 of 2") && error.contains("timed out after 5 s"), error);
        long elapsed = Long.parseLong(line(r, 0, "elapsed-ms=").orElseThrow());
        assertTrue(elapsed >= 4_000 && elapsed < 5_000 + 15_000, "failed after " + elapsed + " ms");
    }

    /** The launcher's own timeout kills every rank. */
    @Test
    void theLauncherKillsEveryRankOnItsTimeout() throws Exception {
        long start = System.nanoTime();
        LocalLauncher.Result r = new LocalLauncher(2).timeout(Duration.ofSeconds(4)).output(l -> { })
                .environment(Map.of("FABRICCKPT_DIST_TIMEOUT", "120"))
                .launch(DdpWorker.class.getName(), "stall-before-save", dir.toString());
        assertTrue(r.timedOut());
        assertEquals(List.of(true, true), r.killed(), r.describe());
        assertTrue(System.nanoTime() - start < 30_000_000_000L);
        assertEquals(124, LocalLauncher.run(new String[] {"-n", "1", "--timeout", "1", DdpWorker.class.getName(),
                "stall-before-save", dir.toString()}, new java.io.PrintStream(java.io.OutputStream.nullOutputStream(),
                true, StandardCharsets.UTF_8), new java.io.PrintStream(java.io.OutputStream.nullOutputStream())));
    }
}
