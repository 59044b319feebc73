package io.fabricckpt;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.Stateful;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.dist.SingleDevice;
import io.fabricckpt.dist.Strategy;
import java.nio.file.Path;
import java.util.Map;
import java.util.Objects;
import io.fabricckpt.core.AsyncSave;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.BiPredicate;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Optimizer;

/**
 * Lightning Fabric's checkpointing for the JVM: {@code fabric.save(path, state)} and
 * {@code fabric.load(path, state)}, reading and writing the files Python Lightning reads and writes.
 *
 * <p>A state is a map of names to models ({@link Module} of any kind), optimizers ({@link Optimizer}:
 * Adam, AdamW, SGD, RMSprop, Adagrad), LR schedulers (the preset's StepLR and
 * ReduceLROnPlateauScheduler), {@link Stateful} objects and plain values. Saving turns each top-level
 * model, optimizer and scheduler into the state dict Python would produce for it; loading restores
 * them in place. Only top-level values are converted, as in Lightning: a model inside a list is not.
 *
 * <p>The {@link Strategy} does the work, as in Lightning: {@link SingleDevice} (the default) writes and
 * reads alone; {@link io.fabricckpt.dist.Ddp} has global rank 0 write the file while every rank waits
 * for it; {@link io.fabricckpt.dist.Fsdp} has every rank write its shards. Paths are local paths;
 * a {@code String} may also be a {@code file:} URI.
 *
 * <p>Tensors that loads return (in the remainder, in plain values) own native memory that the JVM's
 * garbage collector frees; code that loads often can free it at once by loading inside a JavaCPP
 * {@code PointerScope} ({@code try (PointerScope scope = new PointerScope()) {...}}).
 *
 * <p>Thread-safety: one Fabric may be shared by threads, but the state maps passed to it must not be
 * changed by other threads during a call; under a multi-process strategy every rank makes the same
 * calls in the same order. {@link #close()} waits for this Fabric's background saves.
 */
public final class Fabric implements AutoCloseable {
    private final Strategy strategy;
    private volatile boolean unsafeGlobalsAllowed;
    private volatile long maxShardSize = WriteOptions.DEFAULT_MAX_SHARD_SIZE;
    private final Set<AsyncSave> pendingSaves = ConcurrentHashMap.newKeySet();

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

    /**
     * Whether saves write globals that {@code torch.load(weights_only=True)} refuses (e.g. an
     * {@code argparse.Namespace} of hparams loaded from a Lightning checkpoint): off by default, and a
     * save of a state holding any fails with a {@link io.fabricckpt.core.CheckpointException} naming each
     * and where it sits, before anything is written. Turn it on only for trusted data. Returns this.
     */
    public Fabric allowUnsafeGlobals(boolean allow) {
        this.unsafeGlobalsAllowed = allow;
        return this;
    }

    /**
     * The largest shard, in bytes, of a save to a {@code *.safetensors.index.json} path (a Hugging Face
     * sharded checkpoint, as {@code huggingface_hub.save_torch_state_dict(max_shard_size=...)} writes it):
     * {@link WriteOptions#DEFAULT_MAX_SHARD_SIZE} ("5GB") unless set. Returns this.
     */
    public Fabric maxShardSize(long bytes) {
        this.maxShardSize = WriteOptions.DEFAULT.withMaxShardSize(bytes).maxShardSize(); // checked there
        return this;
    }

    private WriteOptions writeOptions() {
        return WriteOptions.DEFAULT.withUnsafeGlobalsAllowed(unsafeGlobalsAllowed).withMaxShardSize(maxShardSize);
    }

    // ------------------------------------------------------------------------------- save

    /** {@code fabric.save(path, state)}: written atomically, as the strategy lays it out. */
    public void save(Path path, Map<String, ?> state) {
        save(path, state, Map.of());
    }

    public void save(String path, Map<String, ?> state) {
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
        save(CheckpointLocation.of(path), state, filter);
    }

    public void save(String path, Map<String, ?> state, Map<String, ? extends BiPredicate<Object, Object>> filter) {
        save(CheckpointLocation.parse(path), state, filter);
    }

    private void save(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter) {
        strategy.save(location, Objects.requireNonNull(state, "state"), Objects.requireNonNull(filter, "filter"),
                writeOptions());
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
     * <p>Under {@code Ddp} and {@code Fsdp} (sharded or full) every rank calls it, in the same order as
     * its other saves: each rank's part is copied in the background and the ranks write together over
     * a background process group of their own, so the caller's collectives go on meanwhile; every
     * rank's {@code written()} completes once the checkpoint is in place, or fails when any rank's part
     * failed. Closing the process group waits for its background saves.
     *
     * @param listener told the bytes written, from the background thread; may be null
     */
    public AsyncSave saveAsync(Path path, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, ProgressListener listener) {
        return saveAsync(CheckpointLocation.of(path), state, filter, listener);
    }

    /** {@link #saveAsync(Path, Map, Map, ProgressListener)} to a location as users write it (a path or {@code s3://bucket/key}). */
    public AsyncSave saveAsync(String path, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, ProgressListener listener) {
        return saveAsync(CheckpointLocation.parse(path), state, filter, listener);
    }

    public AsyncSave saveAsync(String path, Map<String, ?> state) {
        return saveAsync(path, state, Map.of(), null);
    }

    private AsyncSave saveAsync(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, ProgressListener listener) {
        AsyncSave save = strategy.saveAsync(location,
                Objects.requireNonNull(state, "state"), Objects.requireNonNull(filter, "filter"), writeOptions(),
                listener);
        pendingSaves.add(save);
        save.written().whenComplete((ok, error) -> pendingSaves.remove(save));
        return save;
    }

    public AsyncSave saveAsync(Path path, Map<String, ?> state) {
        return saveAsync(path, state, Map.of(), null);
    }

    /**
     * Blocks until every {@link #saveAsync} of this Fabric made so far is staged, so the saved tensors
     * may change: call it before changing them in place (e.g. before {@code optimizer.step()}).
     */
    public void awaitStaged() {
        for (AsyncSave save : Set.copyOf(pendingSaves)) {
            save.awaitStaged();
        }
    }

    /**
     * {@code optimizer.step()} once every {@link #saveAsync} of this Fabric made so far is staged: the
     * one call a training loop needs so that a step never reaches a checkpoint requested before it.
     */
    public void step(Optimizer optimizer) {
        Objects.requireNonNull(optimizer, "optimizer");
        awaitStaged();
        optimizer.step();
    }

    /** Waits for this Fabric's background saves to land (their failures complete their futures). */
    @Override
    public void close() {
        for (AsyncSave save : Set.copyOf(pendingSaves)) {
            save.written().exceptionally(error -> null).join();
        }
    }

    // ------------------------------------------------------------------------------- load

    /** {@code fabric.load(path)}: the whole checkpoint (a sharded one consolidated), nothing restored. */
    public Map<String, Object> load(Path path) {
        return load(path, Map.of(), true);
    }

    public Map<String, Object> load(String path) {
        return load(path, Map.of(), true);
    }

    /** {@code fabric.load(path, state)} with strict loading. */
    public Map<String, Object> load(Path path, Map<String, ?> state) {
        return load(path, state, true);
    }

    public Map<String, Object> load(String path, Map<String, ?> state) {
        return load(path, state, true);
    }

    /**
     * {@code fabric.load(path, state, strict)}: restores in place what {@code state} names. Models
     * get their parameters and buffers (strict: every key must match), optimizers their state and
     * hyper-parameters, {@link Stateful} objects their dictionary; plain values are replaced in
     * {@code state}, which must then be mutable. With {@code strict}, a requested key missing from the
     * checkpoint is a {@link io.fabricckpt.core.StateMismatchException}; keys in the checkpoint that were
     * not requested are never an error. Not strict, what a model could not match is logged (SLF4J,
     * {@code WARN}); {@link StateDicts#load} returns it.
     *
     * @return the remainder: everything in the checkpoint that was not restored
     */
    public Map<String, Object> load(Path path, Map<String, ?> state, boolean strict) {
        return strategy.load(CheckpointLocation.of(path), Objects.requireNonNull(state, "state"), strict);
    }

    public Map<String, Object> load(String path, Map<String, ?> state, boolean strict) {
        return strategy.load(CheckpointLocation.parse(path), Objects.requireNonNull(state, "state"), strict);
    }

    /**
     * {@code fabric.load_raw(path, model, strict)}: the file holds a model's state dict itself (as
     * {@code torch.save(model.state_dict(), path)} writes), not a Fabric checkpoint.
     */
    public void loadRaw(Path path, Module model, boolean strict) {
        strategy.loadRaw(CheckpointLocation.of(path), model, strict);
    }

    public void loadRaw(Path path, Module model) {
        loadRaw(path, model, true);
    }

    public void loadRaw(String path, Module model) {
        strategy.loadRaw(CheckpointLocation.parse(path), model, true);
    }

    /** {@code fabric.load_raw(path, optimizer)}: the file holds an optimizer's state dict. */
    public void loadRaw(Path path, Optimizer optimizer) {
        strategy.loadRaw(CheckpointLocation.of(path), optimizer, true);
    }

    public void loadRaw(String path, Optimizer optimizer) {
        strategy.loadRaw(CheckpointLocation.parse(path), optimizer, true);
    }
}
