package io.fabricckpt.dist;

import java.util.Objects;

/** What the multi-process strategies share: every collective goes through one c10d process group. */
abstract sealed class GroupStrategy implements Strategy permits Ddp, Fsdp {
    private final ProcessGroup group;

    GroupStrategy(ProcessGroup group) {
        this.group = Objects.requireNonNull(group, "group");
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
}
