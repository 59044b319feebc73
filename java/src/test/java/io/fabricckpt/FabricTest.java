package io.fabricckpt;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.core.AsyncSave;
import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.PyOrderedDict;
import io.fabricckpt.core.Stateful;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.BiPredicate;
import org.bytedeco.pytorch.Adam;
import org.bytedeco.pytorch.AdamOptions;
import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.LinearOptions;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The checkpoint guide (shared/reference/fabric-checkpoints.rst), code block by code block, in Java.
 */
class FabricTest {
    @TempDir
    Path dir;

    private final Fabric fabric = new Fabric();

    /** "Define the state of your program" + "Save a checkpoint" + "Restore from a checkpoint". */
    @Test
    void saveAndRestoreTheWholeState() {
        torch.manual_seed(0);
        Net model1 = new Net(4, 8, 2);
        Net model2 = new Net(4, 3, 1);
        Adam optimizer = new Adam(model1.parameters(), new AdamOptions(1e-3));
        model1.trainStep(optimizer);
        Map<String, Object> hparams = new LinkedHashMap<>(Map.of("lr", 1e-3));
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model1", model1);
        state.put("model2", model2);
        state.put("optimizer", optimizer);
        state.put("iteration", 7L);
        state.put("hparams", hparams);
        Path path = dir.resolve("checkpoint.ckpt");
        fabric.save(path, state);

        // The file holds state dicts, not objects.
        Map<String, Object> raw = fabric.load(path);
        PyOrderedDict model1State = assertInstanceOf(PyOrderedDict.class, raw.get("model1"));
        assertEquals(List.of("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"), List.copyOf(model1State.keySet()));
        assertNotNull(model1State.metadata());
        @SuppressWarnings("unchecked")
        Map<Object, Object> optimizerState = (Map<Object, Object>) raw.get("optimizer");
        assertEquals(List.of("state", "param_groups"), List.copyOf(optimizerState.keySet()));

        // Restore into fresh objects: parameters, optimizer state and plain values come back.
        torch.manual_seed(1);
        Net restored1 = new Net(4, 8, 2);
        Net restored2 = new Net(4, 3, 1);
        Adam restoredOptimizer = new Adam(restored1.parameters(), new AdamOptions(0.5));
        Map<String, Object> target = new HashMap<>();
        target.put("model1", restored1);
        target.put("model2", restored2);
        target.put("optimizer", restoredOptimizer);
        target.put("iteration", 0L);
        target.put("hparams", null);
        Map<String, Object> remainder = fabric.load(path, target);
        assertTrue(remainder.isEmpty());
        assertTrue(restored1.fc1.weight().equal(model1.fc1.weight()));
        assertTrue(restored2.fc2.bias().equal(model2.fc2.bias()));
        assertEquals(7L, target.get("iteration"));
        assertEquals(hparams, target.get("hparams"));
        assertEquals(StateDicts.of(optimizer).toString(), StateDicts.of(restoredOptimizer).toString());

        // Both continue identically.
        torch.manual_seed(5);
        model1.trainStep(optimizer);
        torch.manual_seed(5);
        restored1.trainStep(restoredOptimizer);
        assertTrue(restored1.fc1.weight().equal(model1.fc1.weight()));
    }

    /** "You can also request only to restore a portion of the checkpoint": the remainder is returned. */
    @Test
    void partialRestoreReturnsTheRemainder() {
        Net model1 = new Net(4, 8, 2);
        Adam optimizer = new Adam(model1.parameters(), new AdamOptions(1e-3));
        Path path = dir.resolve("checkpoint.ckpt");
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model1", model1);
        state.put("optimizer", optimizer);
        state.put("iteration", 3L);
        fabric.save(path, state);

        Net fresh = new Net(4, 8, 2);
        Map<String, Object> request = new HashMap<>(Map.of("model1", fresh));
        Map<String, Object> remainder = fabric.load(path, request);
        assertEquals(List.of("optimizer", "iteration"), List.copyOf(remainder.keySet()));
        assertEquals(3L, remainder.get("iteration"));
        assertTrue(fresh.fc2.weight().equal(model1.fc2.weight()));
    }

    /** "get the entire raw checkpoint dictionary": then load_state_dict by hand. */
    @Test
    void rawCheckpointThenLoadStateDictsByHand() {
        Net model = new Net(4, 8, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        model.trainStep(optimizer);
        Path path = dir.resolve("checkpoint.ckpt");
        fabric.save(path, Map.of("model", model, "optimizer", optimizer));

        Map<String, Object> fullCheckpoint = fabric.load(path);
        Net other = new Net(4, 8, 2);
        Adam otherOptimizer = new Adam(other.parameters(), new AdamOptions(1e-3));
        StateDicts.load(other, (Map<?, ?>) fullCheckpoint.get("model"), true);
        StateDicts.load(otherOptimizer, (Map<?, ?>) fullCheckpoint.get("optimizer"));
        assertTrue(other.fc1.bias().equal(model.fc1.bias()));
        assertEquals(StateDicts.of(optimizer).toString(), StateDicts.of(otherOptimizer).toString());
    }

    /** "Load a partial checkpoint": Linear with bias into Linear without bias. */
    @Test
    void strictAndNonStrictLoading() {
        LinearImpl model1 = new LinearImpl(2, 2);
        Path path = dir.resolve("state.ckpt");
        fabric.save(path, Map.of("model", model1));

        LinearOptions noBias = new LinearOptions(2, 2);
        noBias.bias().put(false);
        LinearImpl model2 = new LinearImpl(noBias);
        Map<String, Object> state = new HashMap<>(Map.of("model", model2));
        CheckpointException e = assertThrows(CheckpointException.class, () -> fabric.load(path, state, true));
        assertTrue(e.getMessage().contains("Unexpected key(s)") && e.getMessage().contains("bias"), e.getMessage());

        fabric.load(path, state, false);
        assertTrue(model2.weight().equal(model1.weight()));
    }

    @Test
    void strictLoadingRequiresEveryRequestedKey() {
        Path path = dir.resolve("state.ckpt");
        fabric.save(path, Map.of("model", new Net(4, 8, 2)));
        Map<String, Object> state = new HashMap<>();
        state.put("model", new Net(4, 8, 2));
        state.put("missing", 1L);
        CheckpointException e = assertThrows(CheckpointException.class, () -> fabric.load(path, state));
        assertTrue(e.getMessage().contains("'missing'") && e.getMessage().contains("strict=false"), e.getMessage());
        Map<String, Object> remainder = fabric.load(path, state, false);
        assertTrue(remainder.isEmpty());
        assertEquals(1L, state.get("missing"), "a value absent from the file is left as it was");
    }

    /** "Save a partial checkpoint" with a filter. */
    @Test
    void saveFilterKeepsOnlyMatchingItems() {
        Net model = new Net(4, 8, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        model.trainStep(optimizer);
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("optimizer", optimizer);
        state.put("foo", 123L);
        Map<String, BiPredicate<Object, Object>> filter = Map.of("model", (k, v) -> k.toString().contains("weight"));
        Path path = dir.resolve("filtered.ckpt");
        fabric.save(path, state, filter);

        Map<String, Object> raw = fabric.load(path);
        @SuppressWarnings("unchecked")
        Map<Object, Object> savedModel = (Map<Object, Object>) raw.get("model");
        assertEquals(List.of("fc1.weight", "fc2.weight"), List.copyOf(savedModel.keySet()));
        assertFalse(savedModel instanceof PyOrderedDict, "a filtered state dict is a plain dict, as in Lightning");
        @SuppressWarnings("unchecked")
        Map<Object, Object> savedOptimizer = (Map<Object, Object>) raw.get("optimizer");
        assertEquals(4, ((Map<?, ?>) savedOptimizer.get("state")).size(), "optimizer entries are not filtered");
        assertEquals(123L, raw.get("foo"));

        // Nothing survives: the key is left out.
        fabric.save(path, state, Map.of("model", (k, v) -> false));
        assertFalse(fabric.load(path).containsKey("model"));

        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class,
                () -> fabric.save(path, state, Map.of("nope", (k, v) -> true)));
        assertTrue(bad.getMessage().contains("nope"));
    }

    /** A Stateful object saves its dictionary and gets it back. */
    @Test
    void statefulObjects() {
        class Counter implements Stateful {
            long count;

            @Override
            public Map<String, Object> stateDict() {
                return Map.of("count", count);
            }

            @Override
            public void loadStateDict(Map<String, Object> stateDict) {
                count = (Long) stateDict.get("count");
            }
        }
        Counter counter = new Counter();
        counter.count = 41;
        Path path = dir.resolve("stateful.ckpt");
        fabric.save(path, Map.of("counter", counter));
        Counter restored = new Counter();
        fabric.load(path, new HashMap<>(Map.of("counter", restored)));
        assertEquals(41, restored.count);
        assertNull(fabric.load(path).get("nothing"));
    }

    /** saveAsync: training goes on at once; the file holds the state as it was when saveAsync was called. */
    @Test
    void saveAsyncSnapshotsTheStateAndWritesInTheBackground() throws Exception {
        Net model = new Net(4, 8, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        model.trainStep(optimizer);
        Tensor before = model.fc1.weight().clone();
        Path path = dir.resolve("async.ckpt");
        AsyncSave save = fabric.saveAsync(path, Map.of("model", model, "optimizer", optimizer));
        model.forwardBackward(optimizer); // overlaps the staging: reads the parameters only
        fabric.step(optimizer); // waits for the staging, then mutates the parameters in place
        assertTrue(save.staged().isDone());
        save.written().get(60, java.util.concurrent.TimeUnit.SECONDS);

        Net restored = new Net(4, 8, 2);
        fabric.load(path, new HashMap<>(Map.of("model", restored)), false);
        assertTrue(restored.fc1.weight().equal(before));
        assertFalse(restored.fc1.weight().equal(model.fc1.weight()));
    }

    /** fabric.load_raw: a file that is a model's state dict itself. */
    @Test
    void loadRawModelStateDict() {
        Net model = new Net(4, 8, 2);
        Path path = dir.resolve("weights.pt");
        TorchFiles.write(path, StateDicts.of(model));
        Net other = new Net(4, 8, 2);
        fabric.loadRaw(path, other);
        assertTrue(other.fc1.weight().equal(model.fc1.weight()));
    }
}
