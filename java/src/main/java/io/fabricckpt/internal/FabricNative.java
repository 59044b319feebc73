package io.fabricckpt.internal;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FunctionPointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.ByRef;
import org.bytedeco.javacpp.annotation.ByVal;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Const;
import org.bytedeco.javacpp.annotation.Namespace;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.StdString;

/**
 * The native entry points of libfabricckpt (cpp/src/jni/fabric_native.h). JavaCPP generates the JNI
 * glue from these declarations. Paths cross as UTF-8 bytes.
 */
@Platform(include = "fabric_native.h", link = "fabricckpt", compiler = "cpp17", library = FabricNative.LIBRARY,
        define = FabricNative.TYPED_ERRORS)
@Namespace("fabricckpt::jni")
public final class FabricNative {
    /** The JNI library JavaCPP builds from this class and {@link NativeValue}. */
    static final String LIBRARY = "jnifabricckpt";

    /** The namespace of the staging functions both JNI libraries hold (cpp/src/jni/staging_native.h). */
    static final String STAGING = "::fabricckpt::stagingjni";

    /**
     * The text of the RuntimeException JavaCPP throws for a C++ exception: fabricckpt::jni::describe_error
     * (the library's errors carry their kind and details ahead of the message; {@link NativeErrors} reads them).
     */
    static final String TYPED_ERRORS =
            "GENERIC_EXCEPTION_TOSTRING what() ? fabricckpt::jni::describe_error(e) : \"\"";

    private static volatile boolean loaded;

    private FabricNative() {}

    /**
     * Checks that the preset carries the libtorch we were built against ({@link PresetVersion}), loads
     * its libtorch first (so ours binds to the same copy), then our library.
     */
    public static void load() {
        if (loaded) {
            return;
        }
        synchronized (FabricNative.class) {
            if (!loaded) {
                PresetVersion.checkClassPath();
                Loader.load(org.bytedeco.pytorch.global.torch.class);
                Loader.load(FabricNative.class);
                loaded = true;
            }
        }
    }

    static {
        load();
    }

    /** {@code module} is a torch::nn::Module (any preset module object). */
    public static native @ByVal NativeValue moduleStateDict(Pointer module);

    /** Returns what a non-strict load left out: "missing\t<key>...\nunexpected\t<key>..." ({@link ModuleStates}). */
    public static native @StdString BytePointer loadModuleStateDict(Pointer module, @Const @ByRef NativeValue stateDict,
            @Cast("bool") boolean strict);

    /** {@code optimizer} is a torch::optim::Optimizer (Adam, AdamW, SGD, RMSprop, Adagrad). */
    public static native @ByVal NativeValue optimizerStateDict(Pointer optimizer);

    public static native void loadOptimizerStateDict(Pointer optimizer, @Const @ByRef NativeValue stateDict);

    /** {@code scheduler} is a torch::optim::LRScheduler (the preset's StepLR): Python's StepLR state dict. */
    public static native @ByVal NativeValue lrSchedulerStateDict(Pointer scheduler);

    public static native void loadLrSchedulerStateDict(Pointer scheduler, @Const @ByRef NativeValue stateDict);

    /** Whether the scheduler sets this optimizer's learning rates. */
    @Cast("bool") public static native boolean lrSchedulerDrives(Pointer scheduler, Pointer optimizer);

    /** optimizer.state_dict() with the 'initial_lr' that the scheduler driving it adds to each group. */
    public static native @ByVal NativeValue scheduledOptimizerStateDict(Pointer optimizer, Pointer scheduler);

    /** {@code scheduler} is a torch::optim::ReduceLROnPlateauScheduler, {@code optimizer} the one it drives. */
    public static native @ByVal NativeValue plateauSchedulerStateDict(Pointer scheduler, Pointer optimizer);

    public static native void loadPlateauSchedulerStateDict(Pointer scheduler, @Const @ByRef NativeValue stateDict);

    public static native @ByVal NativeValue loadTorchFile(@StdString BytePointer path, @Cast("bool") boolean verifyCrc);

    public static native @StdString BytePointer verifyTorchFile(@StdString BytePointer path);

    // --- staging of object-storage checkpoints (cpp/src/jni/staging_native.h, io.s3.StagedObject) ---------

    /** The ranges ("offset\tlength" lines) an outline of the sparse file at {@code path} still needs beyond {@code fetched}. */
    @Namespace(STAGING)
    public static native @StdString BytePointer outlineRangesMissing(@StdString BytePointer path,
            @StdString BytePointer fetched);

    /** The same for a sharded directory staged sparse ("file name\toffset\tlength" lines); {@code everyItem}: what its verify reads too. */
    @Namespace(STAGING)
    public static native @StdString BytePointer shardedOutlineRangesMissing(@StdString BytePointer dir,
            @StdString BytePointer fetched, @Cast("bool") boolean everyItem);

    /** The shard files the Hugging Face index at {@code path} names, one a line. */
    @Namespace(STAGING)
    public static native @StdString BytePointer safetensorsIndexFiles(@StdString BytePointer path);

    /**
     * Whether {@code name} is a file a Hugging Face sharded save under {@code stem} writes:
     * {@code <stem>.safetensors} or {@code <stem>-NNNNN-of-NNNNN.safetensors}, possibly followed by {@code .index.json}.
     */
    @Namespace(STAGING)
    @Cast("bool") public static native boolean isSafetensorsFileOf(@StdString BytePointer name,
            @StdString BytePointer stem);

    /** Reads the holes of staged files ({@link #registerStagedFile}); native code calls {@link #call}, possibly from threads of its own. */
    public static class HoleReader extends FunctionPointer {
        static {
            Loader.load();
        }

        protected HoleReader() {
            allocate();
        }

        private native void allocate();

        /** Reads {@code [offset, offset + size)} of the object behind {@code path} into {@code dest}: 0, or nonzero. */
        public int call(@Cast("const char*") BytePointer path, @Cast("int64_t") long offset, @Cast("int64_t") long size,
                Pointer dest) {
            return 1;
        }
    }

    /**
     * The file at {@code path} holds its object's bytes only in the {@code held} ranges ("offset\tlength"
     * lines); until {@link #unregisterStagedFile}, the native readers read its other bytes through {@code reader}.
     */
    @Namespace(STAGING)
    public static native void registerStagedFile(@StdString BytePointer path, @StdString BytePointer held,
            HoleReader reader);

    @Namespace(STAGING)
    public static native void unregisterStagedFile(@StdString BytePointer path);

    /** Removes the stale temporaries of dead writers beside a target; the paths, one a line. */
    public static native @StdString BytePointer removeStaleTemporaries(@StdString BytePointer target);

    public static native @StdString BytePointer torchFileArchiveName(@StdString BytePointer path);

    public static native void saveTorchFile(@StdString BytePointer path, @Const @ByRef NativeValue root,
            @StdString BytePointer archiveName, @Cast("bool") boolean fsync);

    // --- throughput: mapped and parallel loads, parallel saves, snapshots, progress ---------------

    /**
     * Reads a torch.save file. With {@code mmap}, tensors view a private copy-on-write mapping of the
     * file (storage CRCs unchecked); without, {@code threads} threads (0: one per core) read them into
     * owned memory. {@code progress} may be null.
     */
    public static native @ByVal NativeValue loadTorchFileWith(@StdString BytePointer path,
            @Cast("bool") boolean verifyCrc, @Cast("bool") boolean mmap, int threads, NativeProgress progress);

    /** Writes a tree atomically with {@code threads} writers (0: one per core); {@code progress} may be null. */
    public static native void saveTorchFileWith(@StdString BytePointer path, @Const @ByRef NativeValue root,
            @StdString BytePointer archiveName, @Cast("bool") boolean fsync, int threads, NativeProgress progress);

    // --- unsafe globals: torch 2.10's weights_only allowlist ------------------------------------

    /** {@link #loadTorchFileWith}; with {@code weightsOnly}, refuses files naming globals outside the allowlist. */
    public static native @ByVal NativeValue loadTorchFileOptions(@StdString BytePointer path,
            @Cast("bool") boolean verifyCrc, @Cast("bool") boolean mmap, int threads, @Cast("bool") boolean weightsOnly,
            NativeProgress progress);

    /** {@link #saveTorchFileWith}; trees holding globals outside the allowlist are refused unless allowed. */
    public static native void saveTorchFileOptions(@StdString BytePointer path, @Const @ByRef NativeValue root,
            @StdString BytePointer archiveName, @Cast("bool") boolean fsync, int threads,
            @Cast("bool") boolean allowUnsafeGlobals, NativeProgress progress);

    /** The checkpoint's globals outside the allowlist, one "module.name" per line. */
    public static native @StdString BytePointer unsafeGlobals(@StdString BytePointer path);

    /** A tree's globals outside the allowlist as the writer would emit them: "module.name\tkey path" lines. */
    public static native @StdString BytePointer unsafeGlobalsOfTree(@Const @ByRef NativeValue root);


    /** The same tree with every storage copied once: what an async save writes later. */
    public static native @ByVal NativeValue snapshotTensors(@Const @ByRef NativeValue root, int threads,
            NativeProgress progress);

    // --- sharded (FSDP-style) checkpoints ----------------------------------------------------------

    /** optimizer.state_dict() keyed by the names of its parameters in {@code module} (FSDP's form). */
    public static native @ByVal NativeValue optimizerStateDictByName(Pointer optimizer, Pointer module);

    /** Loads an optimizer state dict keyed by parameter name or by index. */
    public static native void loadOptimizerStateDictByName(Pointer optimizer, Pointer module,
            @Const @ByRef NativeValue stateDict);

    /**
     * Collective: writes the sharded directory; {@code meta} None: no meta.pt; {@code group} null: one
     * process. Values and meta.pt holding globals outside the allowlist refused unless allowed;
     * {@code safetensors}: DCP's SAFETENSORS serialization of the tensors.
     */
    public static native void saveSharded(@StdString BytePointer dir, @Const @ByRef NativeValue state,
            @Const @ByRef NativeValue meta, @Const @ByRef NativeShardPlan plan, NativeProcessGroup group,
            @Cast("bool") boolean fsync, @Cast("bool") boolean allowUnsafeGlobals, @Cast("bool") boolean safetensors);

    /** Collective: rank 0 writes {@code state} as one torch.save file, sharded tensors whole (streamed). */
    public static native void saveFull(@StdString BytePointer path, @Const @ByRef NativeValue state,
            @Const @ByRef NativeShardPlan plan, NativeProcessGroup group, @StdString BytePointer archiveName,
            @Cast("bool") boolean fsync, @Cast("bool") boolean allowUnsafeGlobals);

    /** Whole tensors at sharded places of {@code state} are cut to this rank's regions. */
    public static native void sliceToPlan(@Const @ByRef NativeValue state, @Const @ByRef NativeShardPlan plan);

    @Cast("bool") public static native boolean isShardedCheckpoint(@StdString BytePointer path);

    /** Whether a name under a sharded checkpoint's prefix is one its save writes (and may replace). */
    @Cast("bool") public static native boolean isShardedCheckpointEntry(@StdString BytePointer name);

    /** The name of a rank's shard file in a sharded checkpoint ("__RANK_0.distcp"). */
    public static native @StdString BytePointer shardedRankFileName(int rank);

    /** Whether the file starts as safetensors does, or the path is a Hugging Face sharded index or its directory. */
    @Cast("bool") public static native boolean isSafetensorsFile(@StdString BytePointer path);

    /** A safetensors file as a dict name -> tensor, mapped or read into owned memory. */
    public static native @ByVal NativeValue loadSafetensorsFile(@StdString BytePointer path,
            @Cast("bool") boolean mmap, int threads, NativeProgress progress);

    /**
     * The flattened tensors of {@code root} (strings as {@code __metadata__}) as a safetensors file,
     * atomically; a {@code *.safetensors.index.json} path gets Hugging Face's sharded layout.
     */
    public static native void saveSafetensorsFile(@StdString BytePointer path, @Const @ByRef NativeValue root,
            @Cast("bool") boolean fsync, long maxShardSize, NativeProgress progress);

    /** A safetensors file's {@code __metadata__} (an index's string metadata) as a dict of strings. */
    public static native @ByVal NativeValue safetensorsMetadata(@StdString BytePointer path);


    /** The module's parameter names, one per line. */
    public static native @StdString BytePointer parameterNames(Pointer module);

    /** A parameter's number of dimensions; -1 when the module has no such parameter. */
    public static native int parameterDims(Pointer module, @Cast("const signed char*") byte[] name, long nameLength);

    public static native long parameterSize(Pointer module, @Cast("const signed char*") byte[] name, long nameLength,
            int dim);

    /** The optimizer's state dict with the state of planned parameters cut to their shards. */
    public static native @ByVal NativeValue shardedOptimizerStateDict(Pointer optimizer, Pointer module,
            @Cast("const signed char*") byte[] moduleKey, long moduleKeyLength, @Const @ByRef NativeShardPlan plan);

    public static native void shardModuleParameters(Pointer module, @Cast("const signed char*") byte[] moduleKey,
            long moduleKeyLength, @Const @ByRef NativeShardPlan plan);

    // --- object storage ------------------------------------------------------------------------

    /**
     * Parses a torch.save file downloaded into {@code bytes} (emptied: the tensors view its memory).
     * With {@code verifyCrc} every record's CRC-32 is checked.
     */
    public static native @ByVal NativeValue loadTorchBytes(@ByRef NativeObjectBytes bytes,
            @Cast("bool") boolean verifyCrc, int threads, @Cast("bool") boolean weightsOnly);

    /** The tensors of a safetensors file downloaded into {@code bytes} (emptied: the tensors view its memory). */
    public static native @ByVal NativeValue loadSafetensorsBytes(@ByRef NativeObjectBytes bytes);

    /**
     * The byte ranges of a sharded directory's files that reading top-level {@code key} with {@code plan}
     * reads ({@code plan} null: reading everything), one "relative path\toffset\tlength" a line.
     */
    public static native @StdString BytePointer shardedRanges(@StdString BytePointer dir, @StdString BytePointer key,
            @Const NativeShardPlan plan);
}
