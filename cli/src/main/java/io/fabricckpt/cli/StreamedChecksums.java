package io.fabricckpt.cli;

import io.fabricckpt.cli.format.CheckedRange;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.internal.io.s3.S3Objects;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32;

/**
 * CRC-32s of byte ranges of objects in storage, computed as the bytes stream past, never written to
 * disk: a verify of a 10 GB object needs no 10 GB of temporary disk. Each object's ranges (near ones
 * as one span) are read window by window into one buffer of concurrency x part size bytes, the
 * memory a save holds in parts in flight, with that many ranged GETs at once
 * ({@link S3Objects#download}).
 */
final class StreamedChecksums {
    /** Ranges closer than this are fetched as one span (a zip's local headers lie between its records). */
    private static final long GAP = 1L << 20;

    private long streamedBytes;

    /** Bytes fetched so far. */
    long streamedBytes() {
        return streamedBytes;
    }

    /** The CRC-32 of each range, whose bytes are those of the object it maps to. */
    Map<CheckedRange, Integer> compute(S3Objects objects, Map<CheckedRange, CheckpointLocation> ranges) {
        Map<CheckpointLocation, List<CheckedRange>> byObject = new LinkedHashMap<>();
        ranges.forEach((range, object) -> byObject.computeIfAbsent(object, k -> new ArrayList<>()).add(range));
        long window = Math.min(objects.settings().partSize() * objects.settings().concurrency(), 1L << 30);
        long total = ranges.keySet().stream().mapToLong(CheckedRange::length).sum();
        ByteBuffer buffer = ByteBuffer.allocateDirect((int) Math.max(1, Math.min(window, total)));
        Map<CheckedRange, Integer> out = new HashMap<>();
        byObject.forEach((object, list) -> stream(objects, object, list, buffer, out));
        return out;
    }

    private void stream(S3Objects objects, CheckpointLocation object, List<CheckedRange> list, ByteBuffer buffer,
            Map<CheckedRange, Integer> out) {
        List<CheckedRange> sorted = new ArrayList<>(list);
        sorted.sort(Comparator.comparingLong(CheckedRange::offset));
        Map<CheckedRange, CRC32> crcs = new HashMap<>();
        int first = 0; // the first range not yet done
        for (int i = 0; i < sorted.size(); ) {
            // One span: ranges that start within GAP of the span so far.
            long start = sorted.get(i).offset();
            long end = start + sorted.get(i).length();
            int j = i + 1;
            while (j < sorted.size() && sorted.get(j).offset() <= end + GAP) {
                end = Math.max(end, sorted.get(j).offset() + sorted.get(j).length());
                j++;
            }
            for (long at = start; at < end; ) {
                final long from = at;
                int n = (int) Math.min(buffer.capacity(), end - at);
                objects.download(object, from, n, (offset, length) -> buffer.slice((int) (offset - from), length));
                streamedBytes += n;
                for (int k = first; k < j && sorted.get(k).offset() < from + n; k++) {
                    CheckedRange r = sorted.get(k);
                    long a = Math.max(r.offset(), from);
                    long b = Math.min(r.offset() + r.length(), from + n);
                    if (a < b) {
                        crcs.computeIfAbsent(r, x -> new CRC32()).update(buffer.slice((int) (a - from), (int) (b - a)));
                    }
                }
                at += n;
                while (first < j && sorted.get(first).offset() + sorted.get(first).length() <= at) {
                    CheckedRange done = sorted.get(first++);
                    out.put(done, (int) crcs.computeIfAbsent(done, x -> new CRC32()).getValue());
                    crcs.remove(done);
                }
            }
            // Ranges of this span that end before ranges before them (overlaps) are done too.
            for (int k = first; k < j; k++) {
                CheckedRange r = sorted.get(k);
                out.put(r, (int) crcs.computeIfAbsent(r, x -> new CRC32()).getValue());
            }
            first = j;
            i = j;
        }
    }
}
