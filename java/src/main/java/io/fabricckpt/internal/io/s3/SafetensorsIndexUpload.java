package io.fabricckpt.internal.io.s3;

import io.fabricckpt.core.CheckpointLocation;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.function.BiFunction;
import java.util.function.Predicate;

/**
 * A Hugging Face sharded checkpoint ({@code *.safetensors.index.json} and its shard files beside it)
 * made to appear in object storage as a local index save makes it appear on disk: every shard object
 * sent before any appears, then each completed, the index last; the shard objects an earlier save under
 * the same name left (another shard count) deleted once the index is in place. Between the first
 * completion and the index a reader may see new shards under the old index (object storage has no
 * rename of several objects at once).
 */
public final class SafetensorsIndexUpload {
    private SafetensorsIndexUpload() {}

    /**
     * Publishes {@code shardNames} (file names beside {@code index}), each sent by {@code send} (shard i
     * to its object: every part in, not completed), then {@code indexJson}. {@code ofItsStem} tells the
     * names a save under the index's stem writes ({@code <stem>.safetensors},
     * {@code <stem>-NNNNN-of-NNNNN.safetensors}, possibly followed by {@code .index.json}). A failure
     * before the completions drops every upload.
     */
    public static void publish(S3Objects objects, CheckpointLocation index, List<String> shardNames,
            BiFunction<Integer, CheckpointLocation, S3Objects.UncompletedUpload> send, byte[] indexJson,
            Predicate<String> ofItsStem) {
        Set<String> current = new HashSet<>(Set.of(index.fileName()));
        List<S3Objects.UncompletedUpload> sent = new ArrayList<>();
        try {
            for (int i = 0; i < shardNames.size(); i++) {
                current.add(shardNames.get(i));
                sent.add(send.apply(i, beside(index, shardNames.get(i))));
            }
            for (S3Objects.UncompletedUpload object : sent) {
                object.complete();
            }
        } finally {
            for (S3Objects.UncompletedUpload object : sent) {
                object.close(); // drops what was not completed
            }
        }
        objects.upload(index, indexJson.length, (offset, dest) -> dest.put(indexJson, (int) offset, dest.remaining()));
        for (String key : objects.listBeside(index).keySet()) {
            CheckpointLocation other = CheckpointLocation.ofObject(index.bucket(), key);
            String otherName = other.fileName();
            if (beside(index, otherName).equals(other) && !current.contains(otherName)
                    && ofItsStem.test(otherName)) {
                objects.delete(other);
            }
        }
    }

    /** The object {@code name} beside {@code object} (under the same prefix). */
    public static CheckpointLocation beside(CheckpointLocation object, String name) {
        String key = object.key();
        return CheckpointLocation.ofObject(object.bucket(), key.substring(0, key.lastIndexOf('/') + 1) + name);
    }
}
