package io.fabricckpt.core;

import java.util.concurrent.CompletableFuture;

/**
 * One background save, in its two steps (as {@code torch.distributed.checkpoint.async_save}'s staging
 * and upload futures).
 *
 * <ul>
 *   <li>{@link #staged()}: the checkpoint no longer depends on the caller's tensors (they are copied,
 *       or the save failed or was replaced by a newer one of the same path). Until then the caller may
 *       read its tensors (forward, backward) but must not change them (optimizer step, in-place
 *       updates, load): {@link #awaitStaged()} or {@code Fabric.step} make that one wait. It never
 *       completes exceptionally.
 *   <li>{@link #written()}: the file is in place (or a newer save of the same path replaced this one
 *       before it started, with that save's outcome); exceptionally with a {@link CheckpointException}
 *       when the save failed, the previous file left in place.
 * </ul>
 *
 * <p>The futures returned are views: completing or cancelling them does not affect the save.
 */
public final class AsyncSave {
    private final CompletableFuture<Void> staged;
    private final CompletableFuture<Void> written;

    /** The handle of a save whose steps complete these futures (kept private: callers get views). */
    public AsyncSave(CompletableFuture<Void> staged, CompletableFuture<Void> written) {
        this.staged = staged;
        this.written = written;
    }

    /** Completes once the caller may change its tensors again; never exceptionally. */
    public CompletableFuture<Void> staged() {
        return staged.copy();
    }

    /** Completes once the file is in place; exceptionally with a {@link CheckpointException}. */
    public CompletableFuture<Void> written() {
        return written.copy();
    }

    /** Blocks until {@link #staged()}: call it before changing the saved tensors. */
    public void awaitStaged() {
        staged.join();
    }

    /** Blocks until the file is in place; throws the save's {@link CheckpointException} if it failed. */
    public void awaitWritten() {
        try {
            written.join();
        } catch (java.util.concurrent.CompletionException e) {
            if (e.getCause() instanceof RuntimeException cause) {
                throw cause;
            }
            throw e;
        }
    }

    /** Whether the file is in place or the save failed. */
    public boolean isDone() {
        return written.isDone();
    }
}
