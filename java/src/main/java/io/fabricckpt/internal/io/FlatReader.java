package io.fabricckpt.internal.io;

import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.function.Supplier;

/**
 * A flat file read as the state it was saved from: a key is a tensor's name, or the prefix of
 * dotted names ({@code model} gathers {@code model.*} into the model's state dict), or a metadata
 * entry (a string). A tensor huggingface_hub dropped for sharing memory with a kept one (tied
 * weights: the metadata maps its name to the kept tensor's) reads as the kept tensor, so that a
 * model with tied weights restores strictly. The whole checkpoint and the remainder are the
 * tensors, as load_file gives them.
 */
final class FlatReader implements CheckpointReader {
    private final NativeValue tensors;
    private final Supplier<NativeValue> metadataReader;
    private NativeValue metadata; // read when a key asks for it (a whole read never does)
    private boolean handedOver; // readAll gave the tensors to the caller, who closes them

    /** {@code tensors}: the file's, name -> tensor; {@code metadataReader}: its {@code __metadata__}, asked for once if at all. */
    FlatReader(NativeValue tensors, Supplier<NativeValue> metadataReader) {
        this.tensors = tensors;
        this.metadataReader = metadataReader;
    }

    @Override
    public NativeValue safetensorsMetadata() {
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
        if (safetensorsMetadata().containsKey(name)) {
            try (NativeValue kept = safetensorsMetadata().getKey(name)) {
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
        for (int i = 0; i < safetensorsMetadata().size(); i++) {
            try (NativeValue k = safetensorsMetadata().key(i)) {
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
        return tensors.containsKey(key) || safetensorsMetadata().containsKey(key) || !under(key).isEmpty();
    }

    @Override
    public NativeValue read(String key, NativeShardPlan plan) {
        NativeValue value;
        if (tensorName(key) != null) {
            value = tensors.getKey(tensorName(key));
        } else if (!under(key).isEmpty()) {
            value = NativeValue.newDict(true); // a state dict, as state_dict() gives it
            for (String name : under(key)) {
                value.put(NativeValue.newKey(name.substring(key.length() + 1)), tensors.getKey(tensorName(name)));
            }
        } else {
            value = safetensorsMetadata().getKey(key);
        }
        return CheckpointReader.cutToPlan(key, value, plan);
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
