package io.fabricckpt.internal.io.s3;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointLocation;
import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.BytePointer;
import software.amazon.awssdk.core.exception.SdkException;
import software.amazon.awssdk.services.s3.model.CompletedPart;

/**
 * An object written in order, by a writer that does not know its size beforehand (a converter): the
 * bytes fill one part buffer at a time, and each full part is uploaded while the next fills, at most
 * {@link S3Settings#concurrency} buffers in all (the memory used: concurrency x part size). The object
 * appears, replacing any older one, only on {@link #complete}; {@link #close} without it aborts the
 * multipart upload, so a failed or abandoned write leaves nothing. An object that fits one part is
 * sent with one PUT on completion. Parts grow as the object does (doubling every 900 parts, at most
 * 5 GiB), to stay within S3's 10,000 parts. Not thread-safe: one writer thread.
 */
public final class MultipartWriter implements AutoCloseable {
    // Doubling every 900 parts, 10,000 parts of S3's smallest size (5 MiB) hold more than its largest object (5 TiB).
    private static final int PARTS_PER_SIZE = 900;
    private static final long MAX_PART_SIZE = 5L << 30;

    private final S3Objects objects;
    private final CheckpointLocation object;
    private final int buffers;
    private final ExecutorService uploads;
    private final Deque<BytePointer> free = new ArrayDeque<>(); // guarded by itself
    private final List<Future<CompletedPart>> parts = new ArrayList<>();
    private int allocated;
    private String uploadId; // null until the first part is full
    private BytePointer filling;
    private ByteBuffer part; // filling's memory, its position the bytes taken
    private boolean finished;

    MultipartWriter(S3Objects objects, CheckpointLocation object) {
        this.objects = objects;
        this.object = object;
        this.buffers = objects.settings().concurrency();
        this.uploads = Executors.newFixedThreadPool(buffers, r -> {
            Thread t = new Thread(r, "fabricckpt-s3-part");
            t.setDaemon(true);
            return t;
        });
    }

    /** Takes all of {@code bytes}; a failed upload of an earlier part shows here. */
    public void write(ByteBuffer bytes) {
        if (finished) {
            throw new IllegalStateException(object + ": already completed or dropped");
        }
        while (bytes.hasRemaining()) {
            if (part != null && !part.hasRemaining()) { // sent once more bytes follow: a last full part may be a PUT
                sendPart();
            }
            if (part == null) {
                startPart();
            }
            int n = Math.min(bytes.remaining(), part.remaining());
            part.put(bytes.slice(bytes.position(), n));
            bytes.position(bytes.position() + n);
        }
    }

    /** Makes the object appear: the last part sent, every part waited for, the upload completed. */
    public void complete() {
        if (finished) {
            throw new IllegalStateException(object + ": already completed or dropped");
        }
        if (uploadId == null) { // all of it fits one part: one PUT
            ByteBuffer body = part == null ? ByteBuffer.allocate(0) : part.flip();
            try {
                objects.client().putObject(b -> b.bucket(object.bucket()).key(object.key())
                        .contentLength((long) body.remaining()), S3Objects.body(body));
            } catch (SdkException e) {
                throw objects.translate(object, "uploading it", e);
            }
            finished = true;
            return;
        }
        try (S3Objects.UncompletedUpload sent = sendUncompleted()) {
            sent.complete();
        }
    }

    /**
     * Sends every byte written, as {@link #complete} does, but does not make the object appear: the
     * returned upload does, on its {@link S3Objects.UncompletedUpload#complete()}, or drops it on close
     * (this writer is done either way). An object that fits one part is sent as a multipart upload of
     * that part; an empty one is sent on completion. Lets several objects be written before any of them
     * replaces what is there (the shards of a Hugging Face sharded checkpoint).
     */
    public S3Objects.UncompletedUpload sendUncompleted() {
        if (finished) {
            throw new IllegalStateException(object + ": already completed or dropped");
        }
        if (part != null && part.position() > 0) {
            sendPart();
        }
        List<CompletedPart> done = new ArrayList<>(parts.size());
        for (Future<CompletedPart> f : parts) {
            done.add(await(f));
        }
        finished = true; // the upload is the returned one's to complete or abort
        return objects.uncompleted(object, uploadId, done);
    }

    /** Without {@link #complete}: stops the part uploads and aborts the upload (the store drops its parts). */
    @Override
    public void close() {
        uploads.shutdownNow();
        boolean stopped = awaitUploads();
        if (!finished && uploadId != null) {
            finished = true;
            objects.abortUpload(object, uploadId);
        }
        finished = true;
        if (stopped) { // a part still being sent reads its buffer: leaked rather than freed under it
            synchronized (free) {
                free.forEach(BytePointer::close);
                free.clear();
            }
            if (filling != null) {
                filling.close();
            }
        }
    }

    private void startPart() {
        long size = partSize(parts.size() + 1);
        BytePointer buffer = takeBuffer();
        if (buffer.capacity() < size) { // parts grew
            buffer.close();
            buffer = new BytePointer(size);
        }
        filling = buffer;
        part = buffer.position(0).capacity(size).limit(size).asByteBuffer();
    }

    private void sendPart() {
        if (parts.size() == S3Settings.MAX_PARTS) {
            throw new CheckpointException(object + ": larger than S3's " + S3Settings.MAX_PARTS + " parts allow", null);
        }
        if (uploadId == null) {
            try {
                uploadId = objects.client().createMultipartUpload(b -> b.bucket(object.bucket()).key(object.key()))
                        .uploadId();
            } catch (SdkException e) {
                throw objects.translate(object, "starting its upload", e);
            }
        }
        ByteBuffer body = part.flip();
        BytePointer buffer = filling;
        int number = parts.size() + 1;
        String id = uploadId;
        parts.add(uploads.submit(() -> {
            try {
                String etag = objects.client().uploadPart(b -> b.bucket(object.bucket()).key(object.key())
                        .uploadId(id).partNumber(number).contentLength((long) body.remaining()),
                        S3Objects.body(body)).eTag();
                return CompletedPart.builder().partNumber(number).eTag(etag).build();
            } finally {
                synchronized (free) {
                    free.push(buffer);
                    free.notifyAll();
                }
            }
        }));
        filling = null;
        part = null;
    }

    /** A free buffer: a new one while fewer than {@link #buffers} exist, else one a finished upload returned. */
    private BytePointer takeBuffer() {
        synchronized (free) {
            while (free.isEmpty()) {
                if (allocated < buffers) {
                    allocated++;
                    return new BytePointer(partSize(parts.size() + 1));
                }
                failIfAPartFailed();
                try {
                    free.wait(100);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new CheckpointException(object + ": interrupted while uploading it", e);
                }
            }
            failIfAPartFailed();
            return free.pop();
        }
    }

    private void failIfAPartFailed() {
        for (Future<CompletedPart> f : parts) {
            if (f.isDone()) {
                await(f);
            }
        }
    }

    private CompletedPart await(Future<CompletedPart> f) {
        try {
            return f.get();
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof SdkException sdk) {
                throw objects.translate(object, "uploading it", sdk);
            }
            if (cause instanceof RuntimeException r) {
                throw r;
            }
            throw new CheckpointException(object + ": uploading it failed: " + cause, cause);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new CheckpointException(object + ": interrupted while uploading it", e);
        }
    }

    private boolean awaitUploads() {
        try {
            return uploads.awaitTermination(5, TimeUnit.MINUTES);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    /** The size of part {@code number} (from 1): the configured size, doubled every 900 parts, at most 5 GiB. */
    long partSize(int number) {
        int doublings = Math.min(20, (number - 1) / PARTS_PER_SIZE);
        return Math.min(MAX_PART_SIZE, objects.settings().partSize() << doublings);
    }
}
