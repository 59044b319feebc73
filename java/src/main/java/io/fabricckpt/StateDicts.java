package io.fabricckpt;

import io.fabricckpt.core.IncompatibleKeys;
import io.fabricckpt.core.PyOrderedDict;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.ModuleStates;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.SchedulerStates;
import io.fabricckpt.internal.ValueConverter;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import org.bytedeco.pytorch.LRScheduler;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Optimizer;
import org.bytedeco.pytorch.ReduceLROnPlateauScheduler;

/**
 * Python's {@code state_dict()} and {@code load_state_dict()} for the preset's modules, optimizers
 * and LR schedulers ({@code StepLR}, {@code ReduceLROnPlateauScheduler}), for code that handles a raw
 * checkpoint itself:
 * <pre>{@code
 * Map<String, Object> checkpoint = fabric.load(path);
 * StateDicts.load(model, (Map<?, ?>) checkpoint.get("model"), true);
 * StateDicts.load(optimizer, (Map<?, ?>) checkpoint.get("optimizer"));
 * }</pre>
 * Thread-safe as far as the module or optimizer is: do not change one from two threads at once.
 */
public final class StateDicts {
    private StateDicts() {}

    /** {@code model.state_dict()}: parameter and buffer names to tensors sharing the model's storage. */
    public static PyOrderedDict of(Module model) {
        return (PyOrderedDict) toJava(() -> FabricNative.moduleStateDict(model));
    }

    /** {@code optimizer.state_dict()}: {@code {'state': {index: {...}}, 'param_groups': [...]}}. */
    @SuppressWarnings("unchecked")
    public static Map<Object, Object> of(Optimizer optimizer) {
        return (Map<Object, Object>) toJava(() -> FabricNative.optimizerStateDict(optimizer));
    }

    /**
     * {@code optimizer.state_dict()} of an optimizer that {@code scheduler} drives: each group also has
     * the {@code initial_lr} Python's scheduler adds (its base lr).
     */
    @SuppressWarnings("unchecked")
    public static Map<Object, Object> of(Optimizer optimizer, LRScheduler scheduler) {
        return (Map<Object, Object>) toJava(() -> SchedulerStates.optimizerStateDict(optimizer, List.of(scheduler)));
    }

    /**
     * {@code scheduler.state_dict()}: Python's {@code StepLR} layout ({@code step_size}, {@code gamma},
     * {@code base_lrs}, {@code last_epoch}, {@code _step_count}, ..., {@code _last_lr}).
     */
    @SuppressWarnings("unchecked")
    public static Map<Object, Object> of(LRScheduler scheduler) {
        return (Map<Object, Object>) toJava(() -> SchedulerStates.stateDict(scheduler, List.of()));
    }

    /**
     * {@code scheduler.state_dict()}: Python's {@code ReduceLROnPlateau} layout; {@code optimizer} is the
     * one the scheduler drives (its learning rates are {@code _last_lr}).
     */
    @SuppressWarnings("unchecked")
    public static Map<Object, Object> of(ReduceLROnPlateauScheduler scheduler, Optimizer optimizer) {
        return (Map<Object, Object>) toJava(() -> SchedulerStates.stateDict(scheduler, List.of(optimizer)));
    }

    /**
     * {@code scheduler.load_state_dict(stateDict)}: the step count; {@code step_size} and {@code gamma}
     * must be those the scheduler was built with. The learning rates come with the optimizer's dict.
     */
    public static void load(LRScheduler scheduler, Map<?, ?> stateDict) {
        loadScheduler(scheduler, stateDict);
    }

    /** {@code scheduler.load_state_dict(stateDict)}: every field the dict has, checked before any changes. */
    public static void load(ReduceLROnPlateauScheduler scheduler, Map<?, ?> stateDict) {
        loadScheduler(scheduler, stateDict);
    }

    private static void loadScheduler(Object scheduler, Map<?, ?> stateDict) {
        try (NativeValue tree = ValueConverter.toNative(stateDict)) {
            SchedulerStates.load(scheduler, tree);
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    /**
     * {@code model.load_state_dict(stateDict, strict)}: copies the tensors into the parameters and
     * buffers. Sizes must always match.
     *
     * @return what did not match (Python's {@code _IncompatibleKeys}): empty when strict
     * @throws io.fabricckpt.core.StateMismatchException strict and keys do not match both ways, or a
     *     size differs; its lists name them
     */
    public static IncompatibleKeys load(Module model, Map<?, ?> stateDict, boolean strict) {
        try (NativeValue tree = ValueConverter.toNative(stateDict)) {
            return ModuleStates.load(model, tree, strict, "");
        }
    }

    /** {@code optimizer.load_state_dict(stateDict)}: restores per-parameter state and hyper-parameters. */
    public static void load(Optimizer optimizer, Map<?, ?> stateDict) {
        try (NativeValue tree = ValueConverter.toNative(stateDict)) {
            FabricNative.loadOptimizerStateDict(optimizer, tree);
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    private static Object toJava(Supplier<NativeValue> call) {
        try (NativeValue tree = call.get()) {
            return ValueConverter.toJava(tree);
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }
}
