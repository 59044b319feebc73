package io.fabricckpt.dist;

import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One rank's part of a save, converted and ready to write: the native trees a strategy writes (by
 * role, e.g. "checkpoint", or "tensors" and "meta"), the shard plan of sharded models, or the failure
 * that stopped the conversion. A failure is kept rather than thrown so that every rank still takes
 * part in the save's collectives and learns of it there (a rank that threw alone would leave the
 * others waiting). The trees share the caller's tensors until {@link #snapshot}; {@link #close}
 * releases them at once rather than whenever the garbage collector runs.
 */
final class PreparedSave implements AutoCloseable {
    private final Map<String, NativeValue> trees;
    private final List<NativeValue> handles;
    private final NativeShardPlan plan;
    private final RuntimeException failure;

    private PreparedSave(Map<String, NativeValue> trees, List<NativeValue> handles, NativeShardPlan plan,
            RuntimeException failure) {
        this.trees = trees;
        this.handles = handles;
        this.plan = plan;
        this.failure = failure;
    }

    /** What a rank prepares: trees added with {@link #put}, handles to release with {@link #keep}. */
    static final class Builder {
        private final Map<String, NativeValue> trees = new LinkedHashMap<>();
        private final List<NativeValue> handles = new ArrayList<>();
        private NativeShardPlan plan;

        /** Keeps {@code value} (may be null) to be released with the save; returns it. */
        NativeValue keep(NativeValue value) {
            if (value != null) {
                handles.add(value);
            }
            return value;
        }

        Builder put(String role, NativeValue tree) {
            trees.put(role, keep(tree));
            return this;
        }

        Builder plan(NativeShardPlan shardPlan) {
            this.plan = shardPlan;
            return this;
        }

        PreparedSave build() {
            return new PreparedSave(trees, handles, plan, null);
        }

        /** The conversion failed: the handles made so far go, the failure is kept for the collectives. */
        PreparedSave failed(RuntimeException error) {
            handles.forEach(NativeValue::close);
            return new PreparedSave(Map.of(), List.of(), null, error);
        }
    }

    /** The failure that stopped this rank's conversion, or null. */
    RuntimeException failure() {
        return failure;
    }

    /** The tree of {@code role}; null when this rank has none (e.g. not global rank 0 under DDP). */
    NativeValue tree(String role) {
        return trees.get(role);
    }

    NativeShardPlan plan() {
        return plan;
    }

    /**
     * The same save over copies of its tensors (one copy of each storage, {@code threads} threads, 0:
     * one per core): what a background save writes once the caller may change its tensors again. This
     * one stays as it is; close both.
     */
    PreparedSave snapshot(int threads) {
        if (failure != null) {
            return new PreparedSave(Map.of(), List.of(), null, failure);
        }
        Map<String, NativeValue> copies = new LinkedHashMap<>();
        try {
            for (Map.Entry<String, NativeValue> tree : trees.entrySet()) {
                copies.put(tree.getKey(), FabricNative.snapshotTensors(tree.getValue(), threads, null));
            }
        } catch (RuntimeException e) {
            copies.values().forEach(NativeValue::close);
            throw NativeErrors.translate(e);
        }
        return new PreparedSave(copies, List.copyOf(copies.values()), plan, null);
    }

    @Override
    public void close() {
        handles.forEach(NativeValue::close);
    }
}
