package io.fabricckpt.dist;

import io.fabricckpt.core.AsyncSave;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ValueConverter;
import io.fabricckpt.internal.io.CheckpointIOs;
import io.fabricckpt.internal.io.SafetensorsFileIO;
import io.fabricckpt.internal.io.TorchSaveFileIO;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.BiPredicate;

/**
 * Lightning's FSDP strategy for checkpoints (its {@code FSDPStrategy} / {@code ModelParallelStrategy}):
 * models hold sharded parameters ({@link ShardedModule}) and every rank saves and loads together.
 * <ul>
 *   <li>{@link StateDictType#SHARDED} (Lightning's default): the checkpoint is a
 *       {@code torch.distributed.checkpoint} directory: every rank writes its shards to
 *       {@code __<rank>_0.distcp}, rank 0 writes {@code meta.pt} (the state that is not a model or
 *       optimizer) and, last, {@code .metadata}. Optimizer state is keyed by parameter name.
 *   <li>{@link StateDictType#FULL}: rank 0 writes one {@code torch.save} file with whole tensors,
 *       receiving the shards over c10d tensor by tensor as it writes (it never holds a whole copy).
 * </ul>
 * Loading takes either kind on any number of ranks (the default {@link Strategy#load}): each rank
 * reads the parts of the saved chunks that overlap its shards. The process group stays the caller's
 * to close.
 * <p>Thread-safety: as its process group: collectives from several threads must still come in the same
 * order on every rank; use one thread per Fabric under Fsdp.
 */
public final class Fsdp extends GroupStrategy {
    /** How models and optimizers are saved: Lightning's {@code state_dict_type}. */
    public enum StateDictType { SHARDED, FULL }

    private final StateDictType stateDictType;

    /** Sharded checkpoints over {@code group}. */
    public Fsdp(ProcessGroup group) {
        this(group, StateDictType.SHARDED);
    }

    public Fsdp(ProcessGroup group, StateDictType stateDictType) {
        super(group);
        this.stateDictType = Objects.requireNonNull(stateDictType, "stateDictType");
    }

    /** An FSDP strategy over the group that torchrun-style environment variables describe. */
    public static Fsdp fromEnvironment(StateDictType stateDictType) {
        return new Fsdp(ProcessGroup.fromEnvironment(), stateDictType);
    }

    public StateDictType stateDictType() {
        return stateDictType;
    }

    @Override
    public void save(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, WriteOptions options) {
        StateConversion.validateFilter(state, filter);
        if (SafetensorsFileIO.isSafetensorsName(location)) { // not a torch.save file under another name
            throw new UnsupportedOperationException(location + ": Fsdp saves to safetensors are not supported yet;"
                    + " save with SingleDevice or Ddp, or convert the saved checkpoint");
        }
        // The native trees are released as soon as the save is done, not whenever the garbage
        // collector gets to their handles.
        List<NativeValue> handles = new ArrayList<>();
        try {
            NativeShardPlan plan = StateConversion.shardPlan(state);
            if (stateDictType == StateDictType.SHARDED) {
                saveSharded(location, state, filter, plan, options, handles);
            } else {
                saveGathered(location, state, filter, plan, options, handles);
            }
        } finally {
            handles.forEach(NativeValue::close);
        }
    }

    /** @throws UnsupportedOperationException always: background sharded saves are not supported yet */
    @Override
    public AsyncSave saveAsync(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, WriteOptions options,
            ProgressListener listener) {
        throw new UnsupportedOperationException("saveAsync under the Fsdp strategy is not supported yet");
    }

    /** Models and optimizers go into the shard files; everything else into meta.pt (as Lightning). */
    private void saveSharded(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, NativeShardPlan plan, WriteOptions options,
            List<NativeValue> handles) {
        if (!filter.isEmpty()) {
            throw new UnsupportedOperationException("FSDP doesn't support loading sharded filtered checkpoints,"
                    + " so saving them is disabled.");
        }
        ValueConverter.ToNative toNative = new ValueConverter.ToNative();
        NativeValue tensors = keep(handles, NativeValue.newDict(false));
        NativeValue meta = keep(handles, NativeValue.newDict(false));
        for (Map.Entry<String, ?> entry : state.entrySet()) {
            Object value = entry.getValue();
            boolean sharded = StateConversion.isTensorState(value);
            NativeValue converted = keep(handles, sharded ? StateConversion.shardedStateDict(location, value, state)
                    : StateConversion.convert(value, null, toNative, state.values()));
            (sharded ? tensors : meta).put(NativeValue.newKey(entry.getKey()), converted);
        }
        CheckpointIOs.DCP_DIRECTORY.writeSharded(location, tensors, meta, plan, processGroup().nativeGroup(), options);
    }

    /** FULL: rank 0 writes one torch.save file named after the path, whole tensors streamed from the shards. */
    private void saveGathered(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter, NativeShardPlan plan, WriteOptions options,
            List<NativeValue> handles) {
        ValueConverter.ToNative toNative = new ValueConverter.ToNative();
        NativeValue checkpoint = keep(handles, NativeValue.newDict(false));
        for (Map.Entry<String, ?> entry : state.entrySet()) {
            Object value = entry.getValue();
            BiPredicate<Object, Object> keep = filter.get(entry.getKey());
            NativeValue converted = StateConversion.isTensorState(value)
                    ? StateConversion.filter(keep(handles, StateConversion.shardedStateDict(location, value, state)), keep)
                    : StateConversion.convert(value, keep, toNative, state.values());
            if (converted != null) {
                checkpoint.put(NativeValue.newKey(entry.getKey()), keep(handles, converted));
            }
        }
        CheckpointIOs.TORCH_SAVE_FILE.writeGathered(location, checkpoint, plan, processGroup().nativeGroup(),
                options.withArchiveName(TorchSaveFileIO.archiveNameFor(location)));
    }

    private static NativeValue keep(List<NativeValue> handles, NativeValue value) {
        if (value != null) {
            handles.add(value);
        }
        return value;
    }

    @Override
    public String toString() {
        return "Fsdp[" + stateDictType + ", " + processGroup() + "]";
    }
}
