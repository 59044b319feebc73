package io.fabricckpt.internal.io.s3;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.S3Server;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.CheckpointStorageException;
import java.io.IOException;
import java.net.ServerSocket;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;

/** The transport against a real S3 server: multipart uploads, their abort, ranged reads, typed errors. */
class S3ObjectsTest {
    private final S3Server server = S3Server.get();

    private static S3Settings settings(String endpoint) {
        Map<String, String> env = new HashMap<>(S3Server.environment());
        env.put("AWS_ENDPOINT_URL", endpoint);
        return S3Settings.from(env);
    }

    private byte[] objectBytes(String bucket, String key) {
        return server.client().getObjectAsBytes(b -> b.bucket(bucket).key(key)).asByteArray();
    }

    private boolean noUploadPending(String bucket) {
        return server.client().listMultipartUploads(b -> b.bucket(bucket)).uploads().isEmpty();
    }

    /** An object of 1000 random bytes there before: what a failed write must leave as it was. */
    private static byte[] putOldObject(CheckpointLocation object) {
        byte[] old = random(1000);
        S3Objects.shared().upload(object, old.length, (offset, dest) -> dest.put(old));
        return old;
    }

    private static byte[] random(int size) {
        byte[] bytes = new byte[size];
        new Random(size).nextBytes(bytes);
        return bytes;
    }

    @Test
    void uploadsInPartsAndReadsInRanges() {
        String bucket = server.newBucket("parts");
        byte[] bytes = random((17 << 20) + 12345); // four parts of 5 MiB, the last short
        CheckpointLocation object = CheckpointLocation.ofObject(bucket, "a/b.bin");
        AtomicInteger fills = new AtomicInteger();
        S3Objects.shared().upload(object, bytes.length, (offset, dest) -> {
            fills.incrementAndGet();
            dest.put(bytes, (int) offset, dest.remaining());
        });
        assertEquals(4, fills.get());
        assertArrayEquals(bytes, objectBytes(bucket, "a/b.bin"));
        assertEquals(bytes.length, S3Objects.shared().size(object));

        ByteBuffer back = ByteBuffer.allocate(bytes.length);
        S3Objects.shared().download(object, bytes.length, (offset, length) -> back.slice((int) offset, length));
        assertArrayEquals(bytes, back.array());
        ByteBuffer middle = S3Objects.shared().read(object, 6_000_000, 100);
        byte[] expected = java.util.Arrays.copyOfRange(bytes, 6_000_000, 6_000_100);
        byte[] actual = new byte[100];
        middle.get(actual);
        assertArrayEquals(expected, actual);
        assertEquals(Map.of("a/b.bin", (long) bytes.length), S3Objects.shared().list(CheckpointLocation.ofObject(bucket, "a")));
    }

    /** The memory of an upload is its parts in flight: every part is filled into one of `concurrency` buffers. */
    @Test
    void anUploadFillsAtMostConcurrencyBuffers() {
        String bucket = server.newBucket("bounded");
        long size = 60L << 20; // twelve 5 MiB parts, three workers (the tests' settings)
        java.util.Set<Long> buffers = java.util.concurrent.ConcurrentHashMap.newKeySet();
        AtomicInteger parts = new AtomicInteger();
        S3Objects.shared().upload(CheckpointLocation.ofObject(bucket, "big.bin"), size, (offset, dest) -> {
            try (org.bytedeco.javacpp.BytePointer p = new org.bytedeco.javacpp.BytePointer(dest)) {
                buffers.add(p.address());
            }
            parts.incrementAndGet();
            dest.put(new byte[dest.remaining()]);
        });
        assertEquals(12, parts.get());
        assertEquals(S3Objects.shared().settings().concurrency(), 3);
        assertTrue(buffers.size() <= 3, "parts were filled into " + buffers.size() + " buffers");
        assertEquals(size, S3Objects.shared().size(CheckpointLocation.ofObject(bucket, "big.bin")));
    }

    /** A part that cannot be produced aborts the upload: no object, no pending upload, the old object kept. */
    @Test
    void aFailedUploadLeavesNoObjectAndNoPendingUpload() {
        String bucket = server.newBucket("abort");
        CheckpointLocation object = CheckpointLocation.ofObject(bucket, "x.ckpt");
        byte[] old = putOldObject(object);
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> S3Objects.shared().upload(object, 30L << 20, (offset, dest) -> {
                    if (offset >= 10L << 20) {
                        throw new IllegalStateException("part at " + offset + " failed");
                    }
                    dest.put(new byte[dest.remaining()]);
                }));
        assertTrue(e.getMessage().contains("failed"), e.getMessage());
        assertTrue(noUploadPending(bucket));
        assertArrayEquals(old, objectBytes(bucket, "x.ckpt"));

        CheckpointLocation fresh = CheckpointLocation.ofObject(bucket, "fresh.ckpt");
        assertThrows(IllegalStateException.class, () -> S3Objects.shared().upload(fresh, 12L << 20, (offset, dest) -> {
            throw new IllegalStateException("no bytes");
        }));
        assertFalse(S3Objects.shared().exists(fresh));
        assertTrue(noUploadPending(bucket));
    }

    /** A writer in order: parts sent as they fill (an upload pending meanwhile), the object only on completion. */
    @Test
    void aWriterSendsPartsAsTheyFillAndMakesTheObjectAppearOnCompletion() {
        String bucket = server.newBucket("writer");
        CheckpointLocation object = CheckpointLocation.ofObject(bucket, "run/last.ckpt");
        byte[] old = putOldObject(object);
        byte[] bytes = random((17 << 20) + 12345); // four parts of 5 MiB, the last short
        try (MultipartWriter out = S3Objects.shared().openWriter(object)) {
            int at = 0;
            for (int piece : new int[] {1, 3 << 20, 7 << 20, 30}) { // across part boundaries
                out.write(ByteBuffer.wrap(bytes, at, piece));
                at += piece;
            }
            out.write(ByteBuffer.wrap(bytes, at, bytes.length - at));
            assertEquals(1, server.client().listMultipartUploads(b -> b.bucket(bucket)).uploads().size());
            assertArrayEquals(old, objectBytes(bucket, "run/last.ckpt"));
            out.complete();
        }
        assertArrayEquals(bytes, objectBytes(bucket, "run/last.ckpt"));
        assertTrue(noUploadPending(bucket));
    }

    /** Closed without completion (the writer failed): the parts sent are dropped, the old object kept. */
    @Test
    void aWriterClosedWithoutCompletionLeavesTheOldObjectAndNoUpload() {
        String bucket = server.newBucket("writer-abort");
        CheckpointLocation object = CheckpointLocation.ofObject(bucket, "x.ckpt");
        byte[] old = putOldObject(object);
        try (MultipartWriter out = S3Objects.shared().openWriter(object)) {
            out.write(ByteBuffer.wrap(random(12 << 20))); // two parts sent, a third filling
        }
        assertTrue(noUploadPending(bucket));
        assertArrayEquals(old, objectBytes(bucket, "x.ckpt"));

        CheckpointLocation nowhere = CheckpointLocation.ofObject("no-such-bucket-" + bucket, "x.ckpt");
        try (MultipartWriter out = S3Objects.shared().openWriter(nowhere)) {
            var e = assertThrows(io.fabricckpt.core.CheckpointNotFoundException.class,
                    () -> out.write(ByteBuffer.wrap(random(6 << 20))));
            assertTrue(e.getMessage().startsWith(nowhere + ": no such bucket"), e.getMessage());
        }
    }

    /** What fits one part is one PUT on completion (no upload before it); nothing written is an empty object. */
    @Test
    void aWriterOfOnePartPutsItAndOfNothingAnEmptyObject() {
        String bucket = server.newBucket("writer-small");
        byte[] bytes = random(5 << 20); // exactly one part: sent on completion, as a PUT
        try (MultipartWriter out = S3Objects.shared().openWriter(CheckpointLocation.ofObject(bucket, "one.bin"))) {
            out.write(ByteBuffer.wrap(bytes));
            assertTrue(noUploadPending(bucket));
            out.complete();
        }
        assertArrayEquals(bytes, objectBytes(bucket, "one.bin"));
        try (MultipartWriter out = S3Objects.shared().openWriter(CheckpointLocation.ofObject(bucket, "empty.bin"))) {
            out.complete();
            assertThrows(IllegalStateException.class, () -> out.write(ByteBuffer.wrap(bytes)));
        }
        assertEquals(0, S3Objects.shared().size(CheckpointLocation.ofObject(bucket, "empty.bin")));
    }

    /**
     * A writer's bytes sent but not completed (a Hugging Face shard): nothing appears until the returned
     * upload completes, dropped on close without it; one part, and nothing, included.
     */
    @Test
    void aWriterSentUncompletedAppearsOnlyOnCompletion() {
        String bucket = server.newBucket("writer-uncompleted");
        Map<String, byte[]> written = new HashMap<>();
        written.put("big.bin", random((11 << 20) + 7)); // three parts
        written.put("small.bin", random(1000)); // one short part
        written.put("empty.bin", new byte[0]);
        Map<String, S3Objects.UncompletedUpload> sent = new HashMap<>();
        for (var entry : written.entrySet()) {
            CheckpointLocation object = CheckpointLocation.ofObject(bucket, entry.getKey());
            try (MultipartWriter out = S3Objects.shared().openWriter(object)) {
                out.write(ByteBuffer.wrap(entry.getValue()));
                sent.put(entry.getKey(), out.sendUncompleted());
                assertThrows(IllegalStateException.class, out::complete);
            } // closing the writer leaves the upload to the returned one
            assertFalse(S3Objects.shared().exists(object), entry.getKey());
        }
        assertEquals(2, server.client().listMultipartUploads(b -> b.bucket(bucket)).uploads().size());
        for (var entry : sent.entrySet()) {
            try (var upload = entry.getValue()) {
                upload.complete();
            }
            assertArrayEquals(written.get(entry.getKey()), objectBytes(bucket, entry.getKey()));
        }
        assertTrue(noUploadPending(bucket));

        CheckpointLocation dropped = CheckpointLocation.ofObject(bucket, "dropped.bin");
        S3Objects.UncompletedUpload upload;
        try (MultipartWriter out = S3Objects.shared().openWriter(dropped)) {
            out.write(ByteBuffer.wrap(random(2000)));
            upload = out.sendUncompleted();
        }
        upload.close();
        assertFalse(S3Objects.shared().exists(dropped));
        assertTrue(noUploadPending(bucket));
    }

    /** Parts double every 900, so 10,000 of them (S3's most) hold S3's largest object, 5 TiB, at 5 MiB parts. */
    @Test
    void aWritersPartsGrowToHoldS3sLargestObject() {
        try (MultipartWriter out = S3Objects.shared().openWriter(CheckpointLocation.ofObject("any", "key"))) {
            assertEquals(5L << 20, out.partSize(1));
            assertEquals(5L << 20, out.partSize(900));
            assertEquals(10L << 20, out.partSize(901));
            long total = 0;
            for (int n = 1; n <= S3Settings.MAX_PARTS; n++) {
                assertTrue(out.partSize(n) <= 5L << 30);
                total += out.partSize(n);
            }
            assertTrue(total >= 5L << 40, "10,000 parts hold " + total + " bytes");
        }
    }

    /** An https store with a private CA (as many S3-compatible stores have) is trusted through AWS_CA_BUNDLE. */
    @Test
    void anHttpsStoreIsTrustedThroughItsCaBundle() {
        String bucket = server.newBucket("tls");
        byte[] bytes = random((11 << 20) + 7); // three parts
        CheckpointLocation object = CheckpointLocation.ofObject(bucket, "tls.bin");
        Map<String, String> env = new HashMap<>(S3Server.environment());
        env.put("AWS_ENDPOINT_URL", server.secureEndpoint().toString());
        env.put("AWS_CA_BUNDLE", server.caBundle().toString());
        try (S3Objects tls = new S3Objects(S3Settings.from(env))) {
            tls.upload(object, bytes.length, (offset, dest) -> dest.put(bytes, (int) offset, dest.remaining()));
            ByteBuffer back = ByteBuffer.allocate(bytes.length);
            tls.download(object, bytes.length, (offset, length) -> back.slice((int) offset, length));
            assertArrayEquals(bytes, back.array());
        }
        // The same object, read over plain http: it is the server's, not a client-side artefact.
        assertArrayEquals(bytes, objectBytes(bucket, "tls.bin"));
    }

    /** Without the bundle the JVM's roots do not trust the server: an error naming the URL, endpoint and remedy. */
    @Test
    void anUntrustedHttpsStoreIsRefusedNamingTheRemedy() {
        String bucket = server.newBucket("untrusted");
        try (S3Objects untrusted = new S3Objects(settings(server.secureEndpoint().toString()))) {
            CheckpointLocation object = CheckpointLocation.ofObject(bucket, "x.ckpt");
            CheckpointStorageException e = assertThrows(CheckpointStorageException.class, () -> untrusted.size(object));
            assertTrue(e.getMessage().contains("s3://" + bucket + "/x.ckpt"), e.getMessage());
            assertTrue(e.getMessage().contains("cannot reach " + server.secureEndpoint()), e.getMessage());
            assertTrue(e.getMessage().contains("AWS_CA_BUNDLE"), e.getMessage());
        }
    }

    @Test
    void aCaBundleThatIsMissingOrNotPemIsRefusedNamingTheFile(@TempDir Path dir) throws IOException {
        Path notPem = Files.writeString(dir.resolve("bundle.pem"), "not a certificate\n");
        Path missing = dir.resolve("missing.pem");
        for (Path bundle : new Path[] {notPem, missing}) {
            Map<String, String> env = new HashMap<>(S3Server.environment());
            env.put("AWS_ENDPOINT_URL", server.secureEndpoint().toString());
            env.put("AWS_CA_BUNDLE", bundle.toString());
            CheckpointStorageException e = assertThrows(CheckpointStorageException.class,
                    () -> new S3Objects(S3Settings.from(env)).close());
            assertTrue(e.getMessage().startsWith("AWS_CA_BUNDLE=" + bundle + ": "), e.getMessage());
        }
    }

    @Test
    void wrongCredentialsAreDeniedNamingTheUrl() {
        String bucket = server.newBucket("denied");
        try (S3Objects wrong = new S3Objects(settings(server.endpoint().toString()),
                StaticCredentialsProvider.create(AwsBasicCredentials.create(S3Server.ACCESS_KEY, "wrong-secret")))) {
            CheckpointLocation object = CheckpointLocation.ofObject(bucket, "x.ckpt");
            CheckpointStorageException e = assertThrows(CheckpointStorageException.class, () -> wrong.size(object));
            assertTrue(e.getMessage().contains("s3://" + bucket + "/x.ckpt"), e.getMessage());
            assertTrue(e.getMessage().contains("access denied"), e.getMessage());
            CheckpointStorageException put = assertThrows(CheckpointStorageException.class,
                    () -> wrong.upload(object, 10, (offset, dest) -> dest.put(new byte[10])));
            assertTrue(put.getMessage().contains("access denied"), put.getMessage());
        }
    }

    /** Nothing listens: bounded retries, then an error naming the URL and the endpoint. */
    @Test
    void aBrokenConnectionIsAStorageErrorNamingTheUrlAndEndpoint() throws IOException {
        int port;
        try (ServerSocket socket = new ServerSocket(0)) {
            port = socket.getLocalPort();
        }
        String endpoint = "http://127.0.0.1:" + port;
        try (S3Objects unreachable = new S3Objects(settings(endpoint))) {
            CheckpointLocation object = CheckpointLocation.ofObject("bucket", "x.ckpt");
            long start = System.nanoTime();
            CheckpointStorageException e = assertThrows(CheckpointStorageException.class, () -> unreachable.size(object));
            assertTrue(e.getMessage().contains("s3://bucket/x.ckpt"), e.getMessage());
            assertTrue(e.getMessage().contains("cannot reach " + endpoint), e.getMessage());
            assertTrue(System.nanoTime() - start < 60_000_000_000L, "retries are bounded");
        }
    }

    @Test
    void settingsComeFromTheEnvironment() {
        S3Settings s = S3Settings.from(Map.of("AWS_REGION", "eu-west-1", "AWS_ENDPOINT_URL", "http://10.0.0.5:9000",
                "FABRICCKPT_S3_PART_SIZE", "64M", "FABRICCKPT_S3_CONCURRENCY", "4"));
        assertEquals("eu-west-1", s.region());
        assertTrue(s.pathStyle(), "an IP endpoint cannot take a bucket in its host name");
        assertEquals(64L << 20, s.partSize());
        assertEquals(4, s.concurrency());
        assertFalse(S3Settings.from(Map.of("AWS_ENDPOINT_URL", "https://s3.example.com")).pathStyle());
        assertTrue(S3Settings.from(Map.of("AWS_ENDPOINT_URL", "https://s3.example.com", "AWS_S3_FORCE_PATH_STYLE",
                "true")).pathStyle());
        assertEquals(16L << 20, S3Settings.from(Map.of()).partSize());
        assertEquals(4, S3Settings.from(Map.of()).concurrency());
        assertEquals(null, S3Settings.from(Map.of()).caBundle());
        assertEquals(Path.of("/etc/ssl/store-ca.pem"),
                S3Settings.from(Map.of("AWS_CA_BUNDLE", "/etc/ssl/store-ca.pem")).caBundle());
        assertEquals((1L << 40) / 10_000 + 1, S3Settings.from(Map.of()).partSizeFor(1L << 40));
        assertThrows(IllegalArgumentException.class, () -> S3Settings.from(Map.of("FABRICCKPT_S3_PART_SIZE", "1M")));
        // Ranged GETs: 4 ranges a worker, between the part size and 64 MiB (or the part size if larger).
        S3Settings defaults = S3Settings.from(Map.of());
        assertEquals(64L << 20, defaults.rangeSizeFor(1L << 30));
        assertEquals(64L << 20, defaults.rangeSizeFor(100L << 30));
        assertEquals(32L << 20, defaults.rangeSizeFor(512L << 20));
        assertEquals(16L << 20, defaults.rangeSizeFor(100L << 20));
        assertEquals(16L << 20, defaults.rangeSizeFor(1));
        assertEquals(128L << 20, S3Settings.from(Map.of("FABRICCKPT_S3_PART_SIZE", "128M")).rangeSizeFor(1L << 30));
    }
}
