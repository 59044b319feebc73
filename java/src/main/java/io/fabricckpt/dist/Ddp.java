package io.fabricckpt.dist;

/**
 * Lightning's DDP strategy for checkpoints: every rank holds the same (replicated) state; global
 * rank 0 writes the single {@code torch.save} file and every rank waits for it; every rank reads it
 * (the defaults of {@link Strategy}). The process group stays the caller's to close.
 * <p>Thread-safety: as its process group: collectives from several threads must still come in the same
 * order on every rank; use one thread per Fabric under Ddp.
 */
public final class Ddp extends GroupStrategy {
    public Ddp(ProcessGroup group) {
        super(group);
    }

    /** A DDP strategy over the group that torchrun-style environment variables describe. */
    public static Ddp fromEnvironment() {
        return new Ddp(ProcessGroup.fromEnvironment());
    }

    @Override
    public String toString() {
        return "Ddp[" + processGroup() + "]";
    }
}
