package io.fabricckpt.dist;

import io.fabricckpt.core.AsyncSave;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.DistributedException;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.WriteOptions;
import java.util.Map;
import java.util.Objects;
import java.util.function.BiPredicate;

/**
 * What the multi-process strategies share: every collective goes through one c10d process group, and
 * a save is the same two steps in the foreground ({@link #save}) and in the background
 * ({@link #saveAsync}): each rank prepares its part (converts the state, sharing the caller's
 * tensors), then every rank writes together. In the background the parts are copied first and the
 * writes go over the group's background group, so they never interleave with the caller's
 * collectives.
 */
abstract sealed class GroupStrategy implements Strategy permits Ddp, Fsdp {
    private final ProcessGroup group;

    GroupStrategy(ProcessGroup group) {
        this.group = Objects.requireNonNull(group, "group");
    }

    public ProcessGroup processGroup() {
        return group;
    }

    @Override
    public int globalRank() {
        return group.rank();
    }

    @Override
    public int worldSize() {
        return group.worldSize();
    }

    @Override
    public void barrier() {
        group.barrier();
    }

    @Override
    public boolean reduceBooleanDecision(boolean decision) {
        return group.allAgree(decision);
    }

    @Override
    public String broadcast(String text, int src) {
        return group.broadcast(text, src);
    }

    /**
     * Refuses a save the same way on every rank, before anything is converted (unknown filter keys, a
     * format the strategy cannot write).
     */
    abstract void checkSave(CheckpointLocation location, Map<String, ?> state, Map<String, ? extends BiPredicate<Object, Object>> filter);

    /** This rank's part of a save, converted; may throw (the failure is kept for the collectives). */
    abstract PreparedSave prepare(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter);

    /** Whether every rank writes a part of its own (and so must learn that every part is ready). */
    abstract boolean everyRankWrites();

    /**
     * Every rank writes its prepared part over {@code over} (the group, or its background group); a
     * part that failed to prepare fails the save (on every rank once they agreed, see
     * {@link #requireEveryPartReady}).
     */
    abstract void write(CheckpointLocation location, PreparedSave prepared, ProcessGroup over, WriteOptions options,
            ProgressListener listener);

    @Override
    public final void save(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, WriteOptions options) {
        checkSave(location, state, filter);
        try (PreparedSave prepared = prepareKeepingFailure(location, state, filter)) {
            write(location, prepared, group, options, null);
        }
    }

    /**
     * {@link #save} in the background, as {@code torch.distributed.checkpoint.async_save}: this rank's
     * part is converted before this returns; a background thread copies its tensors
     * ({@link AsyncSave#staged()}), another writes it together with the other ranks over the
     * background group ({@link AsyncSave#written()}: on every rank once the checkpoint is in place, or
     * exceptionally on every rank when any rank failed). Collective: every rank calls it, in the same
     * order as its other saves; saves are written in that order. See {@link BackgroundSaves} for the
     * memory bound.
     */
    @Override
    public final AsyncSave saveAsync(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, WriteOptions options,
            ProgressListener listener) {
        checkSave(location, state, filter);
        PreparedSave prepared = prepareKeepingFailure(location, state, filter);
        return group.backgroundSaves().submit(location, prepared,
                (snapshot, background) -> {
                    // In the background a rank's copy can fail where the others' did not: they agree
                    // first, so that none waits in the save's collectives for a rank that gave up.
                    if (everyRankWrites()) {
                        requireEveryPartReady(location, snapshot, background);
                    }
                    write(location, snapshot, background, options, listener);
                });
    }

    private PreparedSave prepareKeepingFailure(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter) {
        try {
            return prepare(location, state, filter);
        } catch (RuntimeException e) {
            return new PreparedSave.Builder().failed(e);
        }
    }

    /**
     * The first step of a background write where every rank has a part: every rank learns whether every part is
     * ready (a rank that failed fails every rank: its own error there, a DistributedException elsewhere).
     */
    static void requireEveryPartReady(CheckpointLocation location, PreparedSave prepared, ProcessGroup over) {
        boolean allReady;
        try {
            allReady = over.allAgree(prepared.failure() == null);
        } catch (DistributedException e) {
            throw new DistributedException(location + ": the ranks could not agree to write: " + e.getMessage(),
                    e.rank(), e.operation(), e);
        }
        if (prepared.failure() != null) {
            throw prepared.failure();
        }
        if (!allReady) {
            throw new DistributedException(location + ": another rank could not prepare its part of the save (rank "
                    + over.rank() + " had)", over.rank(), "save", null);
        }
    }
}
