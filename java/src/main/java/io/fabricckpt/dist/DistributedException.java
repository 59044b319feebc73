package io.fabricckpt.dist;

import io.fabricckpt.CheckpointException;

/**
 * A collective operation failed: the rendezvous did not complete, or another rank died or stalled
 * past the process group's timeout. The message names this rank, the operation and the timeout.
 * A {@link CheckpointException}, so code that handles failed saves and loads handles these too.
 */
public class DistributedException extends CheckpointException {
    private static final long serialVersionUID = 1L;

    public DistributedException(String message) {
        super(message);
    }

    public DistributedException(String message, Throwable cause) {
        super(message, cause);
    }
}
