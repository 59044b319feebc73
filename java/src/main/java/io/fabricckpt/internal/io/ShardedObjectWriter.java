package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.DistributedException;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeFileLayout;
import io.fabricckpt.internal.NativeProcessGroup;
import io.fabricckpt.internal.NativeRankFile;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeShardedMetadata;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.io.s3.S3Objects;
import io.fabricckpt.internal.io.s3.S3Objects.UncompletedUpload;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.bytedeco.javacpp.BytePointer;

/**
 * A sharded save to object storage ({@code s3://bucket/prefix/}), called on every rank together: the
 * objects are the files of the local directory ({@link DcpDirectoryIO}), byte for byte. Object
 * storage has no directory to swap in whole, so the steps are ordered to keep the local promise as
 * far as a store of single objects allows:
 * <ol>
 *   <li>rank 0 checks that the prefix holds nothing but checkpoint objects (the save replaces them)
 *       and plans meta.pt;
 *   <li>every rank sends its {@code __<rank>_0.distcp}, planned natively and filled part by part from
 *       the tensors' memory, without completing the upload: nothing visible has changed yet;
 *   <li>rank 0 builds {@code .metadata} from every rank's report, and every rank learns whether all
 *       went well; if not, every rank drops its upload and the previous checkpoint is untouched;
 *   <li>rank 0 deletes the old {@code .metadata}, every rank completes its upload (one request
 *       each), then rank 0 writes meta.pt, {@code .metadata} last, and deletes the shard files of an
 *       earlier save of more ranks.
 * </ol>
 * Only a failure inside step 4 loses the previous checkpoint, and then the prefix is no checkpoint at
 * all (no {@code .metadata}), never one whose index disagrees with its files. Any rank's failure
 * fails every rank (a {@link DistributedException} on those that did not fail themselves).
 */
final class ShardedObjectWriter {
    private final S3Objects objects;
    private final CheckpointLocation dir;
    private final NativeProcessGroup group; // null: one process
    private final int rank;
    private final int world;

    private ShardedObjectWriter(S3Objects objects, CheckpointLocation dir, NativeProcessGroup group) {
        this.objects = objects;
        this.dir = dir;
        this.group = group;
        this.rank = group == null ? 0 : group.rank();
        this.world = group == null ? 1 : group.worldSize();
    }

    /** {@code safetensors}: DCP's SAFETENSORS serialization of the shard files, as {@link DcpDirectoryIO} writes it. */
    static void write(S3Objects objects, CheckpointLocation dir, NativeValue tensors, NativeValue meta,
            NativeShardPlan plan, NativeProcessGroup group, WriteOptions options, boolean safetensors) {
        new ShardedObjectWriter(objects, dir, group).write(tensors, meta, plan, options, safetensors);
    }

    private void write(NativeValue tensors, NativeValue meta, NativeShardPlan plan, WriteOptions options,
            boolean safetensors) {
        NativeFileLayout metaLayout = null;
        UncompletedUpload shardFile = null;
        try {
            // 1. rank 0 prepares
            RuntimeException preparation = null;
            if (rank == 0) {
                try {
                    checkReplaceable();
                    if (meta != null) {
                        metaLayout = new NativeFileLayout(meta, false, NativeCalls.utf8("meta"),
                                options.unsafeGlobalsAllowed(), NativeCalls.utf8(dir.resolve(DcpDirectoryIO.META)
                                        .toString()));
                    }
                } catch (RuntimeException e) {
                    preparation = NativeErrors.translate(e);
                }
            }
            agree(preparation, null, "preparation", "could not prepare the checkpoint");

            // 2. every rank sends its shard file
            RuntimeException own = null;
            byte[] report = null;
            try (NativeRankFile file = new NativeRankFile(tensors, plan, rank, safetensors, options.unsafeGlobalsAllowed(),
                    NativeCalls.utf8(shardFile(rank).toString()))) {
                shardFile = objects.uploadUncompleted(shardFile(rank), file.size(), (offset, dest) -> {
                    try (BytePointer memory = new BytePointer(dest)) {
                        file.fill(offset, memory, dest.remaining());
                    }
                });
                report = NativeCalls.bytes(file.report());
            } catch (RuntimeException e) {
                own = NativeErrors.translate(e, shardFile(rank) + ": sharded save failed");
            }

            // 3. rank 0 builds .metadata from the reports; everyone learns whether all went well
            byte[] metadata = null;
            RuntimeException decision = null;
            List<byte[]> reports = gather(own == null ? RankZeroOutcome.ok(report) : RankZeroOutcome.failed(own));
            if (rank == 0) {
                try {
                    metadata = buildMetadata(reports, own);
                } catch (RuntimeException e) {
                    decision = e;
                }
            }
            agree(decision, own, "shard upload", "failed the save");

            // 4. the new objects replace the old ones, .metadata last
            RuntimeException removal = null;
            if (rank == 0) {
                try {
                    objects.delete(dir.resolve(ObjectStorageIO.DCP_METADATA));
                } catch (RuntimeException e) {
                    removal = e;
                }
            }
            // no rank's file changes while the old .metadata still indexes it
            agree(removal, null, "completion", "could not remove the old .metadata");
            RuntimeException completion = null;
            try {
                shardFile.complete();
            } catch (RuntimeException e) {
                completion = e;
            }
            boolean allCompleted = group == null ? completion == null : group.allAgree(completion == null);
            RuntimeException finish = completion;
            if (rank == 0 && allCompleted) {
                try {
                    if (metaLayout != null) {
                        NativeFileLayout layout = metaLayout;
                        objects.upload(dir.resolve(DcpDirectoryIO.META), layout.size(), (offset, dest) -> {
                            try (BytePointer memory = new BytePointer(dest)) {
                                layout.fill(offset, memory, dest.remaining());
                            }
                        });
                    }
                    byte[] bytes = metadata;
                    objects.upload(dir.resolve(ObjectStorageIO.DCP_METADATA), bytes.length,
                            (offset, dest) -> dest.put(bytes, (int) offset, dest.remaining()));
                    deleteStaleShardFiles();
                } catch (RuntimeException e) {
                    finish = NativeErrors.translate(e);
                }
            } else if (rank == 0 && finish == null) {
                finish = new DistributedException(dir + ": another rank could not complete its shard file's upload; the"
                        + " prefix holds no checkpoint now (no .metadata)", rank, "sharded save: completion", null);
            }
            agree(rank == 0 ? finish : null, finish, "completion", "could not complete the checkpoint");
        } finally {
            if (shardFile != null) {
                closeQuietly(shardFile);
            }
            if (metaLayout != null) {
                metaLayout.close();
            }
        }
    }

    private CheckpointLocation shardFile(int r) {
        return dir.resolve(NativeCalls.string(FabricNative.shardedRankFileName(r)));
    }

    /** A save replaces the prefix's checkpoint objects; anything else there (the user's objects) is refused, not lost. */
    private void checkReplaceable() {
        String prefix = dir.key() + "/";
        List<String> foreign = new ArrayList<>();
        for (String key : objects.list(dir).keySet()) {
            String name = key.substring(prefix.length());
            if (!FabricNative.isShardedCheckpointEntry(NativeCalls.utf8(name))) {
                foreign.add(name);
            }
        }
        if (!foreign.isEmpty()) {
            String names = String.join(", ", foreign.subList(0, Math.min(5, foreign.size())))
                    + (foreign.size() > 5 ? " and " + (foreign.size() - 5) + " more" : "");
            throw new CheckpointException(dir + ": holds objects that are not part of a sharded checkpoint (" + names
                    + "); a sharded save replaces the whole prefix, so it refuses to: save to another prefix or move"
                    + " them");
        }
    }

    /** Shard files this save did not write (of an earlier save by more ranks): not part of the new checkpoint. */
    private void deleteStaleShardFiles() {
        Set<String> written = new HashSet<>();
        for (int r = 0; r < world; r++) {
            written.add(shardFile(r).fileName());
        }
        String prefix = dir.key() + "/";
        for (String key : objects.list(dir).keySet()) {
            String name = key.substring(prefix.length());
            if (name.endsWith(".distcp") && FabricNative.isShardedCheckpointEntry(NativeCalls.utf8(name))
                    && !written.contains(name)) {
                objects.delete(dir.resolve(name));
            }
        }
    }

    /** Rank 0: .metadata's bytes, or the failure of the first rank that reported one. */
    private byte[] buildMetadata(List<byte[]> reports, RuntimeException own) {
        try (NativeShardedMetadata metadata = new NativeShardedMetadata()) {
            for (int r = 0; r < reports.size(); r++) {
                byte[] report = reports.get(r);
                if (!RankZeroOutcome.isOk(report)) {
                    if (r == rank && own != null) {
                        throw own;
                    }
                    String why = new String(RankZeroOutcome.body(report), StandardCharsets.UTF_8);
                    throw new DistributedException(dir + ": rank " + r + " could not write its shard file: " + why, rank,
                            "sharded save: shard write on rank " + r, null);
                }
                byte[] body = RankZeroOutcome.body(report);
                metadata.addReport(body, body.length);
            }
            try {
                return NativeCalls.bytes(metadata.bytes(NativeCalls.utf8(dir.toString())));
            } catch (RuntimeException e) {
                throw NativeErrors.translate(e, dir + ": sharded save failed");
            }
        }
    }

    /** Every rank learns rank 0's outcome of a step and fails with it ({@link RankZeroOutcome#share}). */
    private void agree(RuntimeException rankZeroFailure, RuntimeException own, String step, String what) {
        RankZeroOutcome.share(group, dir.toString(), rankZeroFailure, own, "sharded save: " + step, what);
    }

    private List<byte[]> gather(byte[] mine) {
        if (group == null || world == 1) {
            return List.of(mine);
        }
        byte[] framed = NativeCalls.bytes(group.gatherBytes(mine, mine.length, 0));
        List<byte[]> out = new ArrayList<>();
        ByteBuffer in = ByteBuffer.wrap(framed).order(ByteOrder.LITTLE_ENDIAN);
        while (in.hasRemaining()) {
            byte[] one = new byte[Math.toIntExact(in.getLong())];
            in.get(one);
            out.add(one);
        }
        return out;
    }

    private static void closeQuietly(UncompletedUpload staged) {
        try {
            staged.close();
        } catch (RuntimeException ignored) {
            // the store drops unfinished multipart uploads by its lifecycle rules; the save's own error says more
        }
    }
}
