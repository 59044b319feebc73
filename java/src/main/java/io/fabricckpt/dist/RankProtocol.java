package io.fabricckpt.dist;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.DistributedException;
import java.util.function.Supplier;

/** How the ranks agree on the outcome of a save or load, as Lightning's strategies do. */
final class RankProtocol {
    private RankProtocol() {}

    /**
     * Rank 0 runs {@code write}; every rank then learns how it went and waits on a barrier (as
     * Lightning's save ends with one). A failure on rank 0 is rethrown there and reported on the others.
     */
    static void onGlobalZero(ProcessGroup group, CheckpointLocation location, Runnable write) {
        RuntimeException failure = null;
        if (group.rank() == 0) {
            try {
                write.run();
            } catch (RuntimeException e) {
                failure = e;
            }
        }
        if (group.worldSize() == 1) {
            if (failure != null) {
                throw failure;
            }
            return;
        }
        String outcome = group.broadcast(failure == null ? "" : "failed: " + failure, 0);
        group.barrier(); // a broadcast's root may return before the others received it
        if (failure != null) {
            throw failure;
        }
        if (!outcome.isEmpty()) {
            throw new DistributedException(location + ": global rank 0 " + outcome + " (on rank "
                    + group.rank() + ")", group.rank(), "save on global rank 0", null);
        }
    }

    /**
     * Every rank runs {@code load}, then all ranks agree (Lightning's barrier after a load): if any
     * rank failed, every rank throws.
     */
    static <T> T onEveryRank(Strategy strategy, CheckpointLocation location, Supplier<T> load) {
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
            throw new DistributedException(location + ": another rank failed to load the checkpoint (rank "
                    + strategy.globalRank() + " loaded it)", strategy.globalRank(), "load on every rank", null);
        }
        return result;
    }
}
