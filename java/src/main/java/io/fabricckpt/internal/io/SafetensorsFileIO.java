package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ProgressPoller;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Locale;
import java.util.function.Supplier;
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
    public NativeValue metadata(CheckpointLocation location) {
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

    /**
     * A flat file read as the state it was saved from: a key is a tensor's name, or the prefix of
     * dotted names ({@code model} gathers {@code model.*} into the model's state dict), or a metadata
     * entry (a string). A tensor huggingface_hub dropped for sharing memory with a kept one (tied
     * weights: the metadata maps its name to the kept tensor's) reads as the kept tensor, so that a
     * model with tied weights restores strictly. The whole checkpoint and the remainder are the
     * tensors, as load_file gives them.
     */
    private static final class FlatReader implements CheckpointReader {
        private final NativeValue tensors;
        private final Supplier<NativeValue> metadataReader;
        private NativeValue metadata; // read when a key asks for it (a whole read never does)
        private boolean handedOver; // readAll gave the tensors to the caller, who closes them

        FlatReader(NativeValue tensors, Supplier<NativeValue> metadataReader) {
            this.tensors = tensors;
            this.metadataReader = metadataReader;
        }

        private NativeValue metadata() {
            if (metadata == null) {
                metadata = metadataReader.get();
            }
            return metadata;
        }

        private List<String> names() {
            List<String> names = new ArrayList<>(tensors.size());
            for (int i = 0; i < tensors.size(); i++) {
                try (NativeValue key = tensors.key(i)) {
                    names.add(NativeCalls.string(key.bytesValue()));
                }
            }
            return names;
        }

        /** The tensor {@code name} stands for: itself, the tensor the metadata says was kept for it, or null. */
        private String tensorName(String name) {
            if (tensors.containsKey(name)) {
                return name;
            }
            if (metadata().containsKey(name)) {
                try (NativeValue kept = metadata().getKey(name)) {
                    String keptName = NativeCalls.string(kept.bytesValue()); // metadata holds strings only
                    return tensors.containsKey(keptName) ? keptName : null;
                }
            }
            return null;
        }

        /** The tensor names under {@code key.}, and after them the dropped ones that stand for a tensor. */
        private List<String> under(String key) {
            String prefix = key + ".";
            List<String> found = new ArrayList<>(names().stream().filter(n -> n.startsWith(prefix)).toList());
            for (int i = 0; i < metadata().size(); i++) {
                try (NativeValue k = metadata().key(i)) {
                    String name = NativeCalls.string(k.bytesValue());
                    if (name.startsWith(prefix) && !tensors.containsKey(name) && tensorName(name) != null) {
                        found.add(name);
                    }
                }
            }
            return found;
        }

        @Override
        public NativeValue readAll() {
            handedOver = true;
            return tensors;
        }

        @Override
        public boolean isStateDictionary() {
            return true;
        }

        @Override
        public boolean has(String key) {
            return tensors.containsKey(key) || metadata().containsKey(key) || !under(key).isEmpty();
        }

        @Override
        public NativeValue read(String key, NativeShardPlan plan) {
            NativeValue one = NativeValue.newDict(false);
            if (tensorName(key) != null) {
                one.put(NativeValue.newKey(key), tensors.getKey(tensorName(key)));
            } else if (!under(key).isEmpty()) {
                NativeValue dict = NativeValue.newDict(true); // a state dict, as state_dict() gives it
                for (String name : under(key)) {
                    dict.put(NativeValue.newKey(name.substring(key.length() + 1)), tensors.getKey(tensorName(name)));
                }
                one.put(NativeValue.newKey(key), dict);
            } else {
                one.put(NativeValue.newKey(key), metadata().getKey(key));
            }
            try {
                FabricNative.sliceToPlan(one, plan);
            } catch (RuntimeException e) {
                throw NativeErrors.translate(e, "'" + key + "'");
            }
            return one.getKey(key);
        }

        @Override
        public NativeValue remainder(Collection<String> restored) {
            for (String key : restored) {
                tensors.removeKey(key);
                under(key).forEach(tensors::removeKey);
            }
            return tensors;
        }

        @Override
        public void close() {
            if (metadata != null) {
                metadata.close();
            }
            if (!handedOver) {
                tensors.close();
            }
        }
    }
}
