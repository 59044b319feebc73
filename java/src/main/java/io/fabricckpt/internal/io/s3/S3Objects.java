package io.fabricckpt.internal.io.s3;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.CheckpointNotFoundException;
import io.fabricckpt.core.CheckpointStorageException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import javax.net.ssl.SSLException;
import javax.net.ssl.TrustManager;
import org.bytedeco.javacpp.BytePointer;
import software.amazon.awssdk.auth.credentials.AwsCredentialsProvider;
import software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider;
import software.amazon.awssdk.core.ResponseInputStream;
import software.amazon.awssdk.core.exception.SdkClientException;
import software.amazon.awssdk.core.exception.SdkException;
import software.amazon.awssdk.core.retry.RetryMode;
import software.amazon.awssdk.core.sync.RequestBody;
import software.amazon.awssdk.http.apache.ApacheHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.s3.S3Client;
import software.amazon.awssdk.services.s3.S3ClientBuilder;
import software.amazon.awssdk.services.s3.S3Configuration;
import software.amazon.awssdk.services.s3.model.CompletedPart;
import software.amazon.awssdk.services.s3.model.GetObjectResponse;
import software.amazon.awssdk.services.s3.model.HeadObjectResponse;
import software.amazon.awssdk.services.s3.model.NoSuchBucketException;
import software.amazon.awssdk.services.s3.model.NoSuchKeyException;
import software.amazon.awssdk.services.s3.model.S3Exception;
import software.amazon.awssdk.services.s3.model.S3Object;

/**
 * Objects in S3 (or an S3-compatible store) as checkpoints need them: multipart uploads filled part by
 * part from the caller's memory, several parts in flight; parallel ranged GETs into the caller's memory;
 * listing, existence and deletion. Every failure is a typed exception naming the {@code s3://} URL:
 * {@link CheckpointNotFoundException} for a missing bucket or key, {@link CheckpointStorageException}
 * for denied access, a broken connection and other refusals. Transient failures (throttling, 5xx,
 * connection resets) are retried by the SDK's standard strategy: three attempts with exponential
 * backoff and jitter. Thread-safe.
 */
public final class S3Objects implements AutoCloseable {
    /** Fills {@code dest} (its remaining bytes) with the object's bytes at {@code offset}. */
    @FunctionalInterface
    public interface PartSource {
        void fill(long offset, ByteBuffer dest);
    }

    /** The memory the bytes at {@code [offset, offset + length)} of the object go to. */
    @FunctionalInterface
    public interface RangeSink {
        ByteBuffer window(long offset, int length);
    }

    private static volatile S3Objects shared;

    private final S3Client client;
    private final S3Settings settings;
    private final java.util.concurrent.atomic.AtomicLong downloaded = new java.util.concurrent.atomic.AtomicLong();
    private final java.util.concurrent.atomic.AtomicLong gets = new java.util.concurrent.atomic.AtomicLong();

    /** A client with the SDK's default credential chain. */
    public S3Objects(S3Settings settings) {
        this(settings, DefaultCredentialsProvider.builder().build());
    }

    public S3Objects(S3Settings settings, AwsCredentialsProvider credentials) {
        this.settings = settings;
        this.client = clientBuilder(settings).credentialsProvider(credentials).build();
    }

    /**
     * A builder of SDK clients configured as this class's: region, endpoint, addressing, trusted
     * certificates, connections for {@code concurrency} requests in flight, standard retries; the SDK's
     * default credential chain unless the caller sets other credentials.
     */
    public static S3ClientBuilder clientBuilder(S3Settings settings) {
        var http = ApacheHttpClient.builder().maxConnections(Math.max(50, 2 * settings.concurrency()));
        if (settings.caBundle() != null) {
            TrustManager[] trust = CaBundle.trustManagers(settings.caBundle());
            http.tlsTrustManagersProvider(() -> trust);
        }
        var builder = S3Client.builder()
                .region(Region.of(settings.region()))
                .forcePathStyle(settings.pathStyle())
                // Over http the SDK signs the payload; chunked (aws-chunked), it copies every 128 KiB chunk
                // into a new array, as much garbage as bytes sent. Unchunked, it hashes each part where it
                // lies, then sends it. (Over https the payload is not signed, so neither applies.)
                .serviceConfiguration(S3Configuration.builder().chunkedEncodingEnabled(false).build())
                .httpClientBuilder(http)
                .overrideConfiguration(o -> o.retryStrategy(RetryMode.STANDARD));
        if (settings.endpoint() != null) {
            builder.endpointOverride(settings.endpoint());
        }
        return builder;
    }

    /** The process's client, configured from its environment on first use ({@link S3Settings#fromEnvironment}). */
    public static S3Objects shared() {
        S3Objects s = shared;
        if (s == null) {
            synchronized (S3Objects.class) {
                s = shared;
                if (s == null) {
                    shared = s = new S3Objects(S3Settings.fromEnvironment());
                }
            }
        }
        return s;
    }

    public S3Settings settings() {
        return settings;
    }

    S3Client client() {
        return client;
    }

    /** Bytes of object data this client has fetched so far (what ranged reads saved shows here). */
    public long bytesDownloaded() {
        return downloaded.get();
    }

    /** GET requests (whole or ranged) sent so far. */
    public long getRequests() {
        return gets.get();
    }

    /** The object's size in bytes. */
    public long size(CheckpointLocation object) {
        try {
            HeadObjectResponse head = client.headObject(b -> b.bucket(object.bucket()).key(object.key()));
            return head.contentLength();
        } catch (SdkException e) {
            throw translate(object, "reading its size", e);
        }
    }

    /** Whether the object exists (a missing bucket is an error). */
    public boolean exists(CheckpointLocation object) {
        try {
            client.headObject(b -> b.bucket(object.bucket()).key(object.key()));
            return true;
        } catch (NoSuchKeyException e) {
            requireBucket(object, e);
            return false;
        } catch (S3Exception e) {
            if (e.statusCode() == 404) {
                requireBucket(object, e);
                return false;
            }
            throw translate(object, "looking it up", e);
        } catch (SdkException e) {
            throw translate(object, "looking it up", e);
        }
    }

    /** The objects under the directory's prefix (its key followed by '/'): key to size, in lexicographic order. */
    public Map<String, Long> list(CheckpointLocation directory) {
        return list(directory, directory.key() + "/");
    }

    /** The objects beside {@code object}: under the prefix its key's last '/' ends (the whole bucket if none). */
    public Map<String, Long> listBeside(CheckpointLocation object) {
        return list(object, object.key().substring(0, object.key().lastIndexOf('/') + 1));
    }

    private Map<String, Long> list(CheckpointLocation location, String prefix) {
        Map<String, Long> objects = new LinkedHashMap<>();
        try {
            for (S3Object o : client.listObjectsV2Paginator(b -> b.bucket(location.bucket()).prefix(prefix)).contents()) {
                objects.put(o.key(), o.size());
            }
        } catch (SdkException e) {
            throw translate(location, "listing it", e);
        }
        return objects;
    }

    /** A multipart upload begun and neither completed nor aborted (what a save killed midway leaves). */
    public record PendingUpload(CheckpointLocation object, String uploadId, java.time.Instant initiated) {}

    /** The pending uploads of the object at {@code location} and of the objects under its prefix. */
    public List<PendingUpload> pendingUploads(CheckpointLocation location) {
        List<PendingUpload> out = new ArrayList<>();
        try {
            for (var upload : client.listMultipartUploadsPaginator(b -> b.bucket(location.bucket())
                    .prefix(location.key())).uploads()) {
                String key = upload.key();
                if (key.equals(location.key()) || key.startsWith(location.key() + "/")) {
                    out.add(new PendingUpload(CheckpointLocation.ofObject(location.bucket(), key), upload.uploadId(),
                            upload.initiated()));
                }
            }
        } catch (SdkException e) {
            throw translate(location, "listing its pending uploads", e);
        }
        return out;
    }

    /** Aborts a pending upload: the store drops its parts. */
    public void abort(PendingUpload upload) {
        try {
            client.abortMultipartUpload(b -> b.bucket(upload.object().bucket()).key(upload.object().key())
                    .uploadId(upload.uploadId()));
        } catch (SdkException e) {
            throw translate(upload.object(), "aborting its upload " + upload.uploadId(), e);
        }
    }

    /** Deletes the object (nothing happens when it is missing). */
    public void delete(CheckpointLocation object) {
        try {
            client.deleteObject(b -> b.bucket(object.bucket()).key(object.key()));
        } catch (SdkException e) {
            throw translate(object, "deleting it", e);
        }
    }

    /**
     * Writes an object of {@code size} bytes that {@code source} fills: one PUT when it fits one part,
     * else a multipart upload of {@link S3Settings#partSizeFor} parts, {@link S3Settings#concurrency}
     * at once, each in one buffer of its own (the memory used). The object appears, replacing any older
     * one, only when every part is in; on any failure the upload is aborted and nothing appears.
     */
    public void upload(CheckpointLocation object, long size, PartSource source) {
        if (size <= settings.partSizeFor(size)) {
            try (BytePointer memory = new BytePointer(Math.max(1, size))) {
                ByteBuffer part = memory.capacity(size).limit(size).asByteBuffer();
                source.fill(0, part.duplicate());
                client.putObject(b -> b.bucket(object.bucket()).key(object.key()).contentLength(size), body(part));
            } catch (SdkException e) {
                throw translate(object, "uploading it", e);
            }
            return;
        }
        try (UncompletedUpload staged = uploadUncompleted(object, size, source)) {
            staged.complete();
        }
    }

    /**
     * A writer of the object's bytes in order, for writers that do not know its size beforehand (see
     * {@link MultipartWriter}: parts uploaded as they fill; the object appears only on completion).
     */
    public MultipartWriter openWriter(CheckpointLocation object) {
        return new MultipartWriter(this, object);
    }

    /**
     * Sends an object's bytes as a multipart upload, as {@link #upload} does, but does not make it
     * appear: the returned {@link UncompletedUpload} does, on {@link UncompletedUpload#complete()} (one small
     * request), or drops it on close. Lets several objects be sent before any of them replaces what
     * is there (the files of a sharded checkpoint); every part is in when this returns, so a failure
     * to reach or write to the store shows here, not on completion. An empty object is sent on
     * completion (there is no empty part).
     */
    public UncompletedUpload uploadUncompleted(CheckpointLocation object, long size, PartSource source) {
        if (size == 0) {
            return new UncompletedUpload(object, null, List.of());
        }
        String uploadId;
        try {
            uploadId = client.createMultipartUpload(b -> b.bucket(object.bucket()).key(object.key())).uploadId();
        } catch (SdkException e) {
            throw translate(object, "starting its upload", e);
        }
        try {
            return new UncompletedUpload(object, uploadId, uploadParts(object, uploadId, size, settings.partSizeFor(size),
                    source));
        } catch (RuntimeException | Error e) {
            abort(object, uploadId, e);
            if (e instanceof SdkException sdk) {
                throw translate(object, "uploading it", sdk);
            }
            throw e;
        }
    }

    /** The upload {@code uploadId} of {@code object} whose {@code parts} are in (null: an empty object). */
    UncompletedUpload uncompleted(CheckpointLocation object, String uploadId, List<CompletedPart> parts) {
        return new UncompletedUpload(object, uploadId, parts);
    }

    /** An object whose bytes are sent but which does not exist yet ({@link #uploadUncompleted}). Not thread-safe. */
    public final class UncompletedUpload implements AutoCloseable {
        private final CheckpointLocation object;
        private final String uploadId; // null: an empty object, sent on completion
        private final List<CompletedPart> parts;
        private boolean finished;

        private UncompletedUpload(CheckpointLocation object, String uploadId, List<CompletedPart> parts) {
            this.object = object;
            this.uploadId = uploadId;
            this.parts = parts;
        }

        /** Makes the object appear, replacing any older one. */
        public void complete() {
            if (finished) {
                throw new IllegalStateException(object + ": already completed or dropped");
            }
            finished = true;
            try {
                if (uploadId == null) {
                    client.putObject(b -> b.bucket(object.bucket()).key(object.key()).contentLength(0L),
                            RequestBody.empty());
                } else {
                    client.completeMultipartUpload(b -> b.bucket(object.bucket()).key(object.key()).uploadId(uploadId)
                            .multipartUpload(m -> m.parts(parts)));
                }
            } catch (RuntimeException | Error e) {
                if (uploadId != null) {
                    abort(object, uploadId, e);
                }
                if (e instanceof SdkException sdk) {
                    throw translate(object, "completing its upload", sdk);
                }
                throw e;
            }
        }

        /** Drops the object unless it was completed (the store discards the upload's parts). */
        @Override
        public void close() {
            if (finished) {
                return;
            }
            finished = true;
            if (uploadId != null) {
                abortUpload(object, uploadId);
            }
        }
    }

    private List<CompletedPart> uploadParts(CheckpointLocation object, String uploadId, long size, long partSize,
            PartSource source) {
        int count = (int) ((size + partSize - 1) / partSize);
        CompletedPart[] done = new CompletedPart[count];
        AtomicInteger next = new AtomicInteger();
        AtomicBoolean failed = new AtomicBoolean();
        int workers = Math.min(count, settings.concurrency());
        runWorkers(workers, () -> {
            try (BytePointer memory = new BytePointer(partSize)) {
                for (int i; !failed.get() && (i = next.getAndIncrement()) < count; ) {
                    long offset = i * partSize;
                    long length = Math.min(partSize, size - offset);
                    ByteBuffer part = memory.capacity(length).limit(length).position(0).asByteBuffer();
                    source.fill(offset, part.duplicate());
                    int number = i + 1;
                    String etag = client.uploadPart(b -> b.bucket(object.bucket()).key(object.key())
                            .uploadId(uploadId).partNumber(number).contentLength(length), body(part)).eTag();
                    done[i] = CompletedPart.builder().partNumber(number).eTag(etag).build();
                }
            } catch (RuntimeException | Error e) {
                failed.set(true);
                throw e;
            }
        });
        return Arrays.asList(done);
    }

    /** Aborts the upload so that the store drops its parts; a failure to abort is added to {@code cause}. */
    private void abort(CheckpointLocation object, String uploadId, Throwable cause) {
        try {
            abortUpload(object, uploadId);
        } catch (RuntimeException e) {
            cause.addSuppressed(e);
        }
    }

    /** Aborts the upload so that the store drops its parts. */
    void abortUpload(CheckpointLocation object, String uploadId) {
        try {
            client.abortMultipartUpload(b -> b.bucket(object.bucket()).key(object.key()).uploadId(uploadId));
        } catch (SdkException e) {
            throw translate(object, "aborting its upload " + uploadId, e);
        }
    }

    /**
     * Reads the object's {@code size} bytes into {@code sink}'s memory with ranged GETs of
     * {@link S3Settings#rangeSizeFor} bytes, {@link S3Settings#concurrency} at once.
     */
    public void download(CheckpointLocation object, long size, RangeSink sink) {
        download(object, 0, size, sink);
    }

    /** {@link #download(CheckpointLocation, long, RangeSink)} of {@code [start, start + size)} of the object. */
    public void download(CheckpointLocation object, long start, long size, RangeSink sink) {
        download(object, start, size, settings.rangeSizeFor(size), sink);
    }

    /** The same in ranged GETs of {@code range} bytes ({@link S3Settings#concurrency} at once). */
    public void download(CheckpointLocation object, long start, long size, long range, RangeSink sink) {
        download(object, List.of(new long[] {start, size}), range, sink);
    }

    /**
     * Reads the object's bytes in each of {@code regions} ({offset, length}) into {@code sink}'s memory:
     * all of them split into ranged GETs of at most {@code range} bytes, {@link S3Settings#concurrency}
     * at once across every region, so many small regions cost a few round trips, not one each.
     */
    private void download(CheckpointLocation object, List<long[]> regions, long range, RangeSink sink) {
        List<long[]> pieces = new ArrayList<>();
        for (long[] region : regions) {
            for (long at = region[0], end = region[0] + region[1]; at < end; at += range) {
                pieces.add(new long[] {at, Math.min(range, end - at)});
            }
        }
        AtomicInteger next = new AtomicInteger();
        AtomicBoolean failed = new AtomicBoolean();
        try {
            runWorkers(Math.min(pieces.size(), settings.concurrency()), () -> {
                byte[] chunk = new byte[1 << 16];
                try {
                    for (int i; !failed.get() && (i = next.getAndIncrement()) < pieces.size(); ) {
                        long[] piece = pieces.get(i);
                        readRange(object, piece[0], sink.window(piece[0], (int) piece[1]), chunk);
                    }
                } catch (RuntimeException | Error e) {
                    failed.set(true);
                    throw e;
                }
            });
        } catch (SdkException e) {
            throw translate(object, "reading it", e);
        }
    }

    /**
     * Fetches {@code [offset, offset + length)} of the object into the same range of {@code file} (an
     * existing file at least that long, e.g. a sparse one of the object's size), with ranged GETs straight
     * into the file's pages.
     */
    public void downloadInto(CheckpointLocation object, Path file, long offset, long length) throws IOException {
        downloadInto(object, file, List.of(new long[] {offset, length}), 0);
    }

    /**
     * Fetches each of {@code ranges} ({offset, length}, in any order; of an existing file at least that
     * long) of the object into the same range of {@code file}, ranges less than {@code gap} bytes apart
     * as one, every range at once ({@link #download(CheckpointLocation, List, long, RangeSink)}), straight
     * into the file's pages through mappings of at most 1 GiB. Returns the ranges fetched, merged.
     */
    public List<long[]> downloadInto(CheckpointLocation object, Path file, List<long[]> ranges, long gap)
            throws IOException {
        List<long[]> merged = new ArrayList<>();
        ranges.stream().filter(r -> r[1] > 0).sorted((a, b) -> Long.compare(a[0], b[0])).forEach(r -> {
            long[] last = merged.isEmpty() ? null : merged.get(merged.size() - 1);
            if (last != null && r[0] <= last[0] + last[1] + gap) {
                last[1] = Math.max(last[0] + last[1], r[0] + r[1]) - last[0];
            } else {
                merged.add(new long[] {r[0], r[1]});
            }
        });
        // One mapping per region of at most 1 GiB; the GETs' pieces never cross a region's end.
        TreeMap<Long, MappedByteBuffer> mappings = new TreeMap<>();
        List<long[]> regions = new ArrayList<>();
        long total = 0;
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            for (long[] r : merged) {
                for (long at = r[0], end = r[0] + r[1]; at < end; ) {
                    int piece = (int) Math.min(end - at, 1L << 30);
                    mappings.put(at, channel.map(FileChannel.MapMode.READ_WRITE, at, piece));
                    regions.add(new long[] {at, piece});
                    total += piece;
                    at += piece;
                }
            }
        }
        try {
            download(object, regions, settings.rangeSizeFor(total), (at, n) -> {
                var mapping = mappings.floorEntry(at);
                return mapping.getValue().slice(Math.toIntExact(at - mapping.getKey()), n);
            });
        } catch (InternalError e) {
            // A write into a mapped page its disk cannot hold faults (SIGBUS); the JVM reports it so.
            throw new CheckpointStorageException(file + ": writing the bytes of " + object + " into it failed"
                    + " (its disk full? " + Files.getFileStore(file).getUsableSpace() + " bytes free): "
                    + e.getMessage(), e);
        }
        return merged;
    }

    /** The object's bytes at {@code [offset, offset + length)}. */
    public ByteBuffer read(CheckpointLocation object, long offset, int length) {
        ByteBuffer out = ByteBuffer.allocate(length);
        try {
            readRange(object, offset, out, new byte[1 << 16]);
        } catch (SdkException e) {
            throw translate(object, "reading it", e);
        }
        return out.flip();
    }

    private void readRange(CheckpointLocation object, long offset, ByteBuffer dest, byte[] chunk) {
        int length = dest.remaining();
        if (length == 0) {
            return;
        }
        String range = "bytes=" + offset + "-" + (offset + length - 1);
        gets.incrementAndGet();
        try (ResponseInputStream<GetObjectResponse> in = client.getObject(b -> b.bucket(object.bucket())
                .key(object.key()).range(range))) {
            while (dest.hasRemaining()) {
                int n = in.read(chunk, 0, Math.min(chunk.length, dest.remaining()));
                if (n < 0) {
                    throw new CheckpointStorageException(object + ": the object ended before byte " + (offset + length)
                            + " (changed while it was read?)", null);
                }
                dest.put(chunk, 0, n);
                downloaded.addAndGet(n);
            }
        } catch (IOException e) {
            throw new CheckpointStorageException(object + ": reading bytes " + range.substring(6) + " failed: "
                    + e.getMessage(), e);
        }
    }

    /** Runs {@code task} on {@code workers} threads (the caller's included) and rethrows the first failure. */
    private static void runWorkers(int workers, Runnable task) {
        if (workers <= 1) {
            task.run();
            return;
        }
        ExecutorService pool = Executors.newFixedThreadPool(workers - 1, r -> {
            Thread t = new Thread(r, "fabricckpt-s3");
            t.setDaemon(true);
            return t;
        });
        try {
            List<Future<?>> futures = new ArrayList<>();
            for (int w = 1; w < workers; w++) {
                futures.add(pool.submit(task));
            }
            Throwable first = null;
            try {
                task.run();
            } catch (RuntimeException | Error e) {
                first = e;
            }
            for (Future<?> f : futures) {
                try {
                    f.get();
                } catch (ExecutionException e) {
                    if (first == null) {
                        first = e.getCause();
                    }
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    if (first == null) {
                        first = new CheckpointException("interrupted", e);
                    }
                }
            }
            if (first instanceof RuntimeException r) {
                throw r;
            }
            if (first instanceof Error err) {
                throw err;
            }
            if (first != null) {
                throw new CheckpointException(first.getMessage(), first);
            }
        } finally {
            pool.shutdownNow();
        }
    }

    /** A body the SDK reads (and, to sign or retry, reads again) straight from {@code part}'s memory. */
    static RequestBody body(ByteBuffer part) {
        return RequestBody.fromContentProvider(() -> new BufferInputStream(part.duplicate()), part.remaining(),
                "application/octet-stream");
    }

    private void requireBucket(CheckpointLocation object, SdkException cause) {
        try {
            client.headBucket(b -> b.bucket(object.bucket()));
        } catch (SdkException e) {
            throw translate(object, "looking up its bucket", e);
        }
    }

    /** The typed exception for a failed request about {@code object}, naming its URL and what was done. */
    RuntimeException translate(CheckpointLocation object, String doing, SdkException e) {
        String url = object.toString();
        if (e instanceof NoSuchBucketException) {
            return new CheckpointNotFoundException(url + ": no such bucket '" + object.bucket() + "'", e);
        }
        if (e instanceof NoSuchKeyException) {
            return new CheckpointNotFoundException(url + ": no such object", e);
        }
        if (e instanceof S3Exception s3) {
            String code = s3.awsErrorDetails() == null ? null : s3.awsErrorDetails().errorCode();
            if ("NoSuchBucket".equals(code) || s3.statusCode() == 404 && doing.contains("bucket")) {
                return new CheckpointNotFoundException(url + ": no such bucket '" + object.bucket() + "'", e);
            }
            if ("NoSuchKey".equals(code) || s3.statusCode() == 404) {
                return new CheckpointNotFoundException(url + ": no such object", e);
            }
            if (s3.statusCode() == 403) {
                return new CheckpointStorageException(url + ": access denied while " + doing + " (" + code
                        + "; check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE)", e);
            }
            return new CheckpointStorageException(url + ": " + doing + " failed: HTTP " + s3.statusCode() + " "
                    + code + ": " + s3.getMessage(), e);
        }
        if (e instanceof SdkClientException) {
            String where = settings.endpoint() == null ? "S3 (" + settings.region() + ")" : settings.endpoint().toString();
            String tls = !causedByTls(e) ? "" : " (TLS: is its certificate trusted? A private CA's PEM file goes in"
                    + " AWS_CA_BUNDLE" + (settings.caBundle() == null ? "" : ", now " + settings.caBundle()) + ")";
            return new CheckpointStorageException(url + ": " + doing + " failed: cannot reach " + where + tls + ": "
                    + e.getMessage(), e);
        }
        return new CheckpointStorageException(url + ": " + doing + " failed: " + e.getMessage(), e);
    }

    private static boolean causedByTls(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof SSLException) {
                return true;
            }
        }
        return false;
    }

    @Override
    public void close() {
        client.close();
    }

    /** An input stream over a buffer's remaining bytes. */
    private static final class BufferInputStream extends InputStream {
        private final ByteBuffer buffer;

        BufferInputStream(ByteBuffer buffer) {
            this.buffer = buffer;
        }

        @Override
        public int read() {
            return buffer.hasRemaining() ? buffer.get() & 0xff : -1;
        }

        @Override
        public int read(byte[] b, int off, int len) {
            if (len == 0) {
                return 0;
            }
            if (!buffer.hasRemaining()) {
                return -1;
            }
            int n = Math.min(len, buffer.remaining());
            buffer.get(b, off, n);
            return n;
        }

        @Override
        public int available() {
            return buffer.remaining();
        }
    }
}
