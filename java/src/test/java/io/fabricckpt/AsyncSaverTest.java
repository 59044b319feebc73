package io.fabricckpt;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.core.AsyncSave;
import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.PyGlobal;
import io.fabricckpt.core.WriteOptions;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Background saves: snapshots, ordering per path, failures, back-pressure, progress. */
class AsyncSaverTest {
    private static final WriteOptions NO_SYNC = WriteOptions.DEFAULT.withFsync(false);

    @TempDir
    Path dir;

    private static Tensor arange(double n, torch.ScalarType dtype) {
        return torch.arange(new Scalar(n), new TensorOptions(dtype));
    }

    private static Map<String, Object> state(long step, Tensor weights) {
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("weights", weights);
        state.put("view", weights.narrow(0, 1, 5));
        state.put("step", step);
        return state;
    }

    private static long step(Path file) {
        return (Long) ((Map<?, ?>) TorchFiles.read(file)).get("step");
    }

    /**
     * System.exit right after saveAsync: the shutdown hook lets every requested save land. (Without
     * it, the last of these six saves vanished in about half of the runs, with exit code 0.)
     */
    @Test
    void aJvmExitingRightAfterSaveAsyncStillWritesTheCheckpoints() throws Exception {
        Process jvm = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path"), AsyncExitWorker.class.getName(), dir.toString(), "6", "64")
                .redirectErrorStream(true).start();
        String output = new String(jvm.getInputStream().readAllBytes());
        assertEquals(0, jvm.waitFor(), output);
        // The hook says what it waits for (the last save was requested a moment before the exit).
        assertTrue(output.contains("the JVM is exiting: finishing the checkpoint saves of"), output);
        for (long i = 0; i < 6; i++) {
            Path file = dir.resolve("ckpt-" + i + ".ckpt");
            assertTrue(Files.exists(file), "save " + i + " vanished; output: " + output);
            assertEquals(i, step(file));
        }
    }

    /**
     * kill -9 of a JVM saving in the background, at many moments: the checkpoint on disk is always one
     * whole save (its tensor holds its step everywhere), never older than one already seen complete.
     */
    @Test
    void killingAJvmDuringBackgroundSavesNeverLosesTheCheckpoint() throws Exception {
        Path file = dir.resolve("ckpt.ckpt");
        java.util.Random random = new java.util.Random(42);
        long newest = -1;
        int kills = 8;
        for (int k = 0; k < kills; k++) {
            Process jvm = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                    "-cp", System.getProperty("java.class.path"), AsyncExitWorker.class.getName(), dir.toString(),
                    "0", "64", "loop").redirectErrorStream(true).start();
            java.io.BufferedReader out = new java.io.BufferedReader(new java.io.InputStreamReader(jvm.getInputStream()));
            int wanted = 2 + random.nextInt(4); // saves requested before the kill: some written, one in flight
            for (int seen = 0; seen < wanted;) {
                String line = out.readLine();
                assertTrue(line != null, "the saving JVM ended early");
                if (line.startsWith("requested ")) {
                    seen++;
                }
            }
            Thread.sleep(random.nextInt(300));
            jvm.destroyForcibly(); // SIGKILL
            jvm.waitFor();
            if (!Files.exists(file)) {
                continue; // killed before its first save landed
            }
            Map<?, ?> loaded = (Map<?, ?>) TorchFiles.read(file);
            long step = (Long) loaded.get("step");
            Tensor weights = (Tensor) loaded.get("weights");
            assertEquals(64L << 18, weights.numel());
            assertTrue(weights.eq(new Scalar((double) step)).all().item_bool(), "kill " + k + ": a mixed checkpoint");
            newest = step;
        }
        assertTrue(newest >= 0, "no save ever landed: the kills came too early to test anything");
    }

    @Test
    void theCallerMayChangeItsTensorsOnceStaged() throws IOException {
        Tensor weights = arange(16 << 20, torch.ScalarType.Float); // 64 MiB: still being written below
        Map<String, Object> state = state(1, weights);
        Path expected = dir.resolve("expected.ckpt");
        TorchFiles.write(expected, state, NO_SYNC);

        Path file = dir.resolve("async.ckpt");
        try (AsyncSaver saver = new AsyncSaver()) {
            AsyncSave save = saver.save(file, state, WriteOptions.DEFAULT, null);
            save.staged().join();
            weights.fill_(new Scalar(-1.0)); // training goes on while the file is written
            save.written().join();
        }
        assertArrayEquals(Files.readAllBytes(expected), Files.readAllBytes(file)); // byte-identical to a sync save
        Tensor saved = (Tensor) ((Map<?, ?>) TorchFiles.read(file)).get("weights");
        assertEquals(12345.0, saved.get(12345).item_double());
        try (Stream<Path> files = Files.list(dir)) {
            assertEquals(2, files.count()); // no temporary file left
        }
    }

    @Test
    void saveOfTheSamePathLandInOrderAndTheNewestWins() {
        Path file = dir.resolve("ordered.ckpt");
        Tensor weights = arange(4 << 20, torch.ScalarType.Float);
        try (AsyncSaver saver = new AsyncSaver()) {
            List<CompletableFuture<Void>> futures = new ArrayList<>();
            for (long step = 1; step <= 6; step++) {
                futures.add(saver.save(file, state(step, weights), NO_SYNC, null).written());
            }
            CompletableFuture.allOf(futures.toArray(new CompletableFuture[0])).join();
            assertTrue(futures.stream().allMatch(f -> f.isDone() && !f.isCompletedExceptionally()));
        }
        assertEquals(6L, step(file));
    }

    @Test
    void anOlderSaveNeverReplacesANewerOneAcrossSavers() {
        Path file = dir.resolve("shared.ckpt");
        Tensor big = arange(16 << 20, torch.ScalarType.Float);
        Tensor small = arange(10, torch.ScalarType.Float);
        for (int round = 0; round < 3; round++) {
            try (AsyncSaver a = new AsyncSaver(); AsyncSaver b = new AsyncSaver()) {
                CompletableFuture<Void> older = a.save(file, state(2 * round + 1, big), NO_SYNC, null).written();
                CompletableFuture<Void> newer = b.save(file, state(2 * round + 2, small), NO_SYNC, null).written();
                CompletableFuture.allOf(older, newer).join();
            }
            assertEquals(2 * round + 2, step(file));
        }
    }

    @Test
    void aFailingSaveCompletesExceptionallyAndKeepsTheOldFile() throws IOException {
        Path file = dir.resolve("keep.ckpt");
        TorchFiles.write(file, Map.of("step", 1L));
        byte[] before = Files.readAllBytes(file);
        try (AsyncSaver saver = new AsyncSaver()) {
            // Fails in the writer thread: no pickle can name a global with a newline (such a global is
            // outside torch's weights_only allowlist too, refused at once unless allowed: allowed here).
            Map<String, Object> bad = new LinkedHashMap<>(state(2, arange(1000, torch.ScalarType.Float)));
            bad.put("global", new PyGlobal("torch", "bad\nname"));
            AsyncSave failedSave = saver.save(file, bad, NO_SYNC.allowUnsafeGlobals(), null);
            failedSave.staged().join(); // staging succeeded: the failure comes from the writer
            CompletableFuture<Void> failed = failedSave.written();
            CompletionException e = assertThrows(CompletionException.class, failed::join);
            assertInstanceOf(CheckpointException.class, e.getCause());
            assertTrue(e.getCause().getMessage().contains("newline"), e.getCause().getMessage());

            // Fails while staging, in the background: a sparse tensor cannot be copied.
            AsyncSave sparseSave = saver.save(file, Map.of("t", torch.eye(3).to_sparse()), NO_SYNC, null);
            sparseSave.staged().join();
            e = assertThrows(CompletionException.class, () -> sparseSave.written().join());
            assertInstanceOf(CheckpointException.class, e.getCause());
            assertTrue(e.getCause().getMessage().contains("only dense strided tensors"), e.getCause().getMessage());

            // Fails while converting, on the caller's thread: a tensor with no data.
            AsyncSave undefinedSave = saver.save(file, Map.of("t", new Tensor()), NO_SYNC, null);
            undefinedSave.staged().join(); // never exceptional: the failure is written()'s
            CompletableFuture<Void> undefined = undefinedSave.written();
            e = assertThrows(CompletionException.class, undefined::join);
            assertInstanceOf(CheckpointException.class, e.getCause());

            assertArrayEquals(before, Files.readAllBytes(file)); // the old checkpoint is untouched
            try (Stream<Path> files = Files.list(dir)) {
                assertEquals(1, files.count()); // and no temporary file is left
            }
            // awaitWritten throws the failure itself.
            CheckpointException thrown = assertThrows(CheckpointException.class, undefinedSave::awaitWritten);
            assertTrue(thrown.getMessage().contains(file.toString()), thrown.getMessage());

            // The saver keeps working after failures.
            saver.save(file, state(3, arange(10, torch.ScalarType.Float)), NO_SYNC, null).awaitWritten();
            assertEquals(3L, step(file));
        }
    }

    @Test
    void failedSaveLeavesThePreviousCheckpointInPlace() throws IOException {
        Path file = dir.resolve("previous.ckpt");
        try (AsyncSaver saver = new AsyncSaver()) {
            saver.save(file, state(1, arange(100, torch.ScalarType.Float)), NO_SYNC, null).awaitWritten();
            byte[] before = Files.readAllBytes(file);
            Map<String, Object> bad = new LinkedHashMap<>(state(2, arange(100, torch.ScalarType.Float)));
            bad.put("global", new PyGlobal("torch", "bad\nname"));
            assertThrows(CompletionException.class,
                    () -> saver.save(file, bad, NO_SYNC.allowUnsafeGlobals(), null).written().join());
            assertArrayEquals(before, Files.readAllBytes(file));
        }
    }

    @Test
    void manyPathsBackPressureProgressAndClose() {
        Tensor weights = arange(8 << 20, torch.ScalarType.Float);
        List<long[]> reports = new CopyOnWriteArrayList<>();
        AsyncSaver saver = new AsyncSaver(2);
        List<CompletableFuture<Void>> futures = new ArrayList<>();
        for (int i = 0; i < 5; i++) {
            AsyncSave save = saver.save(dir.resolve("p" + i + ".ckpt"), state(i, weights), NO_SYNC,
                    (done, total) -> reports.add(new long[] {done, total}));
            futures.add(save.written());
            saver.awaitStaged();
            assertTrue(save.staged().isDone());
            weights.add_(new Scalar(1)); // each save has its own snapshot
        }
        saver.awaitIdle();
        assertTrue(futures.stream().allMatch(CompletableFuture::isDone));
        for (int i = 0; i < 5; i++) {
            Tensor saved = (Tensor) ((Map<?, ?>) TorchFiles.read(dir.resolve("p" + i + ".ckpt"))).get("weights");
            assertEquals(i + 5.0, saved.get(5).item_double());
        }
        assertFalse(reports.isEmpty());
        long[] last = reports.get(reports.size() - 1);
        assertEquals(last[0], last[1]);
        saver.close();
        assertThrows(IllegalStateException.class,
                () -> saver.save(dir.resolve("late.ckpt"), state(9, weights), NO_SYNC, null));
    }
}
