package io.fabricckpt;

/**
 * A checkpoint could not be read or written: the file is missing, corrupt or not a checkpoint,
 * the state does not match it, or the disk refused. The message names the file and what is wrong.
 */
public class CheckpointException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public CheckpointException(String message) {
        super(message);
    }

    public CheckpointException(String message, Throwable cause) {
        super(message, cause);
    }
}
