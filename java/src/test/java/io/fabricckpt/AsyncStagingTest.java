package io.fabricckpt;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.core.AsyncSave;
import io.fabricckpt.core.CheckpointException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.CompletionException;
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.Adam;
import org.bytedeco.pytorch.AdamOptions;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Fabric.saveAsync's two steps: the staging (the copy of the caller's tensors) runs in the background,
 * the caller waits for it only before it changes them ({@link Fabric#step}, {@link Fabric#awaitStaged}),
 * and failures surface through {@code written()}.
 */
class AsyncStagingTest {
    @TempDir
    Path dir;

    /** A model and its Adam state of about 200 MiB: staging them takes far longer than one call. */
    private static Map<String, Object> trainedState(Net model, Adam optimizer) {
        model.trainStep(optimizer);
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("optimizer", optimizer);
        state.put("step", 1L);
        return state;
    }

    /**
     * A step through the helper right after saveAsync never reaches the file: the file is byte for
     * byte the synchronous save of the state before the step, and the step did change the state.
     */
    @Test
    void aStepThroughTheHelperRightAfterSaveAsyncNeverReachesTheFile() throws Exception {
        Net model = new Net(1024, 16384, 8);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        Map<String, Object> state = trainedState(model, optimizer);
        try (Fabric fabric = new Fabric()) {
            Path expected = dir.resolve("expected.ckpt");
            fabric.save(expected, state);
            Tensor before = model.fc1.weight().clone();

            Path file = dir.resolve("async.ckpt");
            model.forwardBackward(optimizer); // gradients first: the step below changes every parameter
            AsyncSave save = fabric.saveAsync(file, state);
            fabric.step(optimizer); // at once: it must wait for the staging
            assertTrue(save.staged().isDone(), "the helper returned before the staging was done");
            assertFalse(model.fc1.weight().equal(before), "the step changed nothing: the test proves nothing");
            save.written().get(120, TimeUnit.SECONDS);
            assertArrayEquals(Files.readAllBytes(expected), Files.readAllBytes(file));
        }
    }

    /** Once staged(), the caller may overwrite every tensor while the file is written: none reaches it. */
    @Test
    void aMutationAfterStagedNeverReachesTheFile() throws Exception {
        Net model = new Net(1024, 16384, 8);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        Map<String, Object> state = trainedState(model, optimizer);
        try (Fabric fabric = new Fabric()) {
            Path expected = dir.resolve("expected.ckpt");
            fabric.save(expected, state);

            Path file = dir.resolve("async.ckpt");
            AsyncSave save = fabric.saveAsync(file, state);
            save.awaitStaged();
            try (org.bytedeco.pytorch.NoGradGuard noGrad = new org.bytedeco.pytorch.NoGradGuard()) {
                for (Tensor p : model.parameters().get()) {
                    p.fill_(new Scalar(Double.NaN));
                }
            }
            optimizer.step(); // the Adam moments change too (NaN gradients are not needed for that)
            save.written().get(120, TimeUnit.SECONDS);
            assertArrayEquals(Files.readAllBytes(expected), Files.readAllBytes(file));
        }
    }

    /** staged() comes first and never fails; a failure of the write surfaces in written() only. */
    @Test
    void aFailedWriteSurfacesThroughWrittenAndStagedStillCompletes() throws Exception {
        Path notADirectory = dir.resolve("plain-file");
        Files.writeString(notADirectory, "x");
        Path file = notADirectory.resolve("ckpt.ckpt"); // its parent is a file: the write must fail
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("weights", torch.ones(1 << 20));
        state.put("step", 7L);
        try (Fabric fabric = new Fabric()) {
            AsyncSave save = fabric.saveAsync(file, state);
            save.staged().get(60, TimeUnit.SECONDS); // normally, failure or not
            CompletionException e = assertThrows(CompletionException.class, () -> save.written().join());
            CheckpointException cause = assertInstanceOf(CheckpointException.class, e.getCause());
            assertTrue(cause.getMessage().contains(file.toString()), cause.getMessage());
            assertThrows(CheckpointException.class, save::awaitWritten);
            assertTrue(save.isDone());
            fabric.awaitStaged(); // nothing left to wait for
        }
        assertFalse(Files.exists(file));
    }

    /**
     * The memory bound: six back-to-back saves (durable, so the writer is the bottleneck) of a 128 MiB
     * state never hold more than two copies of it (without back-pressure: six, 768 MiB).
     */
    @Test
    void backToBackSavesHoldAtMostTwoCopies() throws Exception {
        long size = 128L << 20;
        Tensor weights = torch.ones(size / 4);
        try (Fabric fabric = new Fabric()) {
            fabric.saveAsync(dir.resolve("warm.ckpt"), Map.of("weights", weights)).written().join();
            long before = ProcessMemory.resetPeak();
            java.util.List<AsyncSave> saves = new java.util.ArrayList<>();
            for (int i = 0; i < 6; i++) {
                saves.add(fabric.saveAsync(dir.resolve("p" + i + ".ckpt"), Map.of("weights", weights, "step", (long) i)));
                fabric.awaitStaged(); // as a training loop waits before its step
            }
            for (AsyncSave save : saves) {
                save.written().get(120, TimeUnit.SECONDS);
            }
            long extra = ProcessMemory.status("VmHWM") - before;
            assertTrue(extra < 2 * size + (96L << 20),
                    "six saves of 128 MiB peaked at " + (extra >> 20) + " MiB over the state: more than two copies");
        }
    }

    /**
     * Two saves of one path queued behind a long staging (the newer usually replaces the older while
     * it waits): both complete normally, the newest state is in the file.
     */
    @Test
    void queuedSavesOfOnePathCompleteAndTheNewestWins() throws Exception {
        Path file = dir.resolve("same.ckpt");
        Path other = dir.resolve("other.ckpt");
        Tensor big = torch.ones(32 << 20); // 128 MiB: keeps the stager busy while the two saves queue
        try (Fabric fabric = new Fabric()) {
            AsyncSave first = fabric.saveAsync(other, Map.of("weights", big, "step", 0L));
            AsyncSave older = fabric.saveAsync(file, Map.of("weights", torch.zeros(10), "step", 1L));
            AsyncSave newer = fabric.saveAsync(file, Map.of("weights", torch.zeros(10), "step", 2L));
            newer.written().get(60, TimeUnit.SECONDS);
            older.written().get(60, TimeUnit.SECONDS);
            first.written().get(60, TimeUnit.SECONDS);
        }
        assertTrue(Files.exists(other));
        Map<?, ?> loaded = (Map<?, ?>) TorchFiles.read(file);
        assertTrue(2L == (Long) loaded.get("step"), "the newest save must win, got step " + loaded.get("step"));
    }
}
