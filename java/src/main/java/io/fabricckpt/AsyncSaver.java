package io.fabricckpt;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.io.AsyncWriter;
import io.fabricckpt.core.AsyncSave;
import java.nio.file.Path;

/**
 * {@link TorchFiles#write} in the background, for training loops that cannot stall.
 *
 * <p>{@link #save} converts the value and returns an {@link AsyncSave}: a background thread copies
 * the value's tensors (one copy of each storage, in parallel at memory speed) and completes
 * {@link AsyncSave#staged()}, from when on the caller may change its tensors freely (not before); a
 * writer thread writes the copies in order, atomically, so a failed save leaves the previous file in
 * place; failures complete {@link AsyncSave#written()} exceptionally with a
 * {@link CheckpointException} and are logged (SLF4J, {@code WARN}) whether or not anyone observes it.
 *
 * <p>Memory and ordering: at most two copies exist, the one being written and one staged (a save
 * waits while another is not staged yet); a newer save of the same path replaces an older one not
 * yet started; saves of one path land in the order they were requested, across all savers of the JVM.
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
     * @return its {@code written()} completes when the file is in place (or a newer save of the same
     *     path replaced this one before it started, with that save's outcome); exceptionally with a
     *     {@link CheckpointException}
     * @throws IllegalStateException after {@link #close()}
     */
    public AsyncSave save(Path path, Object value, WriteOptions options, ProgressListener listener) {
        return writer.save(path, value, options, listener);
    }

    public AsyncSave save(Path path, Object value) {
        return save(path, value, WriteOptions.DEFAULT, null);
    }

    /** Waits until every save requested so far is staged: the caller may change its tensors again. */
    public void awaitStaged() {
        writer.awaitStaged();
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
