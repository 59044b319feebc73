package io.fabricckpt.internal.io;

import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import java.util.Collection;
import org.bytedeco.pytorch.Module;

/**
 * An opened checkpoint: its top-level entries, each read on demand and cut to a rank's shards.
 * Closing releases what it holds (mapped files, the parsed metadata).
 */
public interface CheckpointReader extends AutoCloseable {
    /**
     * The whole checkpoint as one tree (a sharded one consolidated: every tensor whole), for the
     * caller to close; call it at most once.
     */
    NativeValue readAll();

    /** Whether the checkpoint is a dictionary with string keys at the top (what Fabric saves). */
    boolean isStateDictionary();

    boolean has(String key);

    /** The value saved under {@code key}, sharded tensors cut to {@code plan}'s regions. */
    NativeValue read(String key, NativeShardPlan plan);

    /**
     * {@link #read} for restoring {@code module} from it: a reader that can reads what it can
     * straight into the module's tensors (which are then values of the tree), so that restoring them
     * copies nothing; a failure midway may leave the module partly overwritten. By default, {@link #read}.
     */
    default NativeValue readInto(String key, NativeShardPlan plan, Module module) {
        return read(key, plan);
    }

    /**
     * A safetensors file's {@code __metadata__} (a dict of strings, the reader's to close), or null
     * for every other kind of checkpoint.
     */
    default NativeValue safetensorsMetadata() {
        return null;
    }

    /** The top-level entries other than {@code restored}: what a load returns as the remainder (the reader's to close). */
    NativeValue remainder(Collection<String> restored);

    @Override
    void close();

    /**
     * {@code value}, read under {@code key} from a file of whole tensors, with those at sharded places
     * cut to {@code plan}'s regions (a full file loaded into sharded models; unchanged without shards).
     */
    static NativeValue cutToPlan(String key, NativeValue value, NativeShardPlan plan) {
        NativeValue one = NativeValue.newDict(false);
        one.put(NativeValue.newKey(key), value);
        try {
            FabricNative.sliceToPlan(one, plan);
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e, "'" + key + "'");
        }
        return one.getKey(key);
    }
}
