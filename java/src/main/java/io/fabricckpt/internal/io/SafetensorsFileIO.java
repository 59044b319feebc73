package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ProgressPoller;
import java.util.Locale;
import org.bytedeco.javacpp.BytePointer;

/**
 * One Hugging Face safetensors file: a flat map name -> tensor plus string metadata. Reads give the
 * tensors as {@code safetensors.torch.load_file} does (mapped without a copy when the options say
 * mmap); writes flatten the state's dictionaries into dotted keys as {@code state_dict()} names them
 * ({@code model.layer.weight}), keep string values as {@code __metadata__}, refuse anything else
 * (naming the keys), and give the bytes {@code safetensors.torch.save_file} writes. Atomic as
 * {@link TorchSaveFileIO}.
 */
public final class SafetensorsFileIO implements FileCheckpointIO {
    /** What marks a safetensors target by name. */
    public static final String EXTENSION = ".safetensors";
    /** What marks a Hugging Face sharded checkpoint by name: its index, the shards beside it. */
    public static final String INDEX_EXTENSION = ".safetensors.index.json";

    /** What precedes {@link #INDEX_EXTENSION} in an index's file name ({@code model} of {@code model.safetensors.index.json}). */
    public static String indexStem(String indexFileName) {
        if (!indexFileName.endsWith(INDEX_EXTENSION)) {
            throw new IllegalArgumentException(indexFileName + " is not a Hugging Face index name (*" + INDEX_EXTENSION + ")");
        }
        return indexFileName.substring(0, indexFileName.length() - INDEX_EXTENSION.length());
    }

    SafetensorsFileIO() {}

    /**
     * Whether {@code location} names a safetensors file ({@value #EXTENSION}, any case) or a Hugging
     * Face index ({@value #INDEX_EXTENSION}, exactly, as huggingface_hub names it).
     */
    public static boolean isSafetensorsName(CheckpointLocation location) {
        String name = location.fileName();
        return name != null && (name.toLowerCase(Locale.ROOT).endsWith(EXTENSION) || name.endsWith(INDEX_EXTENSION));
    }

    @Override
    public void write(CheckpointLocation location, NativeValue checkpoint, WriteOptions options, int threads,
            ProgressListener listener) {
        BytePointer path = NativeCalls.path(location);
        try {
            ProgressPoller.run(listener, progress -> {
                FabricNative.saveSafetensorsFile(path, checkpoint, options.fsync(), options.maxShardSize(), progress);
                return null;
            });
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    /** The file's tensors, name -> tensor in the file's data order. */
    public NativeValue read(CheckpointLocation location, ReadOptions options, ProgressListener listener) {
        BytePointer path = NativeCalls.path(location);
        try {
            return ProgressPoller.run(listener, progress -> FabricNative.loadSafetensorsFile(path, options.mmap(),
                    options.threads(), progress));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    /** The file's {@code __metadata__}: a dict of strings, empty when it has none. */
    private static NativeValue metadata(CheckpointLocation location) {
        try {
            return FabricNative.safetensorsMetadata(NativeCalls.path(location));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    @Override
    public CheckpointReader open(CheckpointLocation location, ReadOptions options, ProgressListener listener) {
        return new FlatReader(read(location, options, listener), () -> metadata(location));
    }

    @Override
    public String verify(CheckpointLocation location) {
        return CheckpointIOs.TORCH_SAVE_FILE.verify(location); // the native verifier takes every kind of file
    }
}
