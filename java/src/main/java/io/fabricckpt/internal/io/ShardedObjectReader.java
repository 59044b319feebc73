package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.CheckpointStorageException;
import io.fabricckpt.core.CorruptCheckpointException;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.io.s3.S3Objects;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Stream;

/**
 * A torch.distributed.checkpoint directory in object storage ({@code s3://bucket/prefix/}), read as the
 * local one is ({@link DcpDirectoryIO}) from a staging folder that holds only what is read: its
 * {@code .metadata} and {@code meta.pt} whole, and each shard file as a sparse file of its size into
 * which only the byte ranges a read needs are fetched (parallel ranged GETs), as the metadata says:
 * the chunks that overlap this rank's shards. The folder is removed on close.
 */
final class ShardedObjectReader implements CheckpointReader {
    private final S3Objects objects;
    private final CheckpointLocation location;
    private final Path staging;
    private final CheckpointReader local;
    private final Set<String> fetched = new HashSet<>(); // "file\\toffset\\tlength" already in place

    private ShardedObjectReader(S3Objects objects, CheckpointLocation location, Path staging, CheckpointReader local) {
        this.objects = objects;
        this.location = location;
        this.staging = staging;
        this.local = local;
    }

    static ShardedObjectReader open(S3Objects objects, CheckpointLocation location, ReadOptions options,
            ProgressListener listener) {
        Path staging;
        try {
            staging = Files.createTempDirectory("fabricckpt-s3-");
        } catch (IOException e) {
            throw new CheckpointStorageException(location + ": cannot create a staging folder: " + e.getMessage(), e);
        }
        try {
            String prefix = location.key() + "/";
            for (Map.Entry<String, Long> object : objects.list(location).entrySet()) {
                String name = object.getKey().substring(prefix.length());
                if (name.isEmpty() || name.contains("/")) {
                    continue; // only the directory's own files, as on disk
                }
                Path file = staging.resolve(name);
                long size = object.getValue();
                try (RandomAccessFile sparse = new RandomAccessFile(file.toFile(), "rw")) {
                    sparse.setLength(size);
                }
                if (name.equals(ObjectStorageIO.DCP_METADATA) || name.equals(DcpDirectoryIO.META)) {
                    objects.downloadInto(location.resolve(name), file, 0, size);
                }
            }
            CheckpointReader local = CheckpointIOs.DCP_DIRECTORY.open(CheckpointLocation.of(staging), options, listener);
            return new ShardedObjectReader(objects, location, staging, local);
        } catch (IOException e) {
            delete(staging);
            throw new CheckpointStorageException(location + ": staging failed: " + e.getMessage(), e);
        } catch (RuntimeException e) {
            delete(staging);
            throw e;
        }
    }

    /**
     * Brings in what reading {@code key} with {@code plan} reads ({@code plan} null: everything): every
     * chunk's bytes not fetched before, each shard file's ranges at once (touching chunks as one range),
     * so a model of many small tensors costs a few round trips per file, not one per tensor.
     */
    private void fetchFor(String key, NativeShardPlan plan) {
        String ranges;
        try {
            ranges = NativeCalls.string(FabricNative.shardedRanges(NativeCalls.path(staging), NativeCalls.utf8(key),
                    plan));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e, location.toString());
        }
        Map<String, List<long[]>> byFile = new TreeMap<>();
        for (String line : ranges.split("\n")) {
            if (line.isEmpty() || !fetched.add(line)) {
                continue;
            }
            String[] parts = line.split("\t");
            byFile.computeIfAbsent(parts[0], name -> new ArrayList<>())
                    .add(new long[] {Long.parseLong(parts[1]), Long.parseLong(parts[2])});
        }
        for (var entry : byFile.entrySet()) {
            String name = entry.getKey();
            Path file = staging.resolve(name).normalize();
            if (!file.startsWith(staging) || !Files.isRegularFile(file)) {
                throw new CorruptCheckpointException(location + "/.metadata: names the shard file '" + name
                        + "', which is not an object under " + location + "/", null);
            }
            try {
                // A range past the object's end is left for the reader to refuse (it names the file and range).
                long size = Files.size(file);
                List<long[]> inFile = entry.getValue().stream().filter(r -> r[0] < size)
                        .map(r -> new long[] {r[0], Math.min(r[1], size - r[0])}).toList();
                // Only touching chunks are merged (DCP writes a file's items back to back): no byte of
                // another rank's chunks between them is fetched.
                objects.downloadInto(location.resolve(name), file, inFile, 0);
            } catch (IOException e) {
                throw new CheckpointStorageException(location.resolve(name) + ": staging its chunks failed: "
                        + e.getMessage(), e);
            }
        }
    }

    @Override
    public NativeValue readAll() {
        fetchFor("", null);
        return local.readAll();
    }

    @Override
    public boolean isStateDictionary() {
        return local.isStateDictionary();
    }

    @Override
    public boolean has(String key) {
        return local.has(key);
    }

    @Override
    public NativeValue read(String key, NativeShardPlan plan) {
        fetchFor(key, plan);
        return local.read(key, plan);
    }

    @Override
    public NativeValue remainder(Collection<String> restored) {
        return local.remainder(restored);
    }

    @Override
    public void close() {
        try {
            local.close();
        } finally {
            delete(staging);
        }
    }

    private static void delete(Path dir) {
        try (Stream<Path> files = Files.walk(dir)) {
            files.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException | UncheckedIOException ignored) {
            // a staging folder left in the temporary directory is harmless
        }
    }
}
