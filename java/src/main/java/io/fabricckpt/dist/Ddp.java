package io.fabricckpt.dist;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.io.CheckpointIOs;
import java.util.Map;
import java.util.function.BiPredicate;

/**
 * Lightning's DDP strategy for checkpoints: every rank holds the same (replicated) state; global
 * rank 0 writes the single {@code torch.save} file and every rank waits for it; every rank reads it
 * (the defaults of {@link Strategy}). The process group stays the caller's to close.
 * <p>Thread-safety: as its process group: collectives from several threads must still come in the same
 * order on every rank; use one thread per Fabric under Ddp.
 */
public final class Ddp extends GroupStrategy {
    private static final String CHECKPOINT = "checkpoint";

    public Ddp(ProcessGroup group) {
        super(group);
    }

    /** A DDP strategy over the group that torchrun-style environment variables describe. */
    public static Ddp fromEnvironment() {
        return new Ddp(ProcessGroup.fromEnvironment());
    }

    /** Only global rank 0 writes; the others learn its outcome. */
    @Override
    boolean everyRankWrites() {
        return false;
    }

    @Override
    void checkSave(CheckpointLocation location, Map<String, ?> state, Map<String, ? extends BiPredicate<Object, Object>> filter) {
        StateConversion.validateFilter(state, filter);
    }

    /** Only global rank 0 writes, so only it converts the state (the others' parts are empty). */
    @Override
    PreparedSave prepare(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter) {
        PreparedSave.Builder part = new PreparedSave.Builder();
        if (isGlobalZero()) {
            part.put(CHECKPOINT, StateConversion.toCheckpoint(state, filter));
        }
        return part.build();
    }

    /** Global rank 0 writes the file; every rank learns the outcome (Lightning's save, then a barrier). */
    @Override
    void write(CheckpointLocation location, PreparedSave prepared, ProcessGroup over, WriteOptions options,
            ProgressListener listener) {
        // Only rank 0 has a part: its failure travels with the outcome, and a rank that is gone does not
        // keep rank 0 from writing (as Lightning: the write comes before the barrier).
        RankProtocol.onGlobalZero(over, location, () -> {
            if (prepared.failure() != null) {
                throw prepared.failure();
            }
            CheckpointIOs.forWriting(location).write(location, prepared.tree(CHECKPOINT), options, 0, listener);
        });
    }

    @Override
    public String toString() {
        return "Ddp[" + processGroup() + "]";
    }
}
