package io.fabricckpt.dist;

import io.fabricckpt.core.AsyncSave;
import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.internal.NativeErrors;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The background saves of one process group ({@code saveAsync} under {@link Ddp} and {@link Fsdp}),
 * as {@code torch.distributed.checkpoint.async_save} runs them: each save's collectives go over a
 * background process group of its own, so they never interleave with the caller's.
 *
 * <p>Two lanes, one thread each, in request order on every rank (the order of the collectives is
 * the order of the {@code saveAsync} calls, the same on every rank): the stager copies a save's
 * tensors and completes {@link AsyncSave#staged()}; the writer runs the strategy's write over the
 * background group (whose first step makes every rank agree that its part is ready: a rank whose
 * conversion or copy failed fails every rank's save) and completes {@link AsyncSave#written()}. Unlike the
 * single-process saver, no save replaces another: whether to skip one must be the same decision on
 * every rank, and only the request order is.
 *
 * <p>Memory: at most two copies of a state, the one being written and one staged; at most one more
 * save waits to be staged (a further {@code saveAsync} blocks until the stager takes it).
 *
 * <p>Saves never vanish: the lanes' threads are not daemons (and exist only while there is work), so
 * a normal JVM exit waits for pending saves; a shutdown hook waits for them on {@code System.exit}
 * and SIGTERM too, saying which on stderr. {@link #close} (from {@link ProcessGroup#close}) waits for
 * them, then closes the background group.
 */
final class BackgroundSaves implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(BackgroundSaves.class);
    /** Groups with saves requested and not finished: what the shutdown hook waits for. */
    private static final Set<BackgroundSaves> BUSY = ConcurrentHashMap.newKeySet();

    static {
        Runtime.getRuntime().addShutdownHook(new Thread(BackgroundSaves::finishPendingSaves,
                "fabricckpt-dist-async-save-exit"));
    }

    /** The strategy's write of one prepared (copied) save over the background group: collective. */
    interface Write {
        void write(PreparedSave snapshot, ProcessGroup background);
    }

    private final ProcessGroup background;
    private final ThreadPoolExecutor stager = lane("fabricckpt-dist-stage");
    private final ThreadPoolExecutor writer = lane("fabricckpt-dist-save");
    private final Semaphore waitingSlot = new Semaphore(1);
    private final Semaphore copies = new Semaphore(2);
    private final List<CheckpointLocation> pending = Collections.synchronizedList(new ArrayList<>());
    private final AtomicInteger inFlight = new AtomicInteger();
    private boolean closed;

    BackgroundSaves(ProcessGroup background) {
        this.background = background;
    }

    /** A lane: one thread at most, none while idle, not a daemon (pending saves keep the JVM up). */
    private static ThreadPoolExecutor lane(String name) {
        ThreadPoolExecutor lane = new ThreadPoolExecutor(1, 1, 1, TimeUnit.SECONDS, new LinkedBlockingQueue<>(), r -> {
            Thread t = new Thread(r, name);
            t.setDaemon(false);
            return t;
        });
        lane.allowCoreThreadTimeOut(true);
        return lane;
    }

    /**
     * Queues {@code prepared} (taken over: closed once copied) to be copied, then written by
     * {@code write}. Collective in order: every rank submits its saves in the same order.
     */
    synchronized AsyncSave submit(CheckpointLocation location, PreparedSave prepared, Write write) {
        if (closed) {
            prepared.close();
            throw new IllegalStateException("the process group is closed: no more background saves");
        }
        waitingSlot.acquireUninterruptibly(); // back-pressure: one save at most waits to be staged
        CompletableFuture<Void> staged = new CompletableFuture<>();
        CompletableFuture<Void> written = new CompletableFuture<>();
        pending.add(location);
        if (inFlight.getAndIncrement() == 0) {
            BUSY.add(this);
        }
        stager.execute(() -> stage(location, prepared, write, staged, written));
        return new AsyncSave(staged, written);
    }

    private void stage(CheckpointLocation location, PreparedSave prepared, Write write,
            CompletableFuture<Void> staged, CompletableFuture<Void> written) {
        waitingSlot.release();
        copies.acquireUninterruptibly(); // memory: one copy being written, one staged
        PreparedSave snapshot;
        try {
            snapshot = prepared.snapshot(0);
        } catch (RuntimeException e) {
            snapshot = new PreparedSave.Builder().failed(e);
        } finally {
            prepared.close();
            staged.complete(null); // the caller's tensors are no longer needed
        }
        PreparedSave copy = snapshot;
        writer.execute(() -> write(location, copy, write, written));
    }

    private void write(CheckpointLocation location, PreparedSave snapshot, Write write,
            CompletableFuture<Void> written) {
        try (snapshot) {
            write.write(snapshot, background);
            written.complete(null);
        } catch (Throwable t) {
            CheckpointException failure = asCheckpointException(location, t);
            LOG.warn("async checkpoint save failed: {}", failure.getMessage());
            written.completeExceptionally(failure);
        } finally {
            copies.release();
            pending.remove(location);
            if (inFlight.decrementAndGet() == 0) {
                BUSY.remove(this);
            }
        }
    }

    private static CheckpointException asCheckpointException(CheckpointLocation location, Throwable t) {
        if (t instanceof CheckpointException e) {
            return e;
        }
        if (t instanceof RuntimeException e) {
            return NativeErrors.translate(e, location.toString());
        }
        return new CheckpointException("cannot save " + location + ": " + t.getMessage(), t);
    }

    /** Waits until every save submitted so far has finished (successfully or not). */
    void awaitIdle() {
        CompletableFuture<Void> drained = new CompletableFuture<>();
        try {
            // Both lanes are FIFO: a marker through the stager, then the writer, comes after every earlier save.
            stager.execute(() -> writer.execute(() -> drained.complete(null)));
        } catch (RejectedExecutionException closedAlready) {
            return; // shut down by close(), which drained the lanes first
        }
        drained.join();
    }

    /** Waits for pending saves, then leaves the background group. Idempotent. */
    @Override
    public void close() {
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
        }
        awaitIdle();
        stager.shutdown();
        writer.shutdown();
        BUSY.remove(this);
        background.close();
    }

    private static void finishPendingSaves() {
        for (BackgroundSaves saves : List.copyOf(BUSY)) {
            List<CheckpointLocation> targets;
            synchronized (saves.pending) {
                targets = List.copyOf(saves.pending);
            }
            if (!targets.isEmpty()) {
                // stderr, not the logger: logging shuts down in a hook of its own, concurrently with this one.
                System.err.println("fabric-ckpt: the JVM is exiting: finishing the background checkpoint saves of "
                        + targets);
            }
            saves.awaitIdle();
        }
    }
}
