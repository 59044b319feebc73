package io.fabricckpt;

import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeValue;
import java.util.Collection;
import org.bytedeco.pytorch.LRScheduler;
import org.bytedeco.pytorch.Optimizer;

/**
 * LR schedulers in a Fabric state: a preset {@link LRScheduler} (its {@code StepLR}) is saved as
 * Python's {@code StepLR.state_dict()} and restored in place; the optimizer it drives gets the
 * {@code initial_lr} Python's scheduler adds to each param group. The layout is the native state
 * layer's (cpp/src/state/scheduler_state.cpp). Stateless; safe from any thread that may touch the
 * scheduler and optimizer.
 */
final class SchedulerStates {
    private SchedulerStates() {}

    static boolean isScheduler(Object value) {
        return value instanceof LRScheduler;
    }

    /** {@code scheduler.state_dict()}. */
    static NativeValue stateDict(LRScheduler scheduler) {
        try {
            return FabricNative.lrSchedulerStateDict(scheduler);
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
    }

    /** {@code scheduler.load_state_dict(saved)}; the native error as it is, for the caller to place. */
    static void load(LRScheduler scheduler, NativeValue saved) {
        FabricNative.loadLrSchedulerStateDict(scheduler, saved);
    }

    /**
     * {@code optimizer.state_dict()} as Python writes it beside its scheduler: with {@code initial_lr}
     * in each group when one of {@code peers} (the other values of the state) drives the optimizer.
     */
    static NativeValue optimizerStateDict(Optimizer optimizer, Collection<?> peers) {
        try {
            for (Object peer : peers) {
                if (peer instanceof LRScheduler scheduler && FabricNative.lrSchedulerDrives(scheduler, optimizer)) {
                    return FabricNative.scheduledOptimizerStateDict(optimizer, scheduler);
                }
            }
            return FabricNative.optimizerStateDict(optimizer);
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
    }
}
