package io.fabricckpt.dist;

import java.util.Objects;

/**
 * Lightning's FSDP strategy for checkpoints (its {@code FSDPStrategy} / {@code ModelParallelStrategy}):
 * models hold sharded parameters ({@link io.fabricckpt.ShardedModule}) and every rank saves and
 * loads together.
 * <ul>
 *   <li>{@link StateDictType#SHARDED} (Lightning's default): the checkpoint is a
 *       {@code torch.distributed.checkpoint} directory: every rank writes its shards to
 *       {@code __<rank>_0.distcp}, rank 0 writes {@code meta.pt} (the state that is not a model or
 *       optimizer) and, last, {@code .metadata}. Optimizer state is keyed by parameter name.
 *   <li>{@link StateDictType#FULL}: the shards are gathered over c10d to rank 0, which writes one
 *       {@code torch.save} file with whole tensors.
 * </ul>
 * Loading takes either kind on any number of ranks: each rank reads the parts of the saved chunks
 * that overlap its shards. The process group stays the caller's to close.
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
    public String toString() {
        return "Fsdp[" + stateDictType + ", " + processGroup() + "]";
    }
}
