package io.fabricckpt.dist;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.Stateful;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ValueConverter;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.BiPredicate;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Optimizer;

/**
 * A Fabric state as the tree a checkpoint holds, as Lightning converts it: each top-level model,
 * optimizer or {@link Stateful} becomes its state dict, everything else is stored as it is; filters
 * keep part of a state dict. Shared by the strategies; sharded models only under {@link Fsdp}.
 */
final class StateConversion {
    private StateConversion() {}

    /** Lightning's check: every filter key is a state key. */
    static void validateFilter(Map<String, ?> state, Map<String, ?> filter) {
        List<String> unknown = filter.keySet().stream().filter(k -> !state.containsKey(k)).toList();
        if (!unknown.isEmpty()) {
            throw new IllegalArgumentException("The filter keys " + unknown
                    + " are not present in the state keys " + state.keySet() + ".");
        }
    }

    /** The checkpoint tree of a state: models and optimizers as state dicts, filters applied. */
    static NativeValue toCheckpoint(Map<String, ?> state, Map<String, ? extends BiPredicate<Object, Object>> filter) {
        ValueConverter.ToNative toNative = new ValueConverter.ToNative();
        NativeValue checkpoint = NativeValue.newDict(false);
        for (Map.Entry<String, ?> entry : state.entrySet()) {
            String key = entry.getKey();
            NativeValue converted = convert(entry.getValue(), filter.get(key), toNative);
            if (converted != null) {
                checkpoint.put(NativeValue.newKey(key), converted);
            }
        }
        return checkpoint;
    }

    /** The saved form of one top-level value, filtered; null when the filter removed everything. */
    static NativeValue convert(Object value, BiPredicate<Object, Object> filter, ValueConverter.ToNative toNative) {
        try {
            if (value instanceof Module module) {
                return filter(FabricNative.moduleStateDict(module), filter);
            }
            if (value instanceof Optimizer optimizer) {
                return filter(FabricNative.optimizerStateDict(optimizer), filter);
            }
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
        if (value instanceof ShardedModule) {
            throw new IllegalArgumentException("a ShardedModule holds shards: save it under the Fsdp strategy");
        }
        Object plain = value instanceof Stateful stateful ? stateful.stateDict() : value;
        if (filter != null && plain instanceof Map<?, ?> map) {
            Map<Object, Object> kept = new LinkedHashMap<>();
            map.forEach((k, v) -> {
                if (filter.test(k, v)) {
                    kept.put(k, v);
                }
            });
            return kept.isEmpty() ? null : toNative.convert(kept);
        }
        return toNative.convert(plain);
    }

    /** The items of a state dict the filter keeps, in a new plain dict; null when none is kept. */
    static NativeValue filter(NativeValue dict, BiPredicate<Object, Object> filter) {
        if (filter == null) {
            return dict;
        }
        ValueConverter.ToJava toJava = new ValueConverter.ToJava();
        NativeValue kept = NativeValue.newDict(false);
        for (int i = 0, n = dict.size(); i < n; i++) {
            NativeValue key = dict.key(i);
            NativeValue item = dict.value(i);
            if (filter.test(toJava.convert(key), toJava.convert(item))) {
                kept.put(key, item);
            }
        }
        return kept.size() == 0 ? null : kept;
    }

    /** A model's state dict, or an optimizer's keyed by the names of its parameters in the state's model. */
    static NativeValue shardedStateDict(CheckpointLocation location, Object value, Map<String, ?> state) {
        try {
            if (isModel(value)) {
                return FabricNative.moduleStateDict(moduleOf(value));
            }
            String moduleKey = singleModuleKey(state);
            if (moduleKey == null) {
                throw new CheckpointException(location + ": an optimizer is saved under FSDP by the names of its"
                        + " parameters, which needs exactly one model in the state");
            }
            return FabricNative.optimizerStateDictByName((Optimizer) value, moduleOf(state.get(moduleKey)));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e, location.toString());
        }
    }

    /** A model or an optimizer: what a sharded checkpoint keeps in its shard files. */
    static boolean isTensorState(Object target) {
        return isModel(target) || target instanceof Optimizer;
    }

    static boolean isModel(Object target) {
        return target instanceof Module || target instanceof ShardedModule;
    }

    static Module moduleOf(Object value) {
        return value instanceof ShardedModule sharded ? sharded.module() : (Module) value;
    }

    /** The key of the state's only model (sharded or not); null when there is none or several. */
    static String singleModuleKey(Map<String, ?> state) {
        String found = null;
        for (Map.Entry<String, ?> entry : state.entrySet()) {
            if (isModel(entry.getValue())) {
                if (found != null) {
                    return null;
                }
                found = entry.getKey();
            }
        }
        return found;
    }

    /** The shards the state's models declare, and the optimizers that follow them (empty: nothing sharded). */
    static NativeShardPlan shardPlan(Map<String, ?> state) {
        NativeShardPlan plan = new NativeShardPlan();
        String moduleKey = singleModuleKey(state);
        for (Map.Entry<String, ?> entry : state.entrySet()) {
            if (entry.getValue() instanceof ShardedModule sharded) {
                sharded.addTo(plan, entry.getKey());
            } else if (entry.getValue() instanceof Optimizer && moduleKey != null) {
                plan.addOptimizer(entry.getKey(), moduleKey);
            }
        }
        return plan;
    }
}
