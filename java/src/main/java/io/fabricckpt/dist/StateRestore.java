package io.fabricckpt.dist;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.IncompatibleKeys;
import io.fabricckpt.core.StateMismatchException;
import io.fabricckpt.core.Stateful;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.ModuleStates;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.SchedulerStates;
import io.fabricckpt.internal.ValueConverter;
import io.fabricckpt.internal.io.CheckpointReader;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Optimizer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Lightning's load into a state: models and optimizers restored in place, {@link Stateful} objects
 * through their dictionary, plain values replaced in the caller's map; with {@code strict}, a
 * requested key the checkpoint lacks is an error; the rest of the checkpoint is returned.
 */
final class StateRestore {
    private static final Logger LOG = LoggerFactory.getLogger(StateRestore.class);

    private StateRestore() {}

    /** The whole checkpoint, nothing restored ({@code fabric.load(path)}). */
    static Map<String, Object> whole(CheckpointLocation location, CheckpointReader reader) {
        try (NativeValue all = reader.readAll()) {
            return topLevel(location, ValueConverter.toJava(all));
        }
    }

    /**
     * Restores what {@code state} requests from {@code reader}.
     *
     * @return the remainder: the checkpoint's entries that were not restored
     */
    @SuppressWarnings("unchecked") // plain values are put back only where the caller's map held one
    static Map<String, Object> into(CheckpointLocation location, CheckpointReader reader, Map<String, ?> requested,
            boolean strict) {
        Map<String, Object> state = (Map<String, Object>) requested;
        if (!reader.isStateDictionary() || state.isEmpty()) {
            return whole(location, reader);
        }
        if (strict) {
            List<String> missing = state.keySet().stream().filter(k -> !reader.has(k)).toList();
            if (!missing.isEmpty()) {
                throw new StateMismatchException(location + ": the requested state contains " + (missing.size() == 1
                        ? "a key '" + missing.get(0) + "' that does not" : "keys " + missing + " that do not")
                        + " exist in the loaded checkpoint. To disable strict loading, set strict=false.",
                        missing, List.of(), List.of(), null);
            }
        }
        requireWritableForPlainValues(location, reader, state);
        NativeShardPlan plan = StateConversion.shardPlan(state);
        String moduleKey = StateConversion.singleModuleKey(state);
        ValueConverter.ToJava toJava = new ValueConverter.ToJava();
        List<String> restored = new ArrayList<>();
        for (Map.Entry<String, Object> entry : List.copyOf(state.entrySet())) {
            String key = entry.getKey();
            Object target = entry.getValue();
            if (!reader.has(key)) {
                continue;
            }
            // Models are read straight into their tensors where the reader can (as DCP loads in place).
            try (NativeValue saved = StateConversion.isModel(target)
                    ? reader.readInto(key, plan, StateConversion.moduleOf(target))
                    : reader.read(key, plan)) { // released at once (mapped chunks, copies)
                if (StateConversion.isModel(target)) {
                    IncompatibleKeys ignored = module(location, key, StateConversion.moduleOf(target), saved, strict);
                    if (!ignored.isEmpty()) {
                        LOG.warn("{} ['{}']: not strict, so these keys were not loaded: missing {}, unexpected {}",
                                location, key, ignored.missingKeys(), ignored.unexpectedKeys());
                    }
                } else if (target instanceof Optimizer optimizer) {
                    optimizer(location, key, optimizer, moduleKey == null ? null : state.get(moduleKey), saved);
                } else if (SchedulerStates.isScheduler(target)) {
                    try {
                        SchedulerStates.load(target, saved);
                    } catch (RuntimeException e) {
                        throw NativeErrors.translate(e, location + " ['" + key + "']");
                    }
                } else if (target instanceof Stateful stateful) {
                    Map<String, Object> dict = stringKeys(location, key, toJava.convert(saved));
                    try {
                        stateful.loadStateDict(dict);
                    } catch (RuntimeException e) {
                        throw new CheckpointException(location + ": cannot restore '" + key + "': " + e, e);
                    }
                } else {
                    replace(location, state, key, toJava.convert(saved));
                }
            }
            restored.add(key);
        }
        return topLevel(location, toJava.convert(reader.remainder(restored)));
    }

    /** Python's {@code model.load_state_dict(saved, strict)}; what a non-strict load left out. */
    static IncompatibleKeys module(CheckpointLocation location, String key, Module module, NativeValue saved,
            boolean strict) {
        return ModuleStates.load(module, saved, strict, location + (key == null ? "" : " ['" + key + "']"));
    }

    /** An optimizer from an index- or name-keyed state dict (names need the state's model). */
    static void optimizer(CheckpointLocation location, String key, Optimizer optimizer, Object model,
            NativeValue saved) {
        try {
            if (isKeyedByName(saved) && StateConversion.isModel(model)) {
                FabricNative.loadOptimizerStateDictByName(optimizer, StateConversion.moduleOf(model), saved);
            } else {
                FabricNative.loadOptimizerStateDict(optimizer, saved);
            }
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e, location + (key == null ? "" : " ['" + key + "']"));
        }
    }

    /** Whether an optimizer state dict names its parameters (FSDP's form) instead of numbering them. */
    private static boolean isKeyedByName(NativeValue saved) {
        if (saved.kind() != NativeValue.DICT || !saved.containsKey("param_groups")) {
            return false;
        }
        NativeValue groups = saved.getKey("param_groups");
        for (int g = 0, n = groups.kind() == NativeValue.LIST ? groups.size() : 0; g < n; g++) {
            NativeValue group = groups.item(g);
            if (group.kind() == NativeValue.DICT && group.containsKey("params")) {
                NativeValue params = group.getKey("params");
                if (params.kind() == NativeValue.LIST && params.size() > 0) {
                    return params.item(0).kind() == NativeValue.STRING;
                }
            }
        }
        return false;
    }

    /** A plain value goes back into the caller's map, as Lightning copies it back. */
    private static void replace(CheckpointLocation location, Map<String, Object> state, String key, Object value) {
        try {
            state.put(key, value);
        } catch (UnsupportedOperationException e) {
            throw unmodifiable(location, key, e);
        }
    }

    /**
     * Plain values are copied back into {@code state}: an unmodifiable map (Map.of) is refused before
     * anything is restored, rather than after the models were.
     */
    private static void requireWritableForPlainValues(CheckpointLocation location, CheckpointReader reader,
            Map<String, Object> state) {
        for (Map.Entry<String, Object> entry : state.entrySet()) {
            Object target = entry.getValue();
            boolean restoredInPlace = StateConversion.isTensorState(target) || target instanceof Stateful
                    || SchedulerStates.isScheduler(target);
            if (!restoredInPlace && reader.has(entry.getKey())) {
                try {
                    state.put(entry.getKey(), target); // the same value: a probe that changes nothing
                } catch (UnsupportedOperationException e) {
                    throw unmodifiable(location, entry.getKey(), e);
                }
                return;
            }
        }
    }

    private static IllegalArgumentException unmodifiable(CheckpointLocation location, String key,
            UnsupportedOperationException e) {
        return new IllegalArgumentException(location + ": cannot restore the plain value '" + key
                + "' into an unmodifiable state map (such as Map.of(...)): loading copies plain values back into"
                + " the map, as Lightning does; pass a mutable one (new LinkedHashMap<>(Map.of(...)))", e);
    }

    private static Map<String, Object> stringKeys(CheckpointLocation location, String where, Object value) {
        if (!(value instanceof Map<?, ?> map)) {
            throw new CheckpointException(location + ": '" + where + "' holds a "
                    + (value == null ? "None" : value.getClass().getSimpleName()) + ", not a state dictionary");
        }
        Map<String, Object> out = new LinkedHashMap<>();
        map.forEach((k, v) -> out.put(String.valueOf(k), v));
        return out;
    }

    static Map<String, Object> topLevel(CheckpointLocation location, Object root) {
        if (!(root instanceof Map<?, ?> map)) {
            throw new CheckpointException(location + ": the checkpoint is a "
                    + (root == null ? "None" : root.getClass().getSimpleName())
                    + ", not a dictionary; read it with TorchFiles.read");
        }
        Map<String, Object> out = new LinkedHashMap<>();
        for (Map.Entry<?, ?> e : map.entrySet()) {
            if (!(e.getKey() instanceof String key)) {
                throw new CheckpointException(location + ": top-level key " + e.getKey()
                        + " is not a string; read it with TorchFiles.read");
            }
            out.put(key, e.getValue());
        }
        return out;
    }
}
