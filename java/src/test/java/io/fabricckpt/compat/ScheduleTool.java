package io.fabricckpt.compat;

import io.fabricckpt.Fabric;
import io.fabricckpt.Net;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.ReduceLROnPlateauScheduler;
import org.bytedeco.pytorch.SGD;
import org.bytedeco.pytorch.SGDOptions;
import org.bytedeco.pytorch.StepLR;
import org.bytedeco.pytorch.global.torch;

/**
 * {@code schedule SRC STEPS SAVED NEXT OUT} for python-compat-tests/test_schedulers.py: Net(4, 8, 2) with
 * SGD(lr=0.1, momentum=0.9) and StepLR(step_size=2, gamma=0.5), resumed from the Fabric checkpoint
 * SRC ("-": fresh from torch.manual_seed(0)), trained STEPS epochs (optimizer.step(), then
 * scheduler.step()), saved as {model, optimizer, scheduler} to SAVED, then stepped NEXT more epochs
 * and saved to OUT. Prints JSON: the lr and step count after loading, after training, and each next lr.
 */
final class ScheduleTool {
    private ScheduleTool() {}

    static void run(String source, int steps, Path saved, int next, Path out) {
        torch.manual_seed(0);
        Net model = new Net(4, 8, 2);
        SGDOptions options = new SGDOptions(0.1);
        options.momentum().put(0.9);
        SGD optimizer = new SGD(model.parameters(), options);
        StepLR scheduler = new StepLR(optimizer, 2, 0.5);
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("optimizer", optimizer);
        state.put("scheduler", scheduler);
        Fabric fabric = new Fabric();
        if (!source.equals("-")) {
            fabric.load(Path.of(source), state);
        }
        String loaded = position(optimizer, scheduler);
        for (int i = 0; i < steps; i++) {
            model.trainStep(optimizer);
            scheduler.step();
        }
        String trained = position(optimizer, scheduler);
        fabric.save(saved, state);
        List<String> lrs = new ArrayList<>();
        for (int i = 0; i < next; i++) {
            model.trainStep(optimizer);
            scheduler.step();
            lrs.add(Double.toString(lr(optimizer)));
        }
        fabric.save(out, state);
        System.out.println("{\"loaded\": " + loaded + ", \"trained\": " + trained + ", \"next\": ["
                + String.join(", ", lrs) + "]}");
    }

    /**
     * {@code plateau SRC METRICS OUT}: SGD(lr=0.1) over Net(4, 8, 2) with ReduceLROnPlateau(factor=0.5,
     * patience=1), resumed from SRC ("-": fresh), stepped with each comma-separated metric, saved as
     * {optimizer, scheduler} to OUT. Prints JSON: the lr after each step.
     */
    static void plateau(String source, String metrics, Path out) {
        torch.manual_seed(0);
        SGD optimizer = new SGD(new Net(4, 8, 2).parameters(), new SGDOptions(0.1));
        ReduceLROnPlateauScheduler scheduler = new ReduceLROnPlateauScheduler(optimizer,
                ReduceLROnPlateauScheduler.SchedulerMode.min, 0.5f, 1, 1e-4,
                ReduceLROnPlateauScheduler.ThresholdMode.rel, 0, new float[] {0f}, 1e-8, false);
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("optimizer", optimizer);
        state.put("scheduler", scheduler);
        Fabric fabric = new Fabric();
        if (!source.equals("-")) {
            fabric.load(Path.of(source), state);
        }
        List<String> lrs = new ArrayList<>();
        for (String metric : metrics.isEmpty() ? new String[0] : metrics.split(",")) {
            scheduler.step(Float.parseFloat(metric));
            lrs.add(Double.toString(lr(optimizer)));
        }
        fabric.save(out, state);
        System.out.println("{\"lrs\": [" + String.join(", ", lrs) + "]}");
    }

    private static double lr(SGD optimizer) {
        return optimizer.param_groups().get(0).options().get_lr();
    }

    private static String position(SGD optimizer, StepLR scheduler) {
        Object stepCount = io.fabricckpt.StateDicts.of(scheduler).get("_step_count");
        return "{\"lr\": " + lr(optimizer) + ", \"step_count\": " + stepCount + "}";
    }
}
