package io.fabricckpt.dist;

import io.fabricckpt.core.AsyncSave;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.io.AsyncWriter;
import io.fabricckpt.internal.io.CheckpointIOs;
import io.fabricckpt.internal.io.CheckpointReader;
import java.util.Map;
import java.util.function.BiPredicate;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Optimizer;

/**
 * How the processes of a run share checkpointing, as Lightning Fabric's strategies: a strategy owns
 * {@link #save} and {@link #load} (who writes, sharded or whole, how the ranks agree); a checkpoint
 * IO behind it owns the bytes. {@link SingleDevice}: one process writes and reads its file.
 * {@link Ddp}: replicated state, global rank 0 writes the single file and every rank waits for it;
 * every rank reads it. {@link Fsdp}: sharded state, every rank writes its shards.
 *
 * <p>The defaults here are Lightning's base strategy: rank 0 writes one {@code torch.save} file;
 * every rank reads whatever the location holds (a file, or a sharded directory cut to its shards).
 *
 * <p>Every method is collective under a multi-process strategy: every rank calls it, in the same
 * order. A strategy is not meant to be used from several threads at once.
 */
public sealed interface Strategy permits SingleDevice, GroupStrategy {
    /** This process's global rank. */
    int globalRank();

    /** How many processes take part. */
    int worldSize();

    /** Whether this process is global rank 0, the one that writes single-file checkpoints. */
    default boolean isGlobalZero() {
        return globalRank() == 0;
    }

    /** Waits until every rank has called it. */
    void barrier();

    /** True on every rank when {@code decision} is true on every rank (Lightning's reduce_boolean_decision). */
    boolean reduceBooleanDecision(boolean decision);

    /** Rank {@code src}'s string, on every rank. */
    String broadcast(String text, int src);

    /**
     * Lightning's {@code strategy.save_checkpoint}: the state converted (models and optimizers to their
     * state dicts, {@code filter} applied to the first level of each), written atomically by global rank
     * 0 as one torch.save file; every rank returns once it is written, or throws if it was not.
     *
     * @throws IllegalArgumentException if a filter key is not a state key
     */
    default void save(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, WriteOptions options) {
        StateConversion.validateFilter(state, filter);
        RankProtocol.onGlobalZero(this, location, () -> {
            try (NativeValue checkpoint = StateConversion.toCheckpoint(state, filter)) {
                CheckpointIOs.forWriting(location).write(location, checkpoint, options, null);
            }
        });
    }

    /**
     * {@link #save} in the background: the state is converted before this returns, its tensors are
     * copied by a background thread ({@link AsyncSave#staged()}) and written by another
     * ({@link AsyncSave#written()}); see {@code Fabric.saveAsync}.
     *
     * @throws UnsupportedOperationException under a multi-process strategy (not supported yet)
     */
    default AsyncSave saveAsync(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, WriteOptions options,
            ProgressListener listener) {
        if (worldSize() > 1) {
            throw new UnsupportedOperationException("saveAsync under a multi-process strategy is not supported yet");
        }
        StateConversion.validateFilter(state, filter);
        return AsyncWriter.shared().save(location.path(), StateConversion.toCheckpoint(state, filter), options,
                listener);
    }

    /**
     * Lightning's {@code strategy.load_checkpoint}: restores in place what {@code state} names (every rank
     * reading the checkpoint itself, sharded models their regions) and returns the remainder; an empty
     * {@code state} returns the whole checkpoint. If any rank fails, every rank throws.
     */
    default Map<String, Object> load(CheckpointLocation location, Map<String, ?> state, boolean strict) {
        return RankProtocol.onEveryRank(this, location, () -> {
            try (CheckpointReader reader = CheckpointIOs.forReading(location).open(location, ReadOptions.DEFAULT,
                    null)) {
                return StateRestore.into(location, reader, state, strict);
            }
        });
    }

    /**
     * Lightning's {@code load_raw}: the location holds the state dict of {@code target} itself (as
     * {@code torch.save(model.state_dict(), path)} writes), not a Fabric checkpoint. {@code target} is a
     * {@link Module} or an {@link Optimizer}; {@code strict} applies to modules.
     */
    default void loadRaw(CheckpointLocation location, Object target, boolean strict) {
        RankProtocol.onEveryRank(this, location, () -> {
            try (CheckpointReader reader = CheckpointIOs.forReading(location).open(location, ReadOptions.DEFAULT,
                    null); NativeValue saved = reader.readAll()) { // both closed: the tree goes at once
                if (target instanceof Module module) {
                    StateRestore.module(location, null, module, saved, strict);
                } else if (target instanceof Optimizer optimizer) {
                    StateRestore.optimizer(location, null, optimizer, null, saved);
                } else {
                    throw new IllegalArgumentException("loadRaw restores a Module or an Optimizer, not a "
                            + (target == null ? "null" : target.getClass().getName()));
                }
            }
            return null;
        });
    }
}
