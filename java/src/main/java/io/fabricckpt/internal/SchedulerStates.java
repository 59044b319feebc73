package io.fabricckpt.internal;

import io.fabricckpt.core.CheckpointException;
import java.util.Collection;
import java.util.List;
import org.bytedeco.pytorch.LRScheduler;
import org.bytedeco.pytorch.Optimizer;
import org.bytedeco.pytorch.ReduceLROnPlateauScheduler;

/**
 * LR schedulers in a Fabric state, the preset's two kinds: a {@link LRScheduler} ({@code StepLR}) is
 * saved as Python's {@code StepLR.state_dict()}, and the optimizer it drives gets the
 * {@code initial_lr} Python's scheduler adds to each param group; a {@link ReduceLROnPlateauScheduler}
 * as Python's {@code ReduceLROnPlateau.state_dict()}. Both are restored in place. The layouts are
 * the native state layer's (cpp/src/state/scheduler_state.cpp, plateau_state.cpp). Stateless; safe
 * from any thread that may touch the schedulers and optimizers.
 */
public final class SchedulerStates {
    private SchedulerStates() {}

    public static boolean isScheduler(Object value) {
        return value instanceof LRScheduler || value instanceof ReduceLROnPlateauScheduler;
    }

    /**
     * {@code scheduler.state_dict()}; {@code peers} are the state's values, among which a
     * ReduceLROnPlateauScheduler's optimizer is (libtorch keeps it private: the state must hold one).
     */
    public static NativeValue stateDict(Object scheduler, Collection<?> peers) {
        try {
            if (scheduler instanceof ReduceLROnPlateauScheduler plateau) {
                return FabricNative.plateauSchedulerStateDict(plateau, onlyOptimizer(peers));
            }
            return FabricNative.lrSchedulerStateDict((LRScheduler) scheduler);
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    /** {@code scheduler.load_state_dict(saved)}; the native error as it is, for the caller to place. */
    public static void load(Object scheduler, NativeValue saved) {
        if (scheduler instanceof ReduceLROnPlateauScheduler plateau) {
            FabricNative.loadPlateauSchedulerStateDict(plateau, saved);
        } else {
            FabricNative.loadLrSchedulerStateDict((LRScheduler) scheduler, saved);
        }
    }

    /**
     * {@code optimizer.state_dict()} as Python writes it beside its scheduler: with {@code initial_lr}
     * in each group when one of {@code peers} (the other values of the state) is a StepLR driving it.
     */
    public static NativeValue optimizerStateDict(Optimizer optimizer, Collection<?> peers) {
        try {
            for (Object peer : peers) {
                if (peer instanceof LRScheduler scheduler && FabricNative.lrSchedulerDrives(scheduler, optimizer)) {
                    return FabricNative.scheduledOptimizerStateDict(optimizer, scheduler);
                }
            }
            return FabricNative.optimizerStateDict(optimizer);
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    private static Optimizer onlyOptimizer(Collection<?> peers) {
        List<Optimizer> optimizers = peers.stream().filter(Optimizer.class::isInstance).map(Optimizer.class::cast)
                .toList();
        if (optimizers.size() != 1) {
            throw new CheckpointException("a ReduceLROnPlateauScheduler is saved with its optimizer's learning rates,"
                    + " and libtorch does not tell which optimizer that is: the state must hold exactly one optimizer"
                    + " (it holds " + optimizers.size() + "); StateDicts.of(scheduler, optimizer) names it");
        }
        return optimizers.get(0);
    }
}
