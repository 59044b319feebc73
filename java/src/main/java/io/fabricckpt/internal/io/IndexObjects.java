package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.CorruptCheckpointException;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeObjectBytes;
import io.fabricckpt.internal.NativeSafetensorsIndex;
import io.fabricckpt.internal.NativeSafetensorsIndexLayout;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.io.s3.S3Objects;
import io.fabricckpt.internal.io.s3.SafetensorsIndexUpload;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import org.bytedeco.javacpp.BytePointer;

/**
 * A Hugging Face sharded checkpoint in object storage ({@code s3://bucket/run/model.safetensors.index.json}):
 * the index object and the shard objects beside it, the bytes huggingface_hub writes locally. Part of
 * {@link ObjectStorageIO}.
 */
final class IndexObjects {
    private IndexObjects() {}

    /** Whether {@code location} names a Hugging Face index ({@code *.safetensors.index.json}). */
    static boolean isIndex(CheckpointLocation location) {
        return location.fileName().endsWith(SafetensorsFileIO.INDEX_EXTENSION);
    }

    /**
     * A Hugging Face sharded checkpoint, as a local index save writes it: shards of at most the options'
     * largest shard size beside the index, each sent as a multipart upload from the tensors' memory,
     * published as {@link SafetensorsIndexUpload} does (every shard sent before any appears, the index last).
     */
    static void write(S3Objects objects, CheckpointLocation index, NativeValue checkpoint, WriteOptions options,
            ProgressListener listener) {
        try (NativeSafetensorsIndexLayout layout = planIndex(index, checkpoint, options)) {
            long total = 0;
            List<String> names = new ArrayList<>();
            for (int i = 0; i < layout.shardCount(); i++) {
                total += layout.shardSize(i);
                names.add(NativeCalls.string(layout.shardName(i)));
            }
            long bytes = total;
            AtomicLong done = new AtomicLong();
            BytePointer stem = NativeCalls.utf8(SafetensorsFileIO.indexStem(index.fileName()));
            SafetensorsIndexUpload.publish(objects, index, names, (shard, object) ->
                    objects.uploadUncompleted(object, layout.shardSize(shard), (offset, dest) -> {
                        int length = dest.remaining();
                        try (BytePointer memory = new BytePointer(dest)) {
                            layout.fill(shard, offset, memory, length);
                        } catch (RuntimeException e) {
                            throw NativeErrors.translate(e, object + ": bytes " + offset + "+" + length);
                        }
                        if (listener != null) {
                            listener.onProgress(done.addAndGet(length), bytes);
                        }
                    }), NativeCalls.bytes(layout.indexJson()),
                    name -> FabricNative.isSafetensorsFileOf(NativeCalls.utf8(name), stem));
        }
    }

    private static NativeSafetensorsIndexLayout planIndex(CheckpointLocation index, NativeValue checkpoint,
            WriteOptions options) {
        try {
            return new NativeSafetensorsIndexLayout(checkpoint, NativeCalls.utf8(index.toString()),
                    options.maxShardSize());
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    /**
     * A Hugging Face sharded checkpoint's tensors: the index object, then each shard object it names
     * (beside it) downloaded into memory the tensors view; the index's string metadata beside them.
     */
    static FlatReader open(S3Objects objects, CheckpointLocation index, ProgressListener listener) {
        long size = objects.size(index);
        if (size > Integer.MAX_VALUE - 8) {
            throw new CorruptCheckpointException(index + ": an index of " + size + " bytes", null);
        }
        ByteBuffer buffer = objects.read(index, 0, (int) size);
        byte[] json = new byte[buffer.remaining()];
        buffer.get(json);
        try (NativeSafetensorsIndex parsed = newIndex(json, index)) {
            for (String file : NativeCalls.string(parsed.files()).split("\n")) {
                if (!file.isEmpty()) {
                    try (NativeObjectBytes bytes = ObjectStorageIO.download(SafetensorsIndexUpload.beside(index, file), listener)) {
                        parsed.addShard(bytes);
                    }
                }
            }
            try {
                NativeValue tensors = parsed.load();
                NativeValue metadata = parsed.metadata();
                return new FlatReader(tensors, () -> metadata);
            } catch (RuntimeException e) {
                throw NativeErrors.translate(e);
            }
        }
    }

    private static NativeSafetensorsIndex newIndex(byte[] json, CheckpointLocation index) {
        try {
            return new NativeSafetensorsIndex(json, NativeCalls.utf8(index.toString()));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }
}
