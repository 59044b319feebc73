package io.fabricckpt;

import io.fabricckpt.dist.Fsdp;
import io.fabricckpt.dist.SingleDevice;
import io.fabricckpt.dist.Strategy;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeProcessGroup;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeShardedReader;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ValueConverter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
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
 *
 * <p>{@link #close()} waits for the background saves of {@link #saveAsync} (a JVM exit waits for them
 * too). Thread-safety: one Fabric may be shared, but the state maps passed to it must not be changed
 * by other threads during a call; under a multi-process strategy every rank makes the same calls in
 * the same order.
 */
public final class Fabric implements AutoCloseable {

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

    /**
     * Whether saves write globals that {@code torch.load(weights_only=True)} refuses (e.g. an
     * {@code argparse.Namespace} of hparams loaded from a Lightning checkpoint): off by default, and a
     * save of a state holding any fails with a {@link CheckpointException} naming each and where it
     * sits, before anything is written. Turn it on only for trusted data. Returns this.
     */
    public Fabric allowUnsafeGlobals(boolean allow) {
        this.unsafeGlobalsAllowed = allow;
        return this;
    }

    private volatile boolean unsafeGlobalsAllowed;

    private TorchFiles.WriteOptions writeOptions() {
        return TorchFiles.WriteOptions.DEFAULT.withUnsafeGlobalsAllowed(unsafeGlobalsAllowed);
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
        if (strategy instanceof Fsdp fsdp) {
            saveFsdp(path, state, filter, fsdp);
            return;
        }
        onGlobalZero(path, () -> TorchFiles.writeNative(path, buildCheckpoint(state, filter), writeOptions()));
    }

    // ---------------------------------------------------------------------- FSDP (sharded) saves

    private void saveFsdp(Path path, Map<String, ?> state, Map<String, ? extends BiPredicate<Object, Object>> filter,
            Fsdp fsdp) {
        NativeProcessGroup group = fsdp.processGroup().nativeGroup();
        NativeShardPlan plan = shardPlan(state);
        String moduleKey = singleModuleKey(state);
        ValueConverter.ToNative toNative = new ValueConverter.ToNative();
        // The native trees are released as soon as the save is done (a full state is a whole copy of
        // the model on rank 0), not whenever the garbage collector gets to their handles.
        List<NativeValue> handles = new ArrayList<>();
        try {
            if (fsdp.stateDictType() == Fsdp.StateDictType.SHARDED) {
                saveShardedDirectory(path, state, filter, group, plan, moduleKey, toNative, handles,
                        unsafeGlobalsAllowed);
            } else {
                saveGatheredFile(path, state, filter, group, plan, moduleKey, toNative, handles);
            }
        } finally {
            handles.forEach(NativeValue::close);
        }
    }

    private static void saveShardedDirectory(Path path, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, NativeProcessGroup group, NativeShardPlan plan,
            String moduleKey, ValueConverter.ToNative toNative, List<NativeValue> handles,
            boolean unsafeGlobalsAllowed) {
        if (!filter.isEmpty()) {
            throw new UnsupportedOperationException("FSDP doesn't support loading sharded filtered checkpoints,"
                    + " so saving them is disabled.");
        }
        // Models and optimizers go into the shard files; everything else into meta.pt (as Lightning).
        NativeValue tensors = keep(handles, NativeValue.newDict(false));
        NativeValue meta = keep(handles, NativeValue.newDict(false));
        for (Map.Entry<String, ?> entry : state.entrySet()) {
            Object value = entry.getValue();
            boolean sharded = isTensorState(value);
            NativeValue converted = keep(handles, sharded ? convertSharded(path, value, state, moduleKey)
                    : convertForSave(value, null, toNative));
            (sharded ? tensors : meta).put(NativeValue.newKey(entry.getKey()), converted);
        }
        try {
            FabricNative.saveShardedOptions(NativeCalls.path(path), tensors, meta, plan, group, true,
                    unsafeGlobalsAllowed);
        } catch (RuntimeException e) {
            throw new CheckpointException(path + ": sharded save failed: " + e.getMessage(), e);
        }
    }

    /** FULL: whole tensors gathered to rank 0, which writes one torch.save file named after the path. */
    private void saveGatheredFile(Path path, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, NativeProcessGroup group, NativeShardPlan plan,
            String moduleKey, ValueConverter.ToNative toNative, List<NativeValue> handles) {
        NativeValue checkpoint = keep(handles, NativeValue.newDict(false));
        for (Map.Entry<String, ?> entry : state.entrySet()) {
            Object value = entry.getValue();
            BiPredicate<Object, Object> keep = filter.get(entry.getKey());
            NativeValue converted = isTensorState(value)
                    ? filterNative(keep(handles, convertSharded(path, value, state, moduleKey)), keep)
                    : convertForSave(value, keep, toNative);
            if (converted != null) {
                checkpoint.put(NativeValue.newKey(entry.getKey()), keep(handles, converted));
            }
        }
        try {
            FabricNative.gatherFull(checkpoint, plan, group);
        } catch (RuntimeException e) {
            throw new CheckpointException(path + ": gathering the full state failed: " + e.getMessage(), e);
        }
        onGlobalZero(path, () -> TorchFiles.writeNative(path, checkpoint,
                writeOptions().withArchiveName(TorchFiles.archiveNameFor(path))));
    }

    private static NativeValue keep(List<NativeValue> handles, NativeValue value) {
        if (value != null) {
            handles.add(value);
        }
        return value;
    }

    /** A model's state dict, or an optimizer's keyed by the names of its parameters in the state's model. */
    private static NativeValue convertSharded(Path path, Object value, Map<String, ?> state, String moduleKey) {
        try {
            if (value instanceof ShardedModule sharded) {
                return FabricNative.moduleStateDict(sharded.module());
            }
            if (value instanceof Module module) {
                return FabricNative.moduleStateDict(module);
            }
            if (moduleKey == null) {
                throw new CheckpointException(path + ": an optimizer is saved under FSDP by the names of its"
                        + " parameters, which needs exactly one model in the state");
            }
            return FabricNative.optimizerStateDictByName((Optimizer) value, moduleOf(state.get(moduleKey)));
        } catch (CheckpointException e) {
            throw e;
        } catch (RuntimeException e) {
            throw new CheckpointException(path + ": " + e.getMessage(), e);
        }
    }

    private static Module moduleOf(Object value) {
        return value instanceof ShardedModule sharded ? sharded.module() : (Module) value;
    }

    /** The key of the state's only model (sharded or not); null when there is none or several. */
    private static String singleModuleKey(Map<String, ?> state) {
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

    /** The shards the state's models declare, and the optimizers that follow them. */
    private static NativeShardPlan shardPlan(Map<String, ?> state) {
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

    /**
     * {@link #save} in the background. The state is converted here (models and optimizers become
     * state dicts sharing the caller's tensors; no tensor bytes are copied) and this returns at once:
     * a background thread copies the tensors ({@link AsyncSave#staged()}), another writes the copy
     * ({@link AsyncSave#written()}). The caller's next forward and backward pass overlap the copy; it
     * must not change the saved tensors before {@code staged()}: call {@link #step(Optimizer)} (or
     * {@link #awaitStaged()} before any other in-place change, such as a forward pass in training
     * mode that updates BatchNorm running statistics).
     *
     * <p>Memory: at most two copies of a state, the one being written and one staged; a further save
     * waits while one is not staged yet (back-pressure). Saves of one path land in the order they were
     * made; a failure completes {@code written()} exceptionally and leaves the previous file in place.
     *
     * @param listener told the bytes written, from the background thread; may be null
     * @throws UnsupportedOperationException under a multi-process strategy (not supported yet)
     */
    public AsyncSave saveAsync(Path path, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, ProgressListener listener) {
        Objects.requireNonNull(state, "state");
        Objects.requireNonNull(filter, "filter");
        if (strategy.worldSize() > 1 || strategy instanceof Fsdp) {
            throw new UnsupportedOperationException("saveAsync under a multi-process strategy is not supported yet");
        }
        validateFilter(state, filter);
        return asyncSaver().saveTree(path, buildCheckpoint(state, filter), writeOptions(), listener);
    }

    public AsyncSave saveAsync(Path path, Map<String, ?> state) {
        return saveAsync(path, state, Map.of(), null);
    }

    /**
     * Blocks until every {@link #saveAsync} made so far is staged, so the saved tensors may change:
     * call it before changing them in place (e.g. before {@code optimizer.step()}).
     */
    public void awaitStaged() {
        AsyncSaver saver;
        synchronized (this) {
            saver = asyncSaver;
        }
        if (saver != null) {
            saver.awaitStaged();
        }
    }

    /**
     * {@code optimizer.step()} once every {@link #saveAsync} made so far is staged: the one call a
     * training loop needs so that a step never reaches a checkpoint requested before it.
     */
    public void step(Optimizer optimizer) {
        Objects.requireNonNull(optimizer, "optimizer");
        awaitStaged();
        optimizer.step();
    }

    private static void validateFilter(Map<String, ?> state, Map<String, ?> filter) {
        List<String> unknown = filter.keySet().stream().filter(k -> !state.containsKey(k)).toList();
        if (!unknown.isEmpty()) {
            throw new IllegalArgumentException("The filter keys " + unknown
                    + " are not present in the state keys " + state.keySet() + ".");
        }
    }

    /** Waits for this Fabric's background saves to land (their failures complete their futures). */
    @Override
    public synchronized void close() {
        if (asyncSaver != null) {
            asyncSaver.close();
            asyncSaver = null;
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
        if (isShardedCheckpoint(path)) {
            return topLevel(path, ValueConverter.toJava(consolidate(path)));
        }
        return topLevel(path, ValueConverter.toJava(TorchFiles.readNative(path)));
    }

    static boolean isShardedCheckpoint(Path path) {
        return Files.isDirectory(path) && FabricNative.isShardedCheckpoint(NativeCalls.path(path));
    }

    /**
     * A sharded directory as one tree: every tensor whole (what {@code dcp_to_torch_save} gives),
     * then the entries of Lightning's {@code meta.pt}, as Lightning's consolidation does.
     */
    static NativeValue consolidate(Path dir) {
        NativeValue all;
        try (NativeShardedReader reader = openSharded(dir)) {
            all = reader.readAll();
        } catch (RuntimeException e) {
            throw NativeCalls.translate(e);
        }
        NativeValue meta = readMeta(dir);
        for (int i = 0, n = meta.size(); i < n; i++) {
            all.put(meta.key(i), meta.value(i));
        }
        return all;
    }

    private static NativeShardedReader openSharded(Path dir) {
        try {
            return new NativeShardedReader(NativeCalls.path(dir));
        } catch (RuntimeException e) {
            throw new CheckpointException(e.getMessage(), e);
        }
    }

    /** Lightning's meta.pt (the state that is not a model or optimizer); empty when absent. */
    private static NativeValue readMeta(Path dir) {
        Path meta = dir.resolve("meta.pt");
        if (!Files.isRegularFile(meta)) {
            return NativeValue.newDict(false);
        }
        NativeValue value = TorchFiles.readNative(meta);
        if (value.kind() != NativeValue.DICT) {
            throw new CheckpointException(meta + ": holds a " + value.kind() + " node, not a dictionary");
        }
        return value;
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
        if (isShardedCheckpoint(path)) {
            return onEveryRank(path, () -> state.isEmpty() ? loadWhole(path) : loadShardedInto(path, state, strict));
        }
        return onEveryRank(path, () -> loadInto(path, state, strict));
    }

    /**
     * Lightning's sharded load: models and optimizers from the shard files (each rank reading the
     * regions its shards cover), the rest from meta.pt; the remainder is what meta.pt holds beyond the
     * requested keys.
     */
    private static Map<String, Object> loadShardedInto(Path path, Map<String, Object> state, boolean strict) {
        try (NativeShardedReader reader = openSharded(path)) {
            return loadShardedInto(path, reader, state, strict);
        }
    }

    private static Map<String, Object> loadShardedInto(Path path, NativeShardedReader reader, Map<String, Object> state,
            boolean strict) {
        List<String> savedKeys = new ArrayList<>();
        for (int i = 0, n = reader.topLevelKeyCount(); i < n; i++) {
            savedKeys.add(NativeCalls.string(reader.topLevelKey(i)));
        }
        NativeValue meta = readMeta(path);
        NativeShardPlan plan = shardPlan(state);
        // models and optimizers from the shard files (each rank reading its regions), the rest from meta.pt
        return restore(path, state, strict, meta, new Source() {
            @Override
            public boolean has(String key, Object target) {
                return isTensorState(target) ? savedKeys.contains(key) : meta.containsKey(key);
            }

            @Override
            public NativeValue get(String key, Object target) {
                return isTensorState(target) ? reader.read(key, plan) : meta.getKey(key);
            }
        });
    }

    /** A model or an optimizer: what a sharded checkpoint keeps in its shard files. */
    private static boolean isTensorState(Object target) {
        return isModel(target) || target instanceof Optimizer;
    }

    private static boolean isModel(Object target) {
        return target instanceof Module || target instanceof ShardedModule;
    }

    /** Where {@link #restore} finds the saved value of a requested key. */
    private interface Source {
        boolean has(String key, Object target);

        NativeValue get(String key, Object target);
    }

    /**
     * Restores what {@code state} requests from {@code source}, as Lightning does: models and optimizers
     * in place, {@link Stateful} objects through their dictionary, plain values replaced in
     * {@code state}; with {@code strict}, a requested key the checkpoint lacks is an error.
     *
     * @return {@code remainder} without the keys restored from it
     */
    private static Map<String, Object> restore(Path path, Map<String, Object> state, boolean strict,
            NativeValue remainder, Source source) {
        if (strict) {
            for (Map.Entry<String, Object> entry : state.entrySet()) {
                if (!source.has(entry.getKey(), entry.getValue()) && !remainder.containsKey(entry.getKey())) {
                    throw missingKey(path, entry.getKey());
                }
            }
        }
        String moduleKey = singleModuleKey(state);
        ValueConverter.ToJava toJava = new ValueConverter.ToJava();
        for (Map.Entry<String, Object> entry : new ArrayList<>(state.entrySet())) {
            String key = entry.getKey();
            Object target = entry.getValue();
            if (!source.has(key, target)) {
                continue;
            }
            try (NativeValue saved = source.get(key, target)) { // released at once (mapped chunks, copies)
                if (isModel(target)) {
                    restoreModule(path, key, moduleOf(target), saved, strict);
                } else if (target instanceof Optimizer optimizer) {
                    restoreOptimizer(path, optimizer, moduleKey == null ? null : state.get(moduleKey), saved);
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
            remainder.removeKey(key);
        }
        return topLevel(path, toJava.convert(remainder));
    }

    /** An optimizer from an index- or name-keyed state dict (names need the state's model). */
    private static void restoreOptimizer(Path path, Optimizer optimizer, Object model, NativeValue saved) {
        if (isKeyedByName(saved) && isModel(model)) {
            FabricNative.loadOptimizerStateDictByName(optimizer, moduleOf(model), saved);
        } else {
            FabricNative.loadOptimizerStateDict(optimizer, saved);
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

    private static CheckpointException missingKey(Path path, String key) {
        return new CheckpointException(path + ": the requested state contains a key '" + key
                + "' that does not exist in the loaded checkpoint. To disable strict loading, set strict=false.");
    }

    private static Map<String, Object> loadInto(Path path, Map<String, Object> state, boolean strict) {
        NativeValue checkpoint = TorchFiles.readNative(path);
        if (checkpoint.kind() != NativeValue.DICT) {
            return topLevel(path, ValueConverter.toJava(checkpoint));
        }
        if (state.isEmpty()) {
            return loadWhole(path);
        }
        // A full file into sharded models: each rank keeps its regions.
        try {
            FabricNative.sliceToPlan(checkpoint, shardPlan(state));
        } catch (RuntimeException e) {
            throw new CheckpointException(path + ": " + e.getMessage(), e);
        }
        return restore(path, state, strict, checkpoint, new Source() {
            @Override
            public boolean has(String key, Object target) {
                return checkpoint.containsKey(key);
            }

            @Override
            public NativeValue get(String key, Object target) {
                return checkpoint.getKey(key);
            }
        });
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
