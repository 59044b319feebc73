package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ValueConverter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Background checkpoint writing for training loops that cannot stall.
 *
 * <p>{@link #save} takes a snapshot of the state's tensors on the caller's thread (one copy of each
 * storage, made in parallel at memory speed), queues it and returns: from then on the caller may
 * change its tensors freely. One writer thread per saver writes the snapshots, in order, with the
 * same parallel, atomic writer as {@code TorchFiles.write} (temporary file, optional fsync, rename),
 * so a failed save leaves the previous file in place; failures complete the returned future
 * exceptionally with a {@link CheckpointException}.
 *
 * <p>Memory and ordering:
 * <ul>
 *   <li>Back-pressure: besides the snapshot being written, at most one more is staged. A save while
 *       one is staged waits (before taking its snapshot) until the writer picks the staged one up, so
 *       at most two snapshots exist at once.
 *   <li>A newer save of the same path replaces a staged, not yet started older one (whose future then
 *       completes with the newer save's outcome): only the newest state is written.
 *   <li>At most one save per target path is in flight, across all savers of the JVM, and an older
 *       checkpoint never replaces a newer one: saves of one path complete in the order they were
 *       requested, and an older save that finds a newer one already written is skipped.
 * </ul>
 *
 * <p>Saves never vanish: the writer thread exists only while there is work and is not a daemon, so
 * pending saves finish before a normal JVM exit; a JVM shutdown hook ({@code System.exit}, SIGTERM)
 * waits for them too, saying on stderr which saves it waits for. Every failed save is logged there at {@code WARNING}, whether or not anyone observes its
 * future. {@link #close()} waits for pending saves and refuses new ones.
 *
 * <p>Thread-safe: any number of threads may call {@link #save} at once.
 */
public final class AsyncWriter implements AutoCloseable {
    /** Save order across all savers: a larger number is a newer request. */
    private static final AtomicLong SEQUENCE = new AtomicLong();
    /** Per target path: how many saves are requested and not finished, and the newest one written. */
    private static final ConcurrentHashMap<Path, PathState> PATHS = new ConcurrentHashMap<>();
    /** Savers with a save requested and not finished: what the shutdown hook waits for. */
    private static final Set<AsyncWriter> BUSY = ConcurrentHashMap.newKeySet();
    private static final Logger LOG = LoggerFactory.getLogger(AsyncWriter.class);

    static {
        Runtime.getRuntime().addShutdownHook(new Thread(AsyncWriter::finishPendingSaves, "fabricckpt-async-save-exit"));
    }

    /** Shutdown: the JVM is exiting (System.exit included); saves already requested still land. */
    private static void finishPendingSaves() {
        for (AsyncWriter saver : List.copyOf(BUSY)) {
            String pending = saver.pendingTargets();
            if (!pending.isEmpty()) {
                // stderr, not the logger: logging shuts down in a hook of its own, concurrently with this one.
                System.err.println("fabric-ckpt: the JVM is exiting: finishing the checkpoint saves of " + pending);
            }
            saver.awaitIdle();
        }
    }

    private static final class PathState {
        final ReentrantLock writing = new ReentrantLock();
        int pending;
        long newestWritten = -1;
    }

    private static final class Job {
        final Path target;
        long sequence; // set with the path's pending count, atomically
        final WriteOptions options;
        final ProgressListener listener;
        final CompletableFuture<Void> future = new CompletableFuture<>();
        final List<CompletableFuture<Void>> superseded = new ArrayList<>();
        NativeValue snapshot;

        Job(Path target, WriteOptions options, ProgressListener listener) {
            this.target = target;
            this.options = options;
            this.listener = listener;
        }

        void complete(Throwable error) {
            List<CompletableFuture<Void>> all = new ArrayList<>(superseded);
            all.add(future);
            for (CompletableFuture<Void> f : all) {
                if (error == null) {
                    f.complete(null);
                } else {
                    f.completeExceptionally(error);
                }
            }
        }
    }

    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final int threads;
    private Job staged;          // waiting for the writer
    private boolean reserved;    // a caller is taking the snapshot that will be staged next
    private Job writing;         // being written
    private Thread writer;       // alive while there is work
    private boolean closed;

    private static AsyncWriter shared;

    /** The JVM's writer for the strategies' background saves (created on first use, never closed). */
    public static synchronized AsyncWriter shared() {
        if (shared == null) {
            shared = new AsyncWriter();
        }
        return shared;
    }

    /** A saver whose snapshots and writes use one thread per core. */
    public AsyncWriter() {
        this(0);
    }

    /** A saver whose snapshots and writes use {@code threads} threads each (0: one per core). */
    public AsyncWriter(int threads) {
        if (threads < 0) {
            throw new IllegalArgumentException("threads must be 0 (one per core) or more");
        }
        this.threads = threads;
    }

    /** {@link #save(Path, NativeValue, WriteOptions, ProgressListener)} of a plain value tree. */
    public CompletableFuture<Void> save(Path path, Object value, WriteOptions options,
            ProgressListener listener) {
        NativeValue root;
        try {
            root = ValueConverter.toNative(value);
        } catch (RuntimeException e) {
            return CompletableFuture.failedFuture(NativeErrors.translate(e));
        }
        return save(path, root, options, listener);
    }

    /**
     * Saves {@code root} to {@code path} in the background.
     *
     * <p>Blocks only while an earlier save is staged (back-pressure) and while the snapshot is taken;
     * once it returns, the tensors of {@code root} may change without affecting the file.
     *
     * @param root the checkpoint tree, tensors still shared with the caller (e.g. what {@code Fabric}
     *     builds from a state: models' and optimizers' state dicts and plain values)
     * @param listener told the bytes written, from a background thread; may be null
     * @return completes when the file is in place (or a newer save of the same path replaced this one
     *     before it started, with that save's outcome); exceptionally with a {@link CheckpointException}
     * @throws IllegalStateException after {@link #close()}
     */
    public CompletableFuture<Void> save(Path path, NativeValue root, WriteOptions options,
            ProgressListener listener) {
        Objects.requireNonNull(root, "root");
        Objects.requireNonNull(options, "options");
        Path target = path.toAbsolutePath().normalize();
        if (!options.unsafeGlobalsAllowed()) {
            TorchSaveFileIO.requireWeightsOnlySafe(CheckpointLocation.of(target), root); // refused here, in the caller's thread
        }
        Job job;
        Job replaced = null;
        lock.lock();
        try {
            // Back-pressure: wait for the staging slot unless the staged save is for the same path.
            while (!closed && (reserved || (staged != null && !staged.target.equals(target)))) {
                changed.awaitUninterruptibly();
            }
            if (closed) {
                throw new IllegalStateException("this AsyncWriter is closed");
            }
            Job created = new Job(target, options, listener);
            // Numbered and counted in one step per path: a path is forgotten only when no save of it
            // is pending, so no older save can come after its record of the newest one is gone.
            PATHS.compute(target, (k, state) -> {
                PathState s = state == null ? new PathState() : state;
                s.pending++;
                created.sequence = SEQUENCE.incrementAndGet();
                return s;
            });
            job = created;
            if (staged != null) { // same path, not started: the newer state replaces it
                replaced = staged;
                staged = null;
                job.superseded.add(replaced.future);
                job.superseded.addAll(replaced.superseded);
            }
            reserved = true;
            BUSY.add(this);
        } finally {
            lock.unlock();
        }
        if (replaced != null) {
            replaced.snapshot.close(); // its memory goes before the new snapshot is taken
            release(replaced.target);
        }

        try {
            job.snapshot = FabricNative.snapshotTensors(root, threads, null);
        } catch (RuntimeException e) {
            lock.lock();
            try {
                reserved = false;
                markIdleIfDone();
                changed.signalAll();
            } finally {
                lock.unlock();
            }
            release(target);
            CheckpointException failure = new CheckpointException("cannot save " + target + ": " + e.getMessage(), e);
            LOG.warn("async checkpoint save failed: {}", failure.getMessage());
            job.complete(failure);
            return job.future;
        }

        lock.lock();
        try {
            reserved = false;
            staged = job;
            if (writer == null) {
                writer = new Thread(this::writeLoop, "fabricckpt-async-save");
                writer.setDaemon(false);
                writer.start();
            }
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        return job.future;
    }

    /** Waits until every save requested so far has finished (successfully or not). */
    public void awaitIdle() {
        lock.lock();
        try {
            while (reserved || staged != null || writing != null) {
                changed.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
    }

    /** Finishes the saves already requested, then refuses new ones. */
    @Override
    public void close() {
        lock.lock();
        try {
            closed = true;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        awaitIdle();
    }

    private void writeLoop() {
        while (true) {
            Job job;
            lock.lock();
            try {
                if (staged == null) {
                    writer = null; // a later save starts a new thread
                    markIdleIfDone();
                    changed.signalAll();
                    return;
                }
                job = staged;
                staged = null;
                writing = job;
                changed.signalAll(); // the staging slot is free
            } finally {
                lock.unlock();
            }
            Throwable error = null;
            try {
                write(job);
            } catch (Throwable t) {
                error = t instanceof CheckpointException ? t
                        : new CheckpointException("cannot save " + job.target + ": " + t.getMessage(), t);
            } finally {
                job.snapshot.close();
                release(job.target);
            }
            if (error != null) {
                LOG.warn("async checkpoint save failed: {}", error.getMessage());
            }
            job.complete(error);
            lock.lock();
            try {
                writing = null;
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    /** Under the lock: no save of this saver is requested or running any more. */
    private void markIdleIfDone() {
        if (!reserved && staged == null && writing == null) {
            BUSY.remove(this);
        }
    }

    private String pendingTargets() {
        lock.lock();
        try {
            List<String> targets = new ArrayList<>();
            if (writing != null) {
                targets.add(writing.target.toString());
            }
            if (staged != null) {
                targets.add(staged.target.toString());
            }
            if (reserved) {
                targets.add("(one being staged)");
            }
            return String.join(", ", targets);
        } finally {
            lock.unlock();
        }
    }

    private void write(Job job) {
        PathState state = PATHS.get(job.target);
        state.writing.lock(); // one save per path in flight, across savers
        try {
            if (state.newestWritten > job.sequence) {
                return; // a newer checkpoint is already in place; this one must not replace it
            }
            CheckpointIOs.TORCH_SAVE_FILE.write(CheckpointLocation.of(job.target), job.snapshot, job.options, threads,
                    job.listener);
            state.newestWritten = job.sequence;
        } finally {
            state.writing.unlock();
        }
    }

    /** One save of {@code target} is done; forget the path once none is pending. */
    private static void release(Path target) {
        PATHS.computeIfPresent(target, (k, state) -> --state.pending == 0 ? null : state);
    }
}
