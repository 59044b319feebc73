package io.fabricckpt.internal.io.s3;

import io.fabricckpt.core.CheckpointLocation;
import java.nio.ByteBuffer;

/**
 * Reads byte ranges of objects in storage into memory, never to disk: the holes of staged checkpoints
 * (tensor data), which the torch-free readers read in order, a few MiB at a time. A read that misses
 * fetches a window from where it starts, and the reads after it are copied from there. Two windows,
 * so that reading two objects in turn ({@code diff}; a tensor assembled from chunks in two shard
 * files) keeps one of each; together they are concurrency x part size bytes, the memory a save holds
 * in parts in flight, and each is fetched with concurrency ranged GETs at once ({@link
 * S3Objects#download}). As the kernel's readahead, only a read that goes on forward from the last one
 * (within {@value #NEAR} bytes: past the headers between two records) fills a window; one elsewhere (a
 * safetensors convert writes tensors in name order, not the file's) and a read of at least a window go
 * straight into the reader's memory, so reads out of order fetch no more than they read.
 */
final class ObjectReadahead {
    private static final int WINDOWS = 2;
    private static final long NEAR = 1 << 20;

    private final S3Objects objects;
    private final int windowSize;
    private final long rangeSize;
    private final Window[] windows = new Window[WINDOWS];
    private long uses;
    private long fetchedBytes;
    private CheckpointLocation lastObject; // and where its last read ended
    private long lastEnd;

    private static final class Window {
        CheckpointLocation object;
        long start;
        int length;
        ByteBuffer bytes;
        long lastUse;
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
        if (n >= windowSize || !forward && holding(object, offset) == null) {
            objects.download(object, offset, n, (at, length) -> dest.slice(dest.position() + (int) (at - offset), length));
            fetchedBytes += n;
            return;
        }
        // From the windows that hold it; a read that runs past a window's end goes on from there.
        for (long at = offset; dest.hasRemaining(); ) {
            Window window = holding(object, at);
            if (window == null) {
                window = fill(leastRecent(), object, at, (int) Math.min(windowSize, objectSize - at));
            }
            window.lastUse = ++uses;
            int k = (int) Math.min(dest.remaining(), window.start + window.length - at);
            dest.put(window.bytes.slice((int) (at - window.start), k));
            at += k;
        }
    }

    private Window fill(Window window, CheckpointLocation object, long start, int length) {
        if (window.bytes == null) {
            window.bytes = ByteBuffer.allocateDirect(windowSize);
        }
        ByteBuffer bytes = window.bytes;
        window.object = null; // holds nothing until filled
        objects.download(object, start, length, rangeSize, (at, size) -> bytes.slice((int) (at - start), size));
        fetchedBytes += length;
        window.object = object;
        window.start = start;
        window.length = length;
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

    private Window leastRecent() {
        Window oldest = null;
        for (int i = 0; i < windows.length; i++) {
            if (windows[i] == null) {
                windows[i] = new Window();
            }
            if (oldest == null || windows[i].lastUse < oldest.lastUse) {
                oldest = windows[i];
            }
        }
        return oldest;
    }
}
