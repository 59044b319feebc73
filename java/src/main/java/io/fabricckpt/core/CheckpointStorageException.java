package io.fabricckpt.core;

/**
 * The storage refused a read or write: permission denied, a full disk, an I/O error. The cause is the
 * matching {@link java.nio.file.FileSystemException} ({@link java.nio.file.AccessDeniedException},
 * {@link java.nio.file.NoSuchFileException}, ...) naming the file, when one applies.
 * <p>Thread-safety: Immutable; safe to pass between threads.
 */
public class CheckpointStorageException extends CheckpointException {
    private static final long serialVersionUID = 1L;

    public CheckpointStorageException(String message, Throwable cause) {
        super(message, cause);
    }
}
