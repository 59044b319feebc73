package io.fabricckpt.dist;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ValueConverter;
import io.fabricckpt.internal.io.CheckpointIOs;
import io.fabricckpt.internal.io.SafetensorsFileIO;
import io.fabricckpt.internal.io.TorchSaveFileIO;
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
 * {@link #saveAsync} copies every rank's shards, then writes either kind in the background over the
 * group's background group. Loading takes either kind on any number of ranks (the default {@link Strategy#load}): each rank
 * reads the parts of the saved chunks that overlap its shards. The process group stays the caller's
 * to close.
 * <p>Thread-safety: as its process group: collectives from several threads must still come in the same
 * order on every rank; use one thread per Fabric under Fsdp.
 */
public final class Fsdp extends GroupStrategy {
    /** How models and optimizers are saved: Lightning's {@code state_dict_type}. */
    public enum StateDictType { SHARDED, FULL }

    /**
     * How a SHARDED checkpoint's shard files hold their tensors: torch.distributed.checkpoint's
     * {@code SerializationFormat}. TORCH_SAVE (the default, what Lightning writes): each chunk a
     * torch.save stream. SAFETENSORS: each rank's chunks together as one safetensors blob after its
     * values, as {@code FileSystemWriter(serialization_format=SAFETENSORS)} writes them (which torch
     * 2.10's own {@code FileSystemReader} cannot read back; this library and its command line can).
     */
    public enum SerializationFormat { TORCH_SAVE, SAFETENSORS }

    private static final String TENSORS = "tensors", META = "meta", CHECKPOINT = "checkpoint";

    private final StateDictType stateDictType;
    private final SerializationFormat serializationFormat;

    /** Sharded checkpoints over {@code group}. */
    public Fsdp(ProcessGroup group) {
        this(group, StateDictType.SHARDED);
    }

    public Fsdp(ProcessGroup group, StateDictType stateDictType) {
        this(group, stateDictType, SerializationFormat.TORCH_SAVE);
    }

    /**
     * @throws IllegalArgumentException for SAFETENSORS with FULL (a FULL checkpoint is one torch.save file)
     */
    public Fsdp(ProcessGroup group, StateDictType stateDictType, SerializationFormat serializationFormat) {
        super(group);
        this.stateDictType = Objects.requireNonNull(stateDictType, "stateDictType");
        this.serializationFormat = Objects.requireNonNull(serializationFormat, "serializationFormat");
        if (stateDictType == StateDictType.FULL && serializationFormat == SerializationFormat.SAFETENSORS) {
            throw new IllegalArgumentException("the SAFETENSORS serialization is that of SHARDED checkpoints; a FULL"
                    + " checkpoint is one torch.save file");
        }
    }

    /** An FSDP strategy over the group that torchrun-style environment variables describe. */
    public static Fsdp fromEnvironment(StateDictType stateDictType) {
        return new Fsdp(ProcessGroup.fromEnvironment(), stateDictType);
    }

    public StateDictType stateDictType() {
        return stateDictType;
    }

    public SerializationFormat serializationFormat() {
        return serializationFormat;
    }

    @Override
    boolean everyRankWrites() {
        return true;
    }

    @Override
    void checkSave(CheckpointLocation location, Map<String, ?> state, Map<String, ? extends BiPredicate<Object, Object>> filter) {
        StateConversion.validateFilter(state, filter);
        if (SafetensorsFileIO.isSafetensorsName(location)) { // not a torch.save file under another name
            throw new UnsupportedOperationException(location + ": Fsdp saves to safetensors are not supported yet;"
                    + " save with SingleDevice or Ddp, or convert the saved checkpoint");
        }
        if (stateDictType == StateDictType.SHARDED && !filter.isEmpty()) {
            throw new UnsupportedOperationException("FSDP doesn't support loading sharded filtered checkpoints,"
                    + " so saving them is disabled.");
        }
    }

    /**
     * SHARDED: models and optimizers (their shards) as "tensors", everything else as "meta" (meta.pt,
     * as Lightning). FULL: one "checkpoint" tree, sharded state dicts filtered like the others.
     */
    @Override
    PreparedSave prepare(CheckpointLocation location, Map<String, ?> state,
            Map<String, ? extends BiPredicate<Object, Object>> filter) {
        PreparedSave.Builder part = new PreparedSave.Builder();
        try {
            part.plan(StateConversion.shardPlan(state));
            ValueConverter.ToNative toNative = new ValueConverter.ToNative();
            boolean sharded = stateDictType == StateDictType.SHARDED;
            NativeValue tensors = sharded ? part.keep(NativeValue.newDict(false)) : null;
            NativeValue rest = part.keep(NativeValue.newDict(false));
            for (Map.Entry<String, ?> entry : state.entrySet()) {
                Object value = entry.getValue();
                BiPredicate<Object, Object> keep = filter.get(entry.getKey());
                boolean tensorState = StateConversion.isTensorState(value);
                NativeValue converted = tensorState
                        ? StateConversion.filter(part.keep(StateConversion.shardedStateDict(location, value, state)),
                                keep)
                        : StateConversion.convert(value, keep, toNative, state.values());
                if (converted != null) {
                    (sharded && tensorState ? tensors : rest).put(NativeValue.newKey(entry.getKey()),
                            part.keep(converted));
                }
            }
            if (sharded) {
                part.put(TENSORS, tensors).put(META, rest);
            } else {
                part.put(CHECKPOINT, rest);
            }
            return part.build();
        } catch (RuntimeException e) {
            return part.failed(e);
        }
    }

    /**
     * SHARDED: every rank writes its shards, rank 0 meta.pt and {@code .metadata} last. FULL: rank 0
     * writes one torch.save file named after the path, whole tensors streamed from the shards.
     */
    @Override
    void write(CheckpointLocation location, PreparedSave prepared, ProcessGroup over, WriteOptions options,
            ProgressListener listener) {
        if (prepared.failure() != null) {
            throw prepared.failure(); // the same conversion on every rank: in the foreground it fails alike
        }
        if (stateDictType == StateDictType.SHARDED) {
            CheckpointIOs.DCP_DIRECTORY.writeSharded(location, prepared.tree(TENSORS), prepared.tree(META),
                    prepared.plan(), over.nativeGroup(), options, serializationFormat == SerializationFormat.SAFETENSORS);
        } else {
            CheckpointIOs.TORCH_SAVE_FILE.writeGathered(location, prepared.tree(CHECKPOINT), prepared.plan(),
                    over.nativeGroup(), options.withArchiveName(TorchSaveFileIO.archiveNameFor(location)));
        }
    }

    @Override
    public String toString() {
        return "Fsdp[" + stateDictType + (serializationFormat == SerializationFormat.TORCH_SAVE ? "" : ", "
                + serializationFormat) + ", " + processGroup() + "]";
    }
}
