package io.fabricckpt.core;

/**
 * A checkpoint could not be read or written. The message names the checkpoint and what is wrong;
 * the subclasses tell the causes apart for code that reacts differently to them:
 * <ul>
 *   <li>{@link CheckpointStorageException}: the storage refused (and {@link CheckpointNotFoundException}:
 *       nothing is there);
 *   <li>{@link CorruptCheckpointException}: the bytes are not a valid checkpoint;
 *   <li>{@link StateMismatchException}: the checkpoint does not fit the state it is loaded into;
 *   <li>{@link DistributedException}: a collective operation between ranks failed.
 * </ul>
 * Anything else (e.g. a state holding globals that {@code torch.load(weights_only=True)} refuses) is
 * a plain {@code CheckpointException}. Unchecked, as I/O errors of Java's own stream-free APIs are.
 * <p>Thread-safety: Immutable, as exceptions are; safe to pass between threads.
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
