package io.fabricckpt.dist;

/**
 * How the processes of a run share checkpointing, as Lightning Fabric's strategies:
 * {@link SingleDevice} (one process writes and reads its file) and {@link Ddp} (replicated state:
 * global rank 0 writes the single file, every rank waits for it; every rank reads it).
 *
 * <p>The collective methods are called by every rank in the same order.
 */
public interface Strategy {
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
}
