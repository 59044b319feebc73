package io.fabricckpt.internal;

import io.fabricckpt.core.ProgressListener;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

/**
 * Runs a blocking native call that updates a {@link NativeProgress} while a shared daemon thread
 * reports that progress to a {@link ProgressListener}.
 */
public final class ProgressPoller {
    /** How often a running operation is reported. */
    static final long PERIOD_MILLIS = 100;

    private static final ScheduledExecutorService POLLER = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread t = new Thread(r, "fabricckpt-progress");
        t.setDaemon(true);
        return t;
    });

    private ProgressPoller() {}

    /**
     * Calls {@code call} with a fresh progress object (or null when there is no listener) and reports
     * it until the call returns; then reports completion once if it succeeded.
     */
    public static <T> T run(ProgressListener listener, Function<NativeProgress, T> call) {
        if (listener == null) {
            return call.apply(null);
        }
        try (NativeProgress progress = new NativeProgress()) {
            long[] last = {-1};
            Runnable report = () -> {
                long done = progress.bytesDone();
                long total = progress.bytesTotal();
                if (done != last[0]) {
                    last[0] = done;
                    listener.onProgress(done, total);
                }
            };
            ScheduledFuture<?> task = POLLER.scheduleAtFixedRate(() -> {
                try {
                    report.run();
                } catch (RuntimeException ignored) {
                    // a failing listener must not stop the operation or later reports
                }
            }, PERIOD_MILLIS, PERIOD_MILLIS, TimeUnit.MILLISECONDS);
            T result;
            try {
                result = call.apply(progress);
            } finally {
                task.cancel(false);
                // the progress object must outlive a report that is running right now
                awaitPoller();
            }
            long total = progress.bytesTotal();
            listener.onProgress(total, total);
            return result;
        }
    }

    /** Waits, uninterruptibly, until the poller has finished whatever it is running. */
    private static void awaitPoller() {
        java.util.concurrent.Future<?> barrier = POLLER.submit(() -> { });
        boolean interrupted = false;
        while (true) {
            try {
                barrier.get();
                break;
            } catch (InterruptedException e) {
                interrupted = true;
            } catch (java.util.concurrent.ExecutionException e) {
                break; // an empty task does not fail
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }
}
