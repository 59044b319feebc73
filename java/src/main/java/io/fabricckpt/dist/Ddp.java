package io.fabricckpt.dist;

import java.util.Objects;

/**
 * Lightning's DDP strategy for checkpoints: every rank holds the same (replicated) state; global
 * rank 0 writes the single {@code torch.save} file and every rank waits for it; every rank reads it.
 * The process group stays the caller's to close.
 */
public final class Ddp implements Strategy {
    private final ProcessGroup group;

    public Ddp(ProcessGroup group) {
        this.group = Objects.requireNonNull(group, "group");
    }

    /** A DDP strategy over the group that torchrun-style environment variables describe. */
    public static Ddp fromEnvironment() {
        return new Ddp(ProcessGroup.fromEnvironment());
    }

    public ProcessGroup processGroup() {
        return group;
    }

    @Override
    public int globalRank() {
        return group.rank();
    }

    @Override
    public int worldSize() {
        return group.worldSize();
    }

    @Override
    public void barrier() {
        group.barrier();
    }

    @Override
    public boolean reduceBooleanDecision(boolean decision) {
        return group.allAgree(decision);
    }

    @Override
    public String broadcast(String text, int src) {
        return group.broadcast(text, src);
    }

    @Override
    public String toString() {
        return "Ddp[" + group + "]";
    }
}
