package io.fabricckpt.dist;

import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Optimizer;

/**
 * A model whose parameters hold this rank's shards of global tensors, as under FSDP: each sharded
 * parameter is declared with the global shape it is a shard of and its offsets in it (a DTensor's
 * local shard). Put it in a state in place of the model; under {@link io.fabricckpt.dist.Fsdp} its
 * checkpoints are the sharded directories (or gathered full files) Lightning writes, and loading
 * fills each rank's shards from whatever layout the checkpoint was saved with.
 *
 * <pre>{@code
 * var model = ShardedModule.shardRows(net, group.rank(), group.worldSize(), optimizer);
 * fabric.save(dir, Map.of("model", model, "optimizer", optimizer, "step", step));
 * }</pre>
 *
 * <p>Parameters not declared are whole and the same on every rank.
 * <p>Thread-safety: Not thread-safe: build it once, then use it from the thread that saves and loads.
 */
public final class ShardedModule {
    /** One parameter's place: the global shape, this shard's offsets in it, and this shard's shape. */
    public record Shard(long[] globalShape, long[] offsets, long[] shape) {
        public Shard {
            globalShape = globalShape.clone();
            offsets = offsets.clone();
            shape = shape.clone();
        }

        @Override
        public String toString() {
            return "Shard[global=" + Arrays.toString(globalShape) + ", offsets=" + Arrays.toString(offsets)
                    + ", shape=" + Arrays.toString(shape) + "]";
        }
    }

    private final Module module;
    private final Map<String, Shard> shards = new LinkedHashMap<>();

    private ShardedModule(Module module) {
        this.module = Objects.requireNonNull(module, "module");
    }

    /** A model with no sharded parameter yet: declare them with {@link #shard}. */
    public static ShardedModule of(Module module) {
        return new ShardedModule(module);
    }

    /**
     * Declares that parameter {@code name} (its current data) is the shard of a tensor of
     * {@code globalShape} that starts at {@code offsets}.
     *
     * @throws IllegalArgumentException if the model has no such parameter or the shard does not fit
     */
    public ShardedModule shard(String name, long[] globalShape, long[] offsets) {
        long[] shape = shapeOf(module, name);
        if (globalShape.length != shape.length || offsets.length != shape.length) {
            throw new IllegalArgumentException("parameter '" + name + "' has " + shape.length
                    + " dimensions; the global shape and offsets must have as many");
        }
        for (int d = 0; d < shape.length; d++) {
            if (offsets[d] < 0 || offsets[d] + shape[d] > globalShape[d]) {
                throw new IllegalArgumentException("parameter '" + name + "' of shape " + Arrays.toString(shape)
                        + " at offsets " + Arrays.toString(offsets) + " does not fit in the global shape "
                        + Arrays.toString(globalShape));
            }
        }
        shards.put(name, new Shard(globalShape, offsets, shape));
        return this;
    }

    /**
     * Shards a whole model the way FSDP2's {@code fully_shard} does: every parameter with at least one
     * dimension is split along dimension 0 as {@code torch.chunk(t, worldSize, 0)} splits it, and this
     * rank's chunk (possibly empty) replaces the parameter's data in place. The per-parameter state of
     * the given optimizers that has the parameter's shape (Adam's {@code exp_avg}, ...) is cut alike,
     * so training state taken before sharding carries over.
     */
    public static ShardedModule shardRows(Module module, int rank, int worldSize, Optimizer... optimizers) {
        if (worldSize < 1 || rank < 0 || rank >= worldSize) {
            throw new IllegalArgumentException("rank " + rank + " of world size " + worldSize);
        }
        ShardedModule sharded = new ShardedModule(module);
        for (String name : parameterNames(module)) {
            long[] shape = shapeOf(module, name);
            if (shape.length == 0) {
                continue;
            }
            long rows = shape[0];
            long chunk = (rows + worldSize - 1) / worldSize;
            long start = Math.min(rank * chunk, rows);
            long length = Math.max(0, Math.min(start + chunk, rows) - start);
            long[] offsets = new long[shape.length];
            offsets[0] = start;
            long[] local = shape.clone();
            local[0] = length;
            sharded.shards.put(name, new Shard(shape, offsets, local));
        }
        NativeShardPlan plan = sharded.plan("model");
        byte[] key = "model".getBytes(StandardCharsets.UTF_8);
        try {
            // Optimizer state is cut while the parameters still have their global shape, then loaded
            // back once they hold their shards.
            NativeValue[] states = new NativeValue[optimizers.length];
            for (int i = 0; i < optimizers.length; i++) {
                states[i] = FabricNative.shardedOptimizerStateDict(optimizers[i], module, key, key.length, plan);
            }
            FabricNative.shardModuleParameters(module, key, key.length, plan);
            for (int i = 0; i < optimizers.length; i++) {
                FabricNative.loadOptimizerStateDict(optimizers[i], states[i]);
            }
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
        return sharded;
    }

    public Module module() {
        return module;
    }

    /** The declared shards by parameter name. */
    public Map<String, Shard> shards() {
        return Collections.unmodifiableMap(shards);
    }

    /** Adds this model's shards to {@code plan} under the state key {@code key}. */
    void addTo(NativeShardPlan plan, String key) {
        shards.forEach((name, s) -> plan.addParameter(key, name, s.globalShape(), s.offsets(), s.shape()));
    }

    private NativeShardPlan plan(String key) {
        NativeShardPlan plan = new NativeShardPlan();
        addTo(plan, key);
        return plan;
    }

    private static String[] parameterNames(Module module) {
        String names = NativeCalls.string(FabricNative.parameterNames(module));
        return names.isEmpty() ? new String[0] : names.split("\n");
    }

    private static long[] shapeOf(Module module, String name) {
        byte[] n = name.getBytes(StandardCharsets.UTF_8);
        int dims = FabricNative.parameterDims(module, n, n.length);
        if (dims < 0) {
            throw new IllegalArgumentException("the model has no parameter '" + name + "'");
        }
        long[] shape = new long[dims];
        for (int d = 0; d < dims; d++) {
            shape[d] = FabricNative.parameterSize(module, n, n.length, d);
        }
        return shape;
    }

    @Override
    public String toString() {
        return "ShardedModule" + shards;
    }
}
