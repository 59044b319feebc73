package io.fabricckpt.core;

/**
 * The bytes are not a valid checkpoint: truncated, corrupt (a CRC-32 mismatch), hostile or of an
 * unsupported format. The message names the file and, where it applies, the record and byte offset.
 * <p>Thread-safety: Immutable; safe to pass between threads.
 */
public class CorruptCheckpointException extends CheckpointException {
    private static final long serialVersionUID = 1L;

    public CorruptCheckpointException(String message, Throwable cause) {
        super(message, cause);
    }
}
