package io.fabricckpt.internal.io.s3;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.S3Server;
import io.fabricckpt.core.CheckpointLocation;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** The read-ahead of staged objects' holes: windows for readers going forward, exact reads for the others. */
class ObjectReadaheadTest {
    private final S3Server server = S3Server.get();

    @Test
    void readsInOrderShareWindowsAndReadsOutOfOrderFetchOnlyWhatTheyRead() {
        byte[] bytes = randomBytes(48 << 20, 7);
        CheckpointLocation object = uploaded("readahead", bytes);
        S3Objects objects = S3Objects.shared();
        int piece = 640 << 10, gap = 200; // a record's bytes, then the next record's headers (staged, not read here)
        List<Integer> starts = new ArrayList<>();
        for (int at = 0; at + piece <= bytes.length; at += piece + gap) {
            starts.add(at);
        }

        // Forward (torch.save convert, verify): windows, a few GETs for all of them.
        ObjectReadahead forward = new ObjectReadahead(objects);
        long gets = objects.getRequests();
        for (int at : starts) {
            check(forward, object, bytes, at, piece);
        }
        long forwardGets = objects.getRequests() - gets;
        int concurrency = objects.settings().concurrency();
        long window = objects.settings().partSize() * concurrency / 2;
        assertTrue(forwardGets <= (bytes.length / window + 2) * concurrency && forwardGets < starts.size() / 2,
                forwardGets + " GETs for " + starts.size() + " reads in order");
        assertTrue(forward.fetchedBytes() < bytes.length + (32L << 20), forward.fetchedBytes() + " bytes fetched");

        // Out of order (a safetensors convert writes tensors in name order): each read fetches itself only,
        // where filling a window at each would fetch many times the object.
        Collections.shuffle(starts, new Random(3));
        ObjectReadahead shuffled = new ObjectReadahead(objects);
        for (int at : starts) {
            check(shuffled, object, bytes, at, piece);
        }
        long read = (long) starts.size() * piece;
        assertTrue(shuffled.fetchedBytes() < read + (32L << 20),
                shuffled.fetchedBytes() + " bytes fetched for " + read + " read out of order");
    }

    @Test
    void aRunOfReadsStartsWithASmallFillSoHeadersReadAheadOfTheirRecordFetchNoWindow() {
        byte[] bytes = randomBytes(48 << 20, 11);
        CheckpointLocation object = uploaded("readahead-ramp", bytes);
        S3Objects objects = S3Objects.shared();
        // As a sharded load reads each item stream (a torch.save zip of one tensor): the records after the
        // tensor's bytes first (their headers, two reads forward), then the tensor's bytes, 256 KiB at a time.
        int item = 12 << 20, tail = 1000;
        ObjectReadahead readahead = new ObjectReadahead(objects);
        for (int start = 0; start < bytes.length; start += item) {
            int end = start + item;
            check(readahead, object, bytes, end - tail, 45);
            check(readahead, object, bytes, end - tail + 100, 60);
            for (int at = start; at < end - tail; at += 256 << 10) {
                check(readahead, object, bytes, at, Math.min(256 << 10, end - tail - at));
            }
        }
        // A full window (32 MiB here) filled at each item's headers, then evicted unread, fetched 3 times the object.
        assertTrue(readahead.fetchedBytes() < bytes.length + (8L << 20), readahead.fetchedBytes() + " bytes fetched for "
                + bytes.length);
    }

    private static byte[] randomBytes(int size, long seed) {
        byte[] bytes = new byte[size];
        new Random(seed).nextBytes(bytes);
        return bytes;
    }

    /** {@code bytes} as an object of a new bucket named after {@code bucket}. */
    private CheckpointLocation uploaded(String bucket, byte[] bytes) {
        CheckpointLocation object = CheckpointLocation.ofObject(server.newBucket(bucket), "bytes.bin");
        S3Objects.shared().upload(object, bytes.length, (offset, dest) -> dest.put(bytes, (int) offset, dest.remaining()));
        return object;
    }

    private static void check(ObjectReadahead readahead, CheckpointLocation object, byte[] bytes, int at, int n) {
        ByteBuffer dest = ByteBuffer.allocate(n);
        readahead.read(object, bytes.length, at, dest);
        byte[] expected = new byte[n];
        System.arraycopy(bytes, at, expected, 0, n);
        assertArrayEquals(expected, dest.array(), "bytes at " + at);
    }
}
