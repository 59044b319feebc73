package io.fabricckpt.core;

/**
 * A collective operation failed: the rendezvous did not complete, or another rank died, stalled past
 * the process group's timeout or reported an error. The message names this rank, the operation and
 * the timeout; {@link #rank()} and {@link #operation()} give them to code.
 * <p>Thread-safety: Immutable; safe to pass between threads.
 */
public class DistributedException extends CheckpointException {
    private static final long serialVersionUID = 1L;

    private final int rank;
    private final String operation;

    public DistributedException(String message, int rank, String operation, Throwable cause) {
        super(message, cause);
        this.rank = rank;
        this.operation = operation;
    }

    /** The rank of the process that saw the failure (this one), or -1 when it has none yet. */
    public int rank() {
        return rank;
    }

    /** What failed: {@code "barrier"}, {@code "broadcast from rank 0"}, {@code "TCPStore rendezvous"}, ... */
    public String operation() {
        return operation;
    }
}
