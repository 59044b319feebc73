package io.fabricckpt.internal.io;

import io.fabricckpt.core.AsyncSave;
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
 * Background checkpoint saving for training loops that cannot stall.
 *
 * <p>{@link #save} converts the value on the caller's thread (no tensor bytes are copied), queues it
 * and returns an {@link AsyncSave}. Two background threads per saver do the rest, in order: the
 * stager copies the state's tensors (one copy of each storage, in parallel at memory speed) and then
 * completes {@link AsyncSave#staged()}; the writer writes the copy with the same parallel, atomic
 * writer as {@code TorchFiles.write} (temporary file, optional fsync, rename), so a failed save leaves
 * the previous file in place, and completes {@link AsyncSave#written()}. Staging overlaps whatever the
 * caller does next; the caller must not change the saved tensors before {@code staged()} (reading
 * them, as a forward and backward pass do, is fine).
 *
 * <p>Memory and ordering:
 * <ul>
 *   <li>Memory bound: at most two copies of a state exist at once, the one being written and one
 *       staged (or being staged). Staging waits until the writer has taken the previous staged copy,
 *       so a state costs at most twice its size on top of the caller's tensors.
 *   <li>Back-pressure: besides those, at most one save waits to be staged; a save while one waits
 *       blocks until the stager picks it up.
 *   <li>A newer save of the same path replaces an older one that is waiting to be staged or staged and
 *       not yet started (whose {@code written()} then completes with the newer save's outcome): only
 *       the newest state is written.
 *   <li>At most one save per target path is in flight, across all savers of the JVM, and an older
 *       checkpoint never replaces a newer one: saves of one path complete in the order they were
 *       requested, and an older save that finds a newer one already written is skipped.
 * </ul>
 *
 * <p>Saves never vanish: the background threads exist only while there is work and are not daemons,
 * so pending saves finish before a normal JVM exit; a JVM shutdown hook ({@code System.exit},
 * SIGTERM) waits for them too, saying on stderr which saves it waits for. Every failed save is logged
 * at {@code WARN} (SLF4J), whether or not anyone observes its future. {@link #close()} waits for pending
 * saves and refuses new ones.
 *
 * <p>Thread-safe: any number of threads may call {@link #save} at once.
 */
public final class AsyncWriter implements AutoCloseable {
    /** Save order across all savers: a larger number is a newer request. */
    private static final AtomicLong SEQUENCE = new AtomicLong();
    /** Per target path: how many saves are requested and not finished, and the newest one written. */
    private static final ConcurrentHashMap<CheckpointLocation, PathState> PATHS = new ConcurrentHashMap<>();
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
        final CheckpointLocation target;
        long sequence; // set with the path's pending count, atomically
        final WriteOptions options;
        final ProgressListener listener;
        final CompletableFuture<Void> staged = new CompletableFuture<>();
        final CompletableFuture<Void> written = new CompletableFuture<>();
        final List<CompletableFuture<Void>> superseded = new ArrayList<>();
        NativeValue root;     // the caller's tree (tensors shared with the caller) until staged
        NativeValue snapshot; // the staged copy

        Job(CheckpointLocation target, NativeValue root, WriteOptions options, ProgressListener listener) {
            this.target = target;
            this.root = root;
            this.options = options;
            this.listener = listener;
        }

        /** A newer save of the same path takes over this one's outcome. */
        void supersede(Job older) {
            superseded.add(older.written);
            superseded.addAll(older.superseded);
        }

        /** The caller's tensors are no longer needed (copied, failed or replaced). */
        void releaseRoot() {
            if (root != null) {
                root.close();
                root = null;
            }
            staged.complete(null);
        }

        void complete(Throwable error) {
            List<CompletableFuture<Void>> all = new ArrayList<>(superseded);
            all.add(written);
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
    private Job waiting;         // requested, its tensors still the caller's
    private Job staging;         // being copied
    private Job staged;          // copied, waiting for the writer
    private Job writing;         // being written
    private Thread stager;       // alive while there is staging work
    private Thread writer;       // alive while there is writing work
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

    /**
     * Saves a plain value tree (maps, lists, tensors, Python value types) to {@code path} in the
     * background. Blocks only while an earlier save waits to be staged (back-pressure).
     *
     * @param listener told the bytes written, from a background thread; may be null
     * @throws IllegalStateException after {@link #close()}
     */
    public AsyncSave save(Path path, Object value, WriteOptions options, ProgressListener listener) {
        NativeValue root;
        try {
            root = ValueConverter.toNative(value);
        } catch (RuntimeException e) {
            CheckpointException failure = new CheckpointException("cannot save " + path + ": "
                    + NativeErrors.translate(e).getMessage(), e);
            LOG.warn("async checkpoint save failed: {}", failure.getMessage());
            return new AsyncSave(CompletableFuture.completedFuture(null), CompletableFuture.failedFuture(failure));
        }
        return save(path, root, options, listener);
    }

    /**
     * Saves {@code root} to {@code path} in the background; takes {@code root} over (it is closed
     * once staged).
     *
     * @param root the checkpoint tree, tensors still shared with the caller (e.g. what {@code Fabric}
     *     builds from a state: models' and optimizers' state dicts and plain values)
     * @throws IllegalStateException after {@link #close()}
     */
    public AsyncSave save(Path path, NativeValue root, WriteOptions options, ProgressListener listener) {
        return save(CheckpointLocation.of(path), root, options, listener);
    }

    /** {@link #save(Path, NativeValue, WriteOptions, ProgressListener)} to any location (a local file or an object). */
    public AsyncSave save(CheckpointLocation target, NativeValue root, WriteOptions options,
            ProgressListener listener) {
        Objects.requireNonNull(root, "root");
        Objects.requireNonNull(options, "options");
        if (!options.unsafeGlobalsAllowed()) {
            TorchSaveFileIO.requireWeightsOnlySafe(target, root); // refused here, in the caller's thread
        }
        Job job = new Job(target, root, options, listener);
        Job replaced = null;
        lock.lock();
        try {
            // Back-pressure: wait for the waiting slot unless the waiting save is for the same path.
            while (!closed && waiting != null && !waiting.target.equals(target)) {
                changed.awaitUninterruptibly();
            }
            if (closed) {
                throw new IllegalStateException("this AsyncWriter is closed");
            }
            // Numbered and counted in one step per path: a path is forgotten only when no save of it
            // is pending, so no older save can come after its record of the newest one is gone.
            PATHS.compute(target, (k, state) -> {
                PathState s = state == null ? new PathState() : state;
                s.pending++;
                job.sequence = SEQUENCE.incrementAndGet();
                return s;
            });
            if (waiting != null) { // same path, not staged yet: the newer state replaces it
                replaced = waiting;
                job.supersede(replaced);
            }
            waiting = job;
            BUSY.add(this);
            if (stager == null) {
                stager = new Thread(this::stageLoop, "fabricckpt-async-stage");
                stager.setDaemon(false);
                stager.start();
            }
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        if (replaced != null) {
            replaced.releaseRoot();
            release(replaced.target);
        }
        return new AsyncSave(job.staged, job.written);
    }

    /** Waits until every save requested so far is staged: the caller may change its tensors again. */
    public void awaitStaged() {
        lock.lock();
        try {
            while (waiting != null || staging != null) {
                changed.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
    }

    /** Waits until every save requested so far has finished (successfully or not). */
    public void awaitIdle() {
        lock.lock();
        try {
            while (waiting != null || staging != null || staged != null || writing != null) {
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

    private void stageLoop() {
        while (true) {
            Job job;
            Job dropped = null;
            lock.lock();
            try {
                // Memory bound: copy only once the staged slot is free (or holds an older save of the
                // same path, which the new copy replaces).
                while (waiting != null && staged != null && !staged.target.equals(waiting.target)) {
                    changed.awaitUninterruptibly();
                }
                if (waiting == null) {
                    stager = null; // a later save starts a new thread
                    markIdleIfDone();
                    changed.signalAll();
                    return;
                }
                job = waiting;
                waiting = null;
                if (staged != null) {
                    dropped = staged;
                    staged = null;
                    job.supersede(dropped);
                }
                staging = job;
                changed.signalAll(); // the waiting slot is free
            } finally {
                lock.unlock();
            }
            if (dropped != null) {
                dropped.snapshot.close(); // its memory goes before the new copy is made
                release(dropped.target);
            }
            Throwable error = null;
            try {
                job.snapshot = FabricNative.snapshotTensors(job.root, threads, null);
            } catch (Throwable t) {
                error = new CheckpointException("cannot save " + job.target + ": " + t.getMessage(), t);
            } finally {
                job.releaseRoot();
            }
            lock.lock();
            try {
                staging = null;
                if (error == null) {
                    staged = job;
                    if (writer == null) {
                        writer = new Thread(this::writeLoop, "fabricckpt-async-save");
                        writer.setDaemon(false);
                        writer.start();
                    }
                }
                changed.signalAll();
            } finally {
                lock.unlock();
            }
            if (error != null) {
                release(job.target);
                LOG.warn("async checkpoint save failed: {}", error.getMessage());
                job.complete(error);
            }
        }
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
                changed.signalAll(); // the staged slot is free
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
                markIdleIfDone();
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    /** Under the lock: no save of this saver is requested or running any more. */
    private void markIdleIfDone() {
        if (waiting == null && staging == null && staged == null && writing == null) {
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
            for (Job job : new Job[] {staged, staging, waiting}) {
                if (job != null) {
                    targets.add(job.target.toString());
                }
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
            CheckpointIOs.forWriting(job.target).write(job.target, job.snapshot, job.options, threads, job.listener);
            state.newestWritten = job.sequence;
        } finally {
            state.writing.unlock();
        }
    }

    /** One save of {@code target} is done; forget the path once none is pending. */
    private static void release(CheckpointLocation target) {
        PATHS.computeIfPresent(target, (k, state) -> --state.pending == 0 ? null : state);
    }
}
