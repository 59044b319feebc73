package io.fabricckpt.internal.io.s3;

import io.fabricckpt.core.CheckpointLocation;
import java.nio.ByteBuffer;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * Reads byte ranges of objects in storage into memory, never to disk: the holes of staged checkpoints
 * (tensor data), which the torch-free readers read in order, a few MiB at a time. A read that misses
 * fetches a window from where it starts, and the reads after it are copied from there. Two windows,
 * so that reading two objects in turn ({@code diff}; a tensor assembled from chunks in two shard
 * files), or two places of one in turn (a sharded load reads each item's trailing headers, then its
 * bytes), keeps one of each; together they are concurrency x part size bytes, the memory a save holds
 * in parts in flight, and each is fetched with concurrency ranged GETs at once ({@link
 * S3Objects#download}). As the kernel's readahead, only a read that goes on forward from the last one
 * (within {@value #NEAR} bytes: past the headers between two records) fills a window; one elsewhere (a
 * safetensors convert writes tensors in name order, not the file's) and a read of at least a window go
 * straight into the reader's memory, so reads out of order fetch no more than they read. Fills ramp up
 * as the kernel's do ({@link #fillSize}), and what a window holds of a read is always copied from it,
 * so little is fetched that is not read. Once a run of reads has gone on past its first fill, the
 * window after the one being read is fetched in the background ({@link #readAhead}), so that the
 * reader's copying and checking overlap the fetching, as with the kernel's asynchronous readahead.
 */
final class ObjectReadahead {
    private static final int WINDOWS = 2;
    private static final long NEAR = 1 << 20;
    /** The first fill of a run of forward reads; each fill that goes on from the last one's end doubles, up to a window. */
    private static final int FIRST_FILL = 1 << 20;

    private final S3Objects objects;
    private final int windowSize;
    private final long rangeSize;
    private final Window[] windows = new Window[WINDOWS];
    private long uses;
    private long fetchedBytes;
    private CheckpointLocation lastObject; // and where its last read ended
    private long lastEnd;
    private CheckpointLocation lastFilled; // and where the last fill ended, and how long the next one is
    private long lastFillEnd;
    private int nextFill = FIRST_FILL;

    /** Where the windows read ahead are fetched: daemon threads, each waiting on a window's ranged GETs. */
    private static final ExecutorService AHEAD = Executors.newCachedThreadPool(task -> {
        Thread thread = new Thread(task, "fabricckpt-s3-readahead");
        thread.setDaemon(true);
        return thread;
    });

    private static final class Window {
        CheckpointLocation object;
        long start;
        int length;
        ByteBuffer bytes;
        long lastUse;
        CompletableFuture<Void> filling; // while it is fetched in the background
        boolean unread;                  // read ahead, and not read from yet
    }

    ObjectReadahead(S3Objects objects) {
        this.objects = objects;
        long budget = objects.settings().partSize() * objects.settings().concurrency();
        this.windowSize = (int) Math.min(budget / WINDOWS, 1L << 30);
        this.rangeSize = Math.max(1, windowSize / objects.settings().concurrency());
    }

    /** Bytes fetched so far. */
    synchronized long fetchedBytes() {
        return fetchedBytes;
    }

    /** Fills {@code dest} with the bytes at {@code offset} of {@code object}, which has {@code objectSize} bytes. */
    synchronized void read(CheckpointLocation object, long objectSize, long offset, ByteBuffer dest) {
        int n = dest.remaining();
        if (offset < 0 || n > objectSize - offset) {
            throw new IllegalArgumentException(object + ": bytes " + offset + "+" + n + " lie beyond its " + objectSize
                    + " bytes");
        }
        boolean forward = object.equals(lastObject) && offset >= lastEnd && offset - lastEnd < NEAR;
        lastObject = object;
        lastEnd = offset + n;
        // What the windows hold of its start is copied from there (a large read right after the small
        // one that filled a window: a tensor's bytes after its record's header).
        long at = offset;
        for (Window window; dest.hasRemaining() && (window = holding(object, at)) != null; ) {
            at += take(ready(window), at, dest);
            readAhead(window, objectSize);
        }
        if (!dest.hasRemaining()) {
            return;
        }
        int rest = dest.remaining();
        if (rest >= windowSize || !forward) {
            long from = at;
            int base = dest.position();
            objects.download(object, from, rest, (start, length) -> dest.slice(base + (int) (start - from), length));
            fetchedBytes += rest;
            return;
        }
        // Read on forward: windows filled from here, a read that runs past a window's end going on from there.
        for (; dest.hasRemaining(); ) {
            Window window = holding(object, at);
            if (window == null) {
                window = fill(leastRecent(), object, at, (int) Math.min(fillSize(object, at), objectSize - at), false);
            }
            at += take(ready(window), at, dest);
            readAhead(window, objectSize);
        }
    }

    /** {@code window} once its background fill (if any) is done, marked used; its fill's failure thrown. */
    private Window ready(Window window) {
        CompletableFuture<Void> filling = window.filling;
        if (filling != null) {
            window.filling = null;
            try {
                filling.join();
            } catch (CompletionException e) {
                window.object = null; // holds nothing
                throw e.getCause() instanceof RuntimeException r ? r : e;
            }
        }
        window.lastUse = ++uses;
        window.unread = false;
        return window;
    }

    /**
     * After a read from {@code window}, which a run of forward reads reached past its first fill: the
     * next window fetched in the background (up to {@code limit}), into the other window if it holds
     * nothing or bytes of the same object before this one (never another object's or place's that a
     * reader going back and forth still reads: {@code diff} reads two objects in turn).
     */
    private void readAhead(Window window, long limit) {
        long next = window.start + window.length;
        if (nextFill <= FIRST_FILL || window.object == null || next >= limit || !window.object.equals(lastFilled)
                || next != lastFillEnd || holding(window.object, next) != null) {
            return;
        }
        Window other = leastRecent();
        boolean behind = other.object == null
                || other.object.equals(window.object) && other.start + other.length <= window.start;
        if (other == window || other.filling != null || !behind) {
            return;
        }
        fill(other, window.object, next, (int) Math.min(fillSize(window.object, next), limit - next), true);
    }

    /** Copies into {@code dest} what {@code window} holds from {@code at} on (as much as dest takes); the bytes copied. */
    private static int take(Window window, long at, ByteBuffer dest) {
        int k = (int) Math.min(dest.remaining(), window.start + window.length - at);
        dest.put(window.bytes.slice((int) (at - window.start), k));
        return k;
    }

    /**
     * How much a fill at {@code at} fetches: as the kernel's readahead ramps up, little where a run of
     * reads starts (a record's trailing headers read before its tensor's bytes: no window of bytes that
     * will not be read), doubling while fills follow one another, up to a window.
     */
    private int fillSize(CheckpointLocation object, long at) {
        boolean goesOn = object.equals(lastFilled) && at >= lastFillEnd && at - lastFillEnd < NEAR;
        nextFill = goesOn ? (int) Math.min((long) nextFill * 2, windowSize) : Math.min(FIRST_FILL, windowSize);
        return nextFill;
    }

    /** {@code window} refilled with [start, start + length) of {@code object}: now, or in the background. */
    private Window fill(Window window, CheckpointLocation object, long start, int length, boolean background) {
        if (window.filling != null) { // its buffer is still being written: wait, whatever it brings
            window.filling.exceptionally(e -> null).join();
            window.filling = null;
        }
        if (window.bytes == null) {
            window.bytes = ByteBuffer.allocateDirect(windowSize);
        }
        ByteBuffer bytes = window.bytes;
        Runnable fetch = () -> objects.download(object, start, length, rangeSize,
                (at, size) -> bytes.slice((int) (at - start), size));
        window.object = null; // holds nothing until filled
        window.unread = background;
        if (background) {
            window.filling = CompletableFuture.runAsync(fetch, AHEAD);
        } else {
            fetch.run();
        }
        fetchedBytes += length;
        window.object = object;
        window.start = start;
        window.length = length;
        lastFilled = object;
        lastFillEnd = start + length;
        return window;
    }

    private Window holding(CheckpointLocation object, long offset) {
        for (Window w : windows) {
            if (w != null && object.equals(w.object) && w.start <= offset && offset < w.start + w.length) {
                return w;
            }
        }
        return null;
    }

    /** The window to refill: the least recently used, but never one read ahead and not read yet while another is not. */
    private Window leastRecent() {
        Window oldest = null;
        for (int i = 0; i < windows.length; i++) {
            if (windows[i] == null) {
                windows[i] = new Window();
            }
            Window w = windows[i];
            if (oldest == null || (w.unread == oldest.unread ? w.lastUse < oldest.lastUse : oldest.unread)) {
                oldest = w;
            }
        }
        return oldest;
    }
}
