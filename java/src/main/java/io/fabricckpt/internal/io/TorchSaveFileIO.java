package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeProcessGroup;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ProgressPoller;
import java.util.Collection;
import org.bytedeco.javacpp.BytePointer;

/**
 * One {@code torch.save} zip file (legacy files are read too): what Lightning's single-device and DDP
 * strategies write, and an FSDP strategy's full state. Writes are atomic (temporary file, fsync,
 * rename); reads are eager into owned memory unless mapped.
 */
public final class TorchSaveFileIO implements FileCheckpointIO {
    TorchSaveFileIO() {}

    @Override
    public void write(CheckpointLocation location, NativeValue checkpoint, WriteOptions options, int threads,
            ProgressListener listener) {
        BytePointer path = NativeCalls.path(location);
        BytePointer archive = NativeCalls.utf8(options.archiveName());
        try {
            ProgressPoller.run(listener, progress -> {
                FabricNative.saveTorchFileOptions(path, checkpoint, archive, options.fsync(), threads,
                        options.unsafeGlobalsAllowed(), progress);
                return null;
            });
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    /**
     * Collective: global rank 0 writes {@code checkpoint} as one file with its sharded tensors whole,
     * each assembled from every rank's shards as the file is written (rank 0 holds one whole tensor at a
     * time, not a copy of the state); every rank learns the outcome. Atomic as {@link #write}. To object
     * storage through {@link ObjectStorageIO#writeGathered}.
     */
    public void writeGathered(CheckpointLocation location, NativeValue checkpoint, NativeShardPlan plan,
            NativeProcessGroup group, WriteOptions options) {
        if (!location.isLocal()) {
            CheckpointIOs.OBJECT_STORAGE.writeGathered(location, checkpoint, plan, group, options);
            return;
        }
        try {
            FabricNative.saveFull(NativeCalls.path(location), checkpoint, plan, group,
                    NativeCalls.utf8(options.archiveName()), options.fsync(), options.unsafeGlobalsAllowed());
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e, location + ": full save failed");
        }
    }

    /** The file's tree, read as {@code options} say. */
    public NativeValue read(CheckpointLocation location, ReadOptions options, ProgressListener listener) {
        BytePointer path = NativeCalls.path(location);
        try {
            return ProgressPoller.run(listener, progress -> FabricNative.loadTorchFileOptions(path,
                    options.verifyCrc(), options.mmap(), options.threads(), options.weightsOnly(), progress));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    @Override
    public CheckpointReader open(CheckpointLocation location, ReadOptions options, ProgressListener listener) {
        return new TreeReader(read(location, options, listener));
    }

    @Override
    public String verify(CheckpointLocation location) {
        try {
            return NativeCalls.string(FabricNative.verifyTorchFile(NativeCalls.path(location)));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    /** The archive folder the file's records sit in ("" for a legacy file). */
    public String archiveName(CheckpointLocation location) {
        try {
            return NativeCalls.string(FabricNative.torchFileArchiveName(NativeCalls.path(location)));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    /** The archive folder torch.save writes into a file it is given by path: the name without its extension. */
    public static String archiveNameFor(CheckpointLocation location) {
        String name = location.fileName();
        int dot = name.lastIndexOf('.');
        return dot > 0 ? name.substring(0, dot) : name;
    }

    /**
     * Throws the {@link CheckpointException} a write of {@code root} to {@code target} would throw for
     * globals outside torch's weights_only allowlist (each with where it sits), if it holds any: for
     * callers that must refuse before they hand the tree to another thread.
     */
    public static void requireWeightsOnlySafe(CheckpointLocation target, NativeValue root) {
        String lines;
        try {
            lines = NativeCalls.string(FabricNative.unsafeGlobalsOfTree(root));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
        if (lines.isEmpty()) {
            return;
        }
        StringBuilder message = new StringBuilder(target.toString()).append(": refusing to write globals that"
                + " torch.load(weights_only=True) refuses (Python's torch.load(weights_only=False) of the file would"
                + " call them):");
        for (String line : lines.split("\n")) {
            String[] parts = line.split("\t", 2);
            message.append(' ').append(parts[0]).append(" at ")
                    .append(parts.length < 2 || parts[1].isEmpty() ? "the root" : parts[1]).append(';');
        }
        message.setLength(message.length() - 1);
        message.append(". Allow them explicitly (WriteOptions.allowUnsafeGlobals()) only for trusted data.");
        throw new CheckpointException(message.toString());
    }

    /** A whole file's tree: entries are its top-level items; sharded models get their regions. */
    static final class TreeReader implements CheckpointReader {
        private final NativeValue root;
        private boolean handedOver; // readAll gave the tree to the caller, who closes it

        TreeReader(NativeValue root) {
            this.root = root;
        }

        @Override
        public NativeValue readAll() {
            handedOver = true;
            return root;
        }

        @Override
        public boolean isStateDictionary() {
            return root.kind() == NativeValue.DICT;
        }

        @Override
        public boolean has(String key) {
            return isStateDictionary() && root.containsKey(key);
        }

        @Override
        public NativeValue read(String key, NativeShardPlan plan) {
            // A full file into sharded models: each rank keeps its regions (nothing to do without shards).
            return CheckpointReader.cutToPlan(key, root.getKey(key), plan);
        }

        @Override
        public NativeValue remainder(Collection<String> restored) {
            restored.forEach(root::removeKey);
            return root;
        }

        @Override
        public void close() {
            if (!handedOver) {
                root.close();
            }
        }
    }
}
