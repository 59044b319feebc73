package io.fabricckpt;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.io.AsyncWriter;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;

/**
 * {@link TorchFiles#write} in the background, for training loops that cannot stall.
 *
 * <p>{@link #save} takes a snapshot of the value's tensors on the caller's thread (one copy of each
 * storage, made in parallel at memory speed), queues it and returns: from then on the caller may
 * change its tensors freely. A writer thread writes the snapshots in order, atomically, so a failed
 * save leaves the previous file in place; failures complete the returned future exceptionally with a
 * {@link CheckpointException} and are logged (SLF4J, {@code WARN}) whether or not anyone observes it.
 *
 * <p>Memory and ordering: besides the snapshot being written, at most one more is staged (a save
 * while one is staged waits); a newer save of the same path replaces a staged, not yet started older
 * one; saves of one path land in the order they were requested, across all savers of the JVM.
 * Pending saves finish before the JVM exits (a shutdown hook waits for them and says so on stderr).
 *
 * <p>Thread-safe: any number of threads may call {@link #save} at once.
 */
public final class AsyncSaver implements AutoCloseable {
    private final AsyncWriter writer;

    /** A saver whose snapshots and writes use one thread per core. */
    public AsyncSaver() {
        this(0);
    }

    /** A saver whose snapshots and writes use {@code threads} threads each (0: one per core). */
    public AsyncSaver(int threads) {
        this.writer = new AsyncWriter(threads);
    }

    /**
     * Saves {@code value} (any value {@link TorchFiles#write} takes) to {@code path} in the background.
     *
     * @param listener told the bytes written, from a background thread; may be null
     * @return completes when the file is in place (or a newer save of the same path replaced this one
     *     before it started, with that save's outcome); exceptionally with a {@link CheckpointException}
     * @throws IllegalStateException after {@link #close()}
     */
    public CompletableFuture<Void> save(Path path, Object value, WriteOptions options, ProgressListener listener) {
        return writer.save(path, value, options, listener);
    }

    public CompletableFuture<Void> save(Path path, Object value) {
        return save(path, value, WriteOptions.DEFAULT, null);
    }

    /** Waits until every save requested so far has finished (successfully or not). */
    public void awaitIdle() {
        writer.awaitIdle();
    }

    /** Finishes the saves already requested, then refuses new ones. */
    @Override
    public void close() {
        writer.close();
    }
}
