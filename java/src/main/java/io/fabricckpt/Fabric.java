package io.fabricckpt;

import io.fabricckpt.dist.SingleDevice;
import io.fabricckpt.dist.Strategy;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ValueConverter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.function.BiPredicate;
import java.util.function.Supplier;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Optimizer;

/**
 * Lightning Fabric's checkpointing for the JVM: {@code fabric.save(path, state)} and
 * {@code fabric.load(path, state)}, reading and writing the files Python Lightning reads and writes.
 *
 * <p>A state is a map of names to models ({@link Module} of any kind), optimizers ({@link Optimizer}:
 * Adam, AdamW, SGD, RMSprop, Adagrad), {@link Stateful} objects and plain values. Saving turns each
 * top-level model and optimizer into the state dict Python would produce for it; loading restores
 * them in place. Only top-level values are converted, as in Lightning: a model inside a list is not.
 *
 * <p>With a {@link Strategy} several processes checkpoint together, as Lightning's strategies do:
 * under {@link io.fabricckpt.dist.Ddp} only global rank 0 writes the file and every rank returns from
 * {@code save} once it is written (or throws if it was not); every rank loads the file itself.
 */
public final class Fabric {

    private final Strategy strategy;
    private AsyncSaver asyncSaver; // created by the first saveAsync

    /** A single-device Fabric: this process writes and reads its checkpoints alone. */
    public Fabric() {
        this(SingleDevice.INSTANCE);
    }

    /** A Fabric whose saves and loads follow {@code strategy} (every rank must make the same calls). */
    public Fabric(Strategy strategy) {
        this.strategy = Objects.requireNonNull(strategy, "strategy");
    }

    public Strategy strategy() {
        return strategy;
    }

    // ------------------------------------------------------------------ processes (strategies)

    /**
     * Rank 0 runs {@code write}; every rank then learns how it went and waits on a barrier (as
     * Lightning's save ends with one). A failure on rank 0 is rethrown there and reported on the others.
     */
    private void onGlobalZero(Path path, Runnable write) {
        RuntimeException failure = null;
        if (strategy.isGlobalZero()) {
            try {
                write.run();
            } catch (RuntimeException e) {
                failure = e;
            }
        }
        if (strategy.worldSize() == 1) {
            if (failure != null) {
                throw failure;
            }
            return;
        }
        String outcome = strategy.broadcast(failure == null ? "" : "failed: " + failure, 0);
        strategy.barrier(); // a broadcast's root may return before the others received it
        if (failure != null) {
            throw failure;
        }
        if (!outcome.isEmpty()) {
            throw new CheckpointException(path + ": global rank 0 " + outcome + " (on rank "
                    + strategy.globalRank() + ")");
        }
    }

    /**
     * Every rank runs {@code load}, then all ranks agree (Lightning's barrier after a load): if any
     * rank failed, every rank throws.
     */
    private <T> T onEveryRank(Path path, Supplier<T> load) {
        if (strategy.worldSize() == 1) {
            return load.get();
        }
        T result = null;
        RuntimeException failure = null;
        try {
            result = load.get();
        } catch (RuntimeException e) {
            failure = e;
        }
        boolean allLoaded = strategy.reduceBooleanDecision(failure == null);
        if (failure != null) {
            throw failure;
        }
        if (!allLoaded) {
            throw new CheckpointException(path + ": another rank failed to load the checkpoint (rank "
                    + strategy.globalRank() + " loaded it)");
        }
        return result;
    }

    // ------------------------------------------------------------------------------- save

    /** {@code fabric.save(path, state)}: one torch.save file, written atomically. */
    public void save(Path path, Map<String, ?> state) {
        save(path, state, Map.of());
    }

    /**
     * {@code fabric.save(path, state, filter=...)}: for each key of {@code filter}, only the items of
     * that entry's state dict for which the predicate holds are saved, into a new plain dictionary
     * (a filtered model loses its OrderedDict type and {@code _metadata}, as in Lightning); an entry
     * left empty is not saved at all. Optimizer entries are not filtered along with their model.
     *
     * @throws IllegalArgumentException if a filter key is not a state key
     */
    public void save(Path path, Map<String, ?> state, Map<String, ? extends BiPredicate<Object, Object>> filter) {
        Objects.requireNonNull(state, "state");
        Objects.requireNonNull(filter, "filter");
        validateFilter(state, filter);
        onGlobalZero(path, () -> TorchFiles.writeNative(path, buildCheckpoint(state, filter),
                TorchFiles.WriteOptions.DEFAULT));
    }

    /**
     * {@link #save} in the background: the state is converted and its tensors copied before this
     * returns, so training can go on at once; the file is written by a background thread with
     * bounded memory (at most one more checkpoint staged while one is written). Saves of one path
     * land in the order they were made; a failure completes the future exceptionally and leaves the
     * previous file in place.
     *
     * @param listener told the bytes written, from the background thread; may be null
     * @throws UnsupportedOperationException under a multi-process strategy (not supported yet)
     */
    public CompletableFuture<Void> saveAsync(Path path, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, ProgressListener listener) {
        Objects.requireNonNull(state, "state");
        Objects.requireNonNull(filter, "filter");
        if (strategy.worldSize() > 1) {
            throw new UnsupportedOperationException("saveAsync under a multi-process strategy is not supported yet");
        }
        validateFilter(state, filter);
        return asyncSaver().save(path, buildCheckpoint(state, filter), TorchFiles.WriteOptions.DEFAULT, listener);
    }

    public CompletableFuture<Void> saveAsync(Path path, Map<String, ?> state) {
        return saveAsync(path, state, Map.of(), null);
    }

    private static void validateFilter(Map<String, ?> state, Map<String, ?> filter) {
        List<String> unknown = filter.keySet().stream().filter(k -> !state.containsKey(k)).toList();
        if (!unknown.isEmpty()) {
            throw new IllegalArgumentException("The filter keys " + unknown
                    + " are not present in the state keys " + state.keySet() + ".");
        }
    }

    private synchronized AsyncSaver asyncSaver() {
        if (asyncSaver == null) {
            asyncSaver = new AsyncSaver();
        }
        return asyncSaver;
    }

    /** The checkpoint tree of a state: models and optimizers as state dicts, filters applied. */
    private static NativeValue buildCheckpoint(Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter) {
        ValueConverter.ToNative toNative = new ValueConverter.ToNative();
        NativeValue checkpoint = NativeValue.newDict(false);
        for (Map.Entry<String, ?> entry : state.entrySet()) {
            String key = entry.getKey();
            NativeValue converted = convertForSave(entry.getValue(), filter.get(key), toNative);
            if (converted != null) {
                checkpoint.put(NativeValue.newKey(key), converted);
            }
        }
        return checkpoint;
    }

    /** The saved form of one top-level value, filtered; null when the filter removed everything. */
    private static NativeValue convertForSave(Object value, BiPredicate<Object, Object> filter,
            ValueConverter.ToNative toNative) {
        try {
            if (value instanceof Module module) {
                return filterNative(FabricNative.moduleStateDict(module), filter);
            }
            if (value instanceof Optimizer optimizer) {
                return filterNative(FabricNative.optimizerStateDict(optimizer), filter);
            }
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
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

    private static NativeValue filterNative(NativeValue dict, BiPredicate<Object, Object> filter) {
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

    // ------------------------------------------------------------------------------- load

    /** {@code fabric.load(path)}: the whole checkpoint, nothing restored. */
    public Map<String, Object> load(Path path) {
        return onEveryRank(path, () -> loadWhole(path));
    }

    private static Map<String, Object> loadWhole(Path path) {
        return topLevel(path, ValueConverter.toJava(TorchFiles.readNative(path)));
    }

    /** {@code fabric.load(path, state)} with strict loading. */
    public Map<String, Object> load(Path path, Map<String, Object> state) {
        return load(path, state, true);
    }

    /**
     * {@code fabric.load(path, state, strict)}: restores in place what {@code state} names. Models
     * get their parameters and buffers (strict: every key must match), optimizers their state and
     * hyper-parameters, {@link Stateful} objects their dictionary; plain values are replaced in
     * {@code state} (which must be mutable). With {@code strict}, a requested key missing from the
     * file is an error; keys in the file that were not requested are never an error.
     *
     * @return the remainder: everything in the checkpoint that was not restored
     */
    public Map<String, Object> load(Path path, Map<String, Object> state, boolean strict) {
        Objects.requireNonNull(state, "state");
        return onEveryRank(path, () -> loadInto(path, state, strict));
    }

    private static Map<String, Object> loadInto(Path path, Map<String, Object> state, boolean strict) {
        NativeValue checkpoint = TorchFiles.readNative(path);
        if (checkpoint.kind() != NativeValue.DICT) {
            return topLevel(path, ValueConverter.toJava(checkpoint));
        }
        if (state.isEmpty()) {
            return loadWhole(path);
        }
        if (strict) {
            for (String key : state.keySet()) {
                if (!checkpoint.containsKey(key)) {
                    throw new CheckpointException(path + ": the requested state contains a key '" + key
                            + "' that does not exist in the loaded checkpoint. To disable strict loading, "
                            + "set strict=false.");
                }
            }
        }
        ValueConverter.ToJava toJava = new ValueConverter.ToJava();
        for (Map.Entry<String, Object> entry : new ArrayList<>(state.entrySet())) {
            String key = entry.getKey();
            if (!checkpoint.containsKey(key)) {
                continue;
            }
            NativeValue saved = checkpoint.getKey(key);
            Object target = entry.getValue();
            try {
                if (target instanceof Module module) {
                    restoreModule(path, key, module, saved, strict);
                } else if (target instanceof Optimizer optimizer) {
                    FabricNative.loadOptimizerStateDict(optimizer, saved);
                } else if (target instanceof Stateful stateful) {
                    stateful.loadStateDict(stringKeys(path, key, toJava.convert(saved)));
                } else {
                    state.put(key, toJava.convert(saved));
                }
            } catch (CheckpointException e) {
                throw e;
            } catch (RuntimeException e) {
                throw new CheckpointException(path + ": cannot restore '" + key + "': " + e.getMessage(), e);
            }
            checkpoint.removeKey(key);
        }
        return topLevel(path, toJava.convert(checkpoint));
    }

    /**
     * {@code fabric.load_raw(path, model, strict)}: the file holds a model's state dict itself (as
     * {@code torch.save(model.state_dict(), path)} writes), not a Fabric checkpoint.
     */
    public void loadRaw(Path path, Module model, boolean strict) {
        restoreModule(path, null, model, TorchFiles.readNative(path), strict);
    }

    public void loadRaw(Path path, Module model) {
        loadRaw(path, model, true);
    }

    /** {@code fabric.load_raw(path, optimizer)}: the file holds an optimizer's state dict. */
    public void loadRaw(Path path, Optimizer optimizer) {
        try {
            FabricNative.loadOptimizerStateDict(optimizer, TorchFiles.readNative(path));
        } catch (RuntimeException e) {
            throw new CheckpointException(path + ": " + e.getMessage(), e);
        }
    }

    private static void restoreModule(Path path, String key, Module module, NativeValue saved, boolean strict) {
        try (BytePointer ignored = FabricNative.loadModuleStateDict(module, saved, strict)) {
            // not strict: what did not match is ignored, as in Python
        } catch (RuntimeException e) {
            throw new CheckpointException(path + (key == null ? "" : " ['" + key + "']") + ": " + e.getMessage(), e);
        }
    }

    private static Map<String, Object> stringKeys(Path path, String where, Object value) {
        if (!(value instanceof Map<?, ?> map)) {
            throw new CheckpointException(path + ": '" + where + "' holds a "
                    + (value == null ? "None" : value.getClass().getSimpleName()) + ", not a state dictionary");
        }
        Map<String, Object> out = new LinkedHashMap<>();
        map.forEach((k, v) -> out.put(String.valueOf(k), v));
        return out;
    }

    private static Map<String, Object> topLevel(Path path, Object root) {
        if (!(root instanceof Map<?, ?> map)) {
            throw new CheckpointException(path + ": the checkpoint is a "
                    + (root == null ? "None" : root.getClass().getSimpleName())
                    + ", not a dictionary; read it with TorchFiles.read");
        }
        Map<String, Object> out = new LinkedHashMap<>();
        for (Map.Entry<?, ?> e : map.entrySet()) {
            if (!(e.getKey() instanceof String key)) {
                throw new CheckpointException(path + ": top-level key " + e.getKey()
                        + " is not a string; read it with TorchFiles.read");
            }
            out.put(key, e.getValue());
        }
        return out;
    }
}
