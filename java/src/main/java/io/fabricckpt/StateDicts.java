package io.fabricckpt;

import io.fabricckpt.core.IncompatibleKeys;
import io.fabricckpt.core.PyOrderedDict;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.ModuleStates;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ValueConverter;
import java.util.Map;
import java.util.function.Supplier;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Optimizer;

/**
 * Python's {@code state_dict()} and {@code load_state_dict()} for the preset's modules and
 * optimizers, for code that handles a raw checkpoint itself:
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
