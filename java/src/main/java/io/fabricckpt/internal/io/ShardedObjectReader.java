package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.CheckpointNotFoundException;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.io.s3.StagedObject;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.Supplier;

/**
 * A torch.distributed.checkpoint directory in object storage ({@code s3://bucket/prefix/}), read as the
 * local one is ({@link DcpDirectoryIO}) from a staging folder ({@link StagedObject#forShardedLoad}) that
 * holds its {@code .metadata} and {@code meta.pt}, and of the chunks a read needs (as the metadata says:
 * those that overlap this rank's shards) the small ones and the structure of the others, whose tensor
 * bytes are read from the store into memory as they are read (through the read-ahead's windows, parallel
 * ranged GETs), so the disk never holds what this rank loads. The folder is removed on close.
 */
final class ShardedObjectReader implements CheckpointReader {
    private final CheckpointLocation location;
    private final StagedObject staged;
    private final CheckpointReader local;
    private final Set<String> fetched = new HashSet<>(); // "file\toffset\tlength" already staged

    private ShardedObjectReader(CheckpointLocation location, StagedObject staged, CheckpointReader local) {
        this.location = location;
        this.staged = staged;
        this.local = local;
    }

    static ShardedObjectReader open(CheckpointLocation location, ReadOptions options, ProgressListener listener) {
        StagedObject staged = StagedObject.forShardedLoad(location, LibraryStaging.INSTANCE);
        if (staged == null) {
            throw new CheckpointNotFoundException(location + "/: no sharded checkpoint (no .metadata)", null);
        }
        try {
            // Read, never mapped: a mapping would show the holes, the bytes still in the store, as zeros.
            ReadOptions read = new ReadOptions(false, options.verifyCrc(), options.threads(), options.weightsOnly());
            CheckpointReader local = CheckpointIOs.DCP_DIRECTORY.open(CheckpointLocation.of(staged.path()), read,
                    listener);
            return new ShardedObjectReader(location, staged, local);
        } catch (RuntimeException e) {
            staged.close();
            throw staged.named(e);
        }
    }

    /**
     * Makes ready what reading {@code key} with {@code plan} reads ({@code plan} null: everything): the
     * item streams of the chunks it reads not named before ({@link StagedObject#fetchToRead}).
     */
    private void fetchFor(String key, NativeShardPlan plan) {
        String ranges;
        try {
            ranges = NativeCalls.string(FabricNative.shardedRanges(NativeCalls.path(staged.path()),
                    NativeCalls.utf8(key), plan));
        } catch (RuntimeException e) {
            throw staged.named(NativeErrors.translate(e, location.toString()));
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
        staged.fetchToRead(byFile);
    }

    /** What the local reader's {@code read} gives, a hole read's failure as itself, errors naming the URL. */
    private <T> T reading(Supplier<T> read) {
        try {
            return LibraryStaging.call(read);
        } catch (RuntimeException e) {
            throw staged.named(e);
        }
    }

    @Override
    public NativeValue readAll() {
        fetchFor("", null);
        return reading(local::readAll);
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
        return reading(() -> local.read(key, plan));
    }

    @Override
    public NativeValue remainder(Collection<String> restored) {
        return reading(() -> local.remainder(restored));
    }

    @Override
    public void close() {
        try {
            local.close();
        } finally {
            staged.close();
        }
    }
}
