package io.fabricckpt.core;

/**
 * Nothing is at the checkpoint's location. The cause is a {@link java.nio.file.NoSuchFileException}.
 * <p>Thread-safety: Immutable; safe to pass between threads.
 */
public class CheckpointNotFoundException extends CheckpointStorageException {
    private static final long serialVersionUID = 1L;

    public CheckpointNotFoundException(String message, Throwable cause) {
        super(message, cause);
    }
}
