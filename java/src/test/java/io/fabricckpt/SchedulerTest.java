package io.fabricckpt;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.core.CheckpointException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Optimizer;
import org.bytedeco.pytorch.ReduceLROnPlateauScheduler;
import org.bytedeco.pytorch.SGD;
import org.bytedeco.pytorch.SGDOptions;
import org.bytedeco.pytorch.StepLR;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** LR schedulers (the preset's StepLR) in Fabric states and through StateDicts. */
class SchedulerTest {
    @TempDir
    Path dir;

    private final Fabric fabric = new Fabric();

    private static double lr(Optimizer optimizer) {
        return optimizer.param_groups().get(0).options().get_lr();
    }

    private static List<Double> nextLrs(Optimizer optimizer, StepLR scheduler, int steps) {
        List<Double> lrs = new ArrayList<>();
        for (int i = 0; i < steps; i++) {
            scheduler.step();
            lrs.add(lr(optimizer));
        }
        return lrs;
    }

    @Test
    void savedAndRestoredInPlaceTheScheduleGoesOn() {
        torch.manual_seed(0);
        Net model = new Net(4, 8, 2);
        SGD optimizer = new SGD(model.parameters(), new SGDOptions(0.1));
        StepLR scheduler = new StepLR(optimizer, 2, 0.5);
        for (int i = 0; i < 4; i++) {
            scheduler.step();
        }
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("optimizer", optimizer);
        state.put("scheduler", scheduler);
        Path path = dir.resolve("scheduled.ckpt");
        fabric.save(path, state);

        Net restoredModel = new Net(4, 8, 2);
        SGD restoredOptimizer = new SGD(restoredModel.parameters(), new SGDOptions(0.1));
        StepLR restoredScheduler = new StepLR(restoredOptimizer, 2, 0.5);
        Map<String, Object> restored = new LinkedHashMap<>();
        restored.put("model", restoredModel);
        restored.put("optimizer", restoredOptimizer);
        restored.put("scheduler", restoredScheduler);
        assertEquals(Map.of(), fabric.load(path, restored));

        assertEquals(lr(optimizer), lr(restoredOptimizer));
        assertEquals(0.05, lr(restoredOptimizer));
        assertEquals(StateDicts.of(scheduler), StateDicts.of(restoredScheduler));
        assertEquals(nextLrs(optimizer, scheduler, 5), nextLrs(restoredOptimizer, restoredScheduler, 5));
    }

    @Test
    void stateDictIsPythonsStepLRLayout() {
        SGD optimizer = new SGD(new Net(4, 8, 2).parameters(), new SGDOptions(0.1));
        StepLR scheduler = new StepLR(optimizer, 2, 0.5);
        for (int i = 0; i < 4; i++) {
            scheduler.step();
        }
        Map<Object, Object> sd = StateDicts.of(scheduler);
        assertEquals(List.of("step_size", "gamma", "base_lrs", "last_epoch", "_step_count", "_is_initial",
                "_get_lr_called_within_step", "_last_lr"), new ArrayList<>(sd.keySet()));
        assertEquals(2L, sd.get("step_size"));
        assertEquals(0.5, sd.get("gamma"));
        assertEquals(List.of(0.1), sd.get("base_lrs"));
        assertEquals(3L, sd.get("last_epoch"));
        assertEquals(4L, sd.get("_step_count"));
        assertEquals(false, sd.get("_is_initial"));
        assertEquals(List.of(0.05), sd.get("_last_lr"));

        // The optimizer beside its scheduler: 'initial_lr' just before 'params', as Python writes it.
        Map<?, ?> group = (Map<?, ?>) ((List<?>) StateDicts.of(optimizer, scheduler).get("param_groups")).get(0);
        List<Object> keys = new ArrayList<>(group.keySet());
        assertEquals(List.of("initial_lr", "params"), keys.subList(keys.size() - 2, keys.size()));
        assertEquals(0.1, group.get("initial_lr"));
        Map<?, ?> plain = (Map<?, ?>) ((List<?>) StateDicts.of(optimizer).get("param_groups")).get(0);
        assertFalse(plain.containsKey("initial_lr"));
    }

    @Test
    void fabricSaveAddsInitialLrOnlyToTheScheduledOptimizer() {
        SGD scheduled = new SGD(new Net(4, 8, 2).parameters(), new SGDOptions(0.1));
        SGD other = new SGD(new Net(4, 8, 2).parameters(), new SGDOptions(0.1));
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("other", other);
        state.put("optimizer", scheduled);
        state.put("scheduler", new StepLR(scheduled, 3));
        Path path = dir.resolve("two.ckpt");
        fabric.save(path, state);
        Map<String, Object> checkpoint = fabric.load(path);
        assertTrue(firstGroup(checkpoint, "optimizer").containsKey("initial_lr"));
        assertFalse(firstGroup(checkpoint, "other").containsKey("initial_lr"));
        assertEquals(0.1, lr(other)); // the probe that tells the optimizers apart leaves them as they were
        assertEquals(0.1, lr(scheduled));
    }

    private static Map<?, ?> firstGroup(Map<String, Object> checkpoint, String key) {
        return (Map<?, ?>) ((List<?>) ((Map<?, ?>) checkpoint.get(key)).get("param_groups")).get(0);
    }

    @Test
    void aSchedulerBuiltDifferentlyIsRefusedWithTheReason() {
        SGD optimizer = new SGD(new Net(4, 8, 2).parameters(), new SGDOptions(0.1));
        StepLR scheduler = new StepLR(optimizer, 2, 0.5);
        Map<Object, Object> sd = StateDicts.of(scheduler);
        sd.put("step_size", 5L);
        CheckpointException e = assertThrows(CheckpointException.class,
                () -> StateDicts.load(new StepLR(optimizer, 2, 0.5), sd));
        assertTrue(e.getMessage().contains("scheduler['step_size'] is 5 but this StepLR was built with step_size 2"),
                e.getMessage());

        Map<String, Object> state = new LinkedHashMap<>();
        state.put("scheduler", new StepLR(optimizer, 3, 0.5));
        Path path = dir.resolve("mismatch.ckpt");
        fabric.save(path, Map.of("scheduler", scheduler));
        CheckpointException onLoad = assertThrows(CheckpointException.class, () -> fabric.load(path, state));
        assertTrue(onLoad.getMessage().contains("'scheduler'") && onLoad.getMessage().contains("step_size"),
                onLoad.getMessage());
    }

    @Test
    void plateauSchedulerRoundTripsAndNeedsItsOptimizer() {
        SGD optimizer = new SGD(new Net(4, 8, 2).parameters(), new SGDOptions(0.1));
        ReduceLROnPlateauScheduler scheduler = new ReduceLROnPlateauScheduler(optimizer);
        for (float metric : new float[] {1f, 2f, 3f}) {
            scheduler.step(metric);
        }
        Map<Object, Object> sd = StateDicts.of(scheduler, optimizer);
        assertEquals(List.of("factor", "default_min_lr", "min_lrs", "patience", "cooldown", "eps", "last_epoch",
                "_last_lr", "mode_worse", "mode", "threshold", "threshold_mode", "best", "cooldown_counter",
                "num_bad_epochs"), new ArrayList<>(sd.keySet()));
        assertEquals(0.1, sd.get("factor")); // libtorch's 0.1f, as written
        assertEquals(0L, sd.get("default_min_lr"));
        assertEquals("min", sd.get("mode"));
        assertEquals(1.0, sd.get("best"));
        assertEquals(2L, sd.get("num_bad_epochs"));
        assertEquals(3L, sd.get("last_epoch"));

        Map<String, Object> state = new LinkedHashMap<>();
        state.put("optimizer", optimizer);
        state.put("scheduler", scheduler);
        Path path = dir.resolve("plateau.ckpt");
        fabric.save(path, state);
        SGD restoredOptimizer = new SGD(new Net(4, 8, 2).parameters(), new SGDOptions(0.1));
        ReduceLROnPlateauScheduler restored = new ReduceLROnPlateauScheduler(restoredOptimizer);
        Map<String, Object> target = new LinkedHashMap<>();
        target.put("optimizer", restoredOptimizer);
        target.put("scheduler", restored);
        fabric.load(path, target);
        assertEquals(sd, StateDicts.of(restored, restoredOptimizer));

        SGD other = new SGD(new Net(4, 8, 2).parameters(), new SGDOptions(0.1));
        state.put("other", other);
        CheckpointException e = assertThrows(CheckpointException.class, () -> fabric.save(path, state));
        assertTrue(e.getMessage().contains("exactly one optimizer"), e.getMessage());
    }
}
