package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.CorruptCheckpointException;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeProcessGroup;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeShardedReader;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.io.s3.S3Objects;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collection;
import java.util.HashSet;
import java.util.Set;
import org.bytedeco.pytorch.Module;

/**
 * A {@code torch.distributed.checkpoint} directory as Lightning's FSDP strategies write it: every rank's
 * {@code __<rank>_0.distcp}, the {@code .metadata} that indexes them, and Lightning's {@code meta.pt}
 * holding what is not a model or optimizer. This IO owns all three.
 */
public final class DcpDirectoryIO implements CheckpointIO {
    static final String META = "meta.pt";

    DcpDirectoryIO() {}

    /**
     * The sharded save, called on every rank together: each writes its shards of {@code tensors}; rank 0
     * also {@code meta} as meta.pt and, once every rank succeeded, {@code .metadata}; the directory is
     * swapped in whole (a failure anywhere leaves the previous checkpoint). {@code safetensors}: each
     * rank's tensors as one safetensors blob ({@code FileSystemWriter(serialization_format=SAFETENSORS)}).
     */
    public void writeSharded(CheckpointLocation location, NativeValue tensors, NativeValue meta, NativeShardPlan plan,
            NativeProcessGroup group, WriteOptions options, boolean safetensors) {
        if (!location.isLocal()) {
            ShardedObjectWriter.write(S3Objects.shared(), location, tensors, meta, plan, group, options, safetensors);
            return;
        }
        try {
            FabricNative.saveSharded(NativeCalls.path(location), tensors, meta, plan, group, options.fsync(),
                    options.unsafeGlobalsAllowed(), safetensors);
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e, location + ": sharded save failed");
        }
    }

    @Override
    public CheckpointReader open(CheckpointLocation location, ReadOptions options, ProgressListener listener) {
        NativeShardedReader reader;
        try {
            reader = new NativeShardedReader(NativeCalls.path(location));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
        try {
            return new DirectoryReader(location, reader, readMeta(location));
        } catch (RuntimeException e) {
            reader.close();
            throw e;
        }
    }

    @Override
    public String verify(CheckpointLocation location) {
        return CheckpointIOs.TORCH_SAVE_FILE.verify(location); // the native verifier takes both kinds
    }

    /** Lightning's meta.pt (the state that is not a model or optimizer); empty when absent. */
    private static NativeValue readMeta(CheckpointLocation dir) {
        Path meta = dir.path().resolve(META);
        if (!Files.isRegularFile(meta)) {
            return NativeValue.newDict(false);
        }
        NativeValue value = CheckpointIOs.TORCH_SAVE_FILE.read(CheckpointLocation.of(meta), ReadOptions.DEFAULT, null);
        if (value.kind() != NativeValue.DICT) {
            throw new CorruptCheckpointException(meta + ": holds a " + value.kind() + " node, not a dictionary", null);
        }
        return value;
    }

    /** Models and optimizers come from the shard files (each rank reading its regions), the rest from meta.pt. */
    private static final class DirectoryReader implements CheckpointReader {
        private final CheckpointLocation location;
        private final NativeShardedReader shards;
        private final NativeValue meta;
        private final Set<String> shardedKeys = new HashSet<>();

        DirectoryReader(CheckpointLocation location, NativeShardedReader shards, NativeValue meta) {
            this.location = location;
            this.shards = shards;
            this.meta = meta;
            for (int i = 0, n = shards.topLevelKeyCount(); i < n; i++) {
                shardedKeys.add(NativeCalls.string(shards.topLevelKey(i)));
            }
        }

        /** Every tensor whole (what {@code dcp_to_torch_save} gives), then meta.pt's entries, as Lightning consolidates. */
        @Override
        public NativeValue readAll() {
            NativeValue all;
            try {
                all = shards.readAll();
            } catch (RuntimeException e) {
                throw NativeErrors.translate(e);
            }
            for (int i = 0, n = meta.size(); i < n; i++) {
                all.put(meta.key(i), meta.value(i));
            }
            return all;
        }

        @Override
        public boolean isStateDictionary() {
            return true;
        }

        @Override
        public boolean has(String key) {
            return shardedKeys.contains(key) || meta.containsKey(key);
        }

        @Override
        public NativeValue read(String key, NativeShardPlan plan) {
            if (!shardedKeys.contains(key)) {
                return meta.getKey(key);
            }
            try {
                return shards.read(key, plan);
            } catch (RuntimeException e) {
                throw NativeErrors.translate(e, location + " ['" + key + "']");
            }
        }

        /** Chunks that are exactly a parameter's region go straight into it (DCP's in-place load). */
        @Override
        public NativeValue readInto(String key, NativeShardPlan plan, Module module) {
            if (!shardedKeys.contains(key)) {
                return meta.getKey(key);
            }
            try {
                return shards.readInto(key, plan, module);
            } catch (RuntimeException e) {
                throw NativeErrors.translate(e, location + " ['" + key + "']");
            }
        }

        /** What meta.pt holds beyond the restored keys (the shard files hold only what was requested). */
        @Override
        public NativeValue remainder(Collection<String> restored) {
            restored.forEach(meta::removeKey);
            return meta;
        }

        @Override
        public void close() {
            shards.close();
            meta.close();
        }
    }
}
