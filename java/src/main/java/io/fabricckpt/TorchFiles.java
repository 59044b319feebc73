package io.fabricckpt;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.ValueConverter;
import io.fabricckpt.internal.io.CheckpointIOs;
import io.fabricckpt.internal.io.CheckpointReader;
import io.fabricckpt.internal.io.SafetensorsFileIO;
import io.fabricckpt.internal.io.TorchSaveFileIO;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

/**
 * {@code torch.save} files as Java values: what {@code torch.load} and {@code torch.save} do in
 * Python, for any object tree. Types: None=null, bool=Boolean, int=Long (BigInteger beyond 64 bits),
 * float=Double, str=String, bytes=byte[], tuple={@link io.fabricckpt.core.PyTuple}, list=List,
 * dict=LinkedHashMap, OrderedDict={@link io.fabricckpt.core.PyOrderedDict}, set=Set,
 * frozenset={@link io.fabricckpt.core.PyFrozenSet}, tensors=the preset's {@code Tensor}, parameters=
 * {@link io.fabricckpt.core.Parameter}, other objects={@link io.fabricckpt.core.PyObject} /
 * {@link io.fabricckpt.core.PyGlobal}. Shared references survive a round trip (one Java object per
 * pickled object), so files re-save byte for byte.
 *
 * <p>Thread-safe: every method may be called from any number of threads.
 */
public final class TorchFiles {
    private TorchFiles() {}

    /** Reads a checkpoint into owned memory ({@link ReadOptions#DEFAULT}); tensors are CPU tensors. */
    public static Object read(Path path) {
        return read(path, ReadOptions.DEFAULT);
    }

    /** Reads a checkpoint mapped or eagerly (see {@link ReadOptions}). */
    public static Object read(Path path, ReadOptions options) {
        return read(path, options, null);
    }

    /**
     * Reads a torch.save file (zip or legacy), reporting the bytes read to {@code listener} (may be null).
     * A safetensors file (told by its first bytes) gives its tensors as a map name -> tensor, as
     * {@code safetensors.torch.load_file} does (mapped without a copy with {@link ReadOptions#mapped()}).
     * A sharded {@code torch.distributed.checkpoint} directory is read consolidated (every tensor whole,
     * then Lightning's {@code meta.pt} entries).
     */
    public static Object read(Path path, ReadOptions options, ProgressListener listener) {
        return read(CheckpointLocation.of(path), options, listener);
    }

    /**
     * {@link #read(Path, ReadOptions, ProgressListener)} of a location as users write it: a local path
     * or {@code s3://bucket/key} (an object fetched with parallel ranged GETs; see docs/storage.md).
     */
    public static Object read(String location, ReadOptions options, ProgressListener listener) {
        return read(CheckpointLocation.parse(location), options, listener);
    }

    public static Object read(String location) {
        return read(location, ReadOptions.DEFAULT, null);
    }

    private static Object read(CheckpointLocation location, ReadOptions options, ProgressListener listener) {
        try (CheckpointReader reader = CheckpointIOs.forReading(location).open(location, options, listener);
                NativeValue root = reader.readAll()) {
            return ValueConverter.toJava(root);
        }
    }

    /**
     * Writes {@code value} as torch.save does, atomically: a failure leaves any existing file intact. A
     * path ending in {@code .safetensors} gets a safetensors file instead: {@code value} is a map whose
     * nested maps are flattened into dotted names, tensors become entries and strings {@code __metadata__}
     * (the bytes of {@code safetensors.torch.save_file}); other values are refused, naming their keys.
     */
    public static void write(Path path, Object value, WriteOptions options) {
        write(path, value, options, null);
    }

    public static void write(Path path, Object value) {
        write(path, value, WriteOptions.DEFAULT);
    }

    /** {@link #write(Path, Object, WriteOptions)}, reporting the bytes written to {@code listener} (may be null). */
    public static void write(Path path, Object value, WriteOptions options, ProgressListener listener) {
        write(CheckpointLocation.of(path), value, options, listener);
    }

    /**
     * {@link #write(Path, Object, WriteOptions, ProgressListener)} to a location as users write it: a
     * local path or {@code s3://bucket/key} (a multipart upload; the object appears only when complete).
     */
    public static void write(String location, Object value, WriteOptions options, ProgressListener listener) {
        write(CheckpointLocation.parse(location), value, options, listener);
    }

    private static void write(CheckpointLocation location, Object value, WriteOptions options,
            ProgressListener listener) {
        try (NativeValue root = ValueConverter.toNative(value)) {
            CheckpointIOs.forWriting(location).write(location, root, options, listener);
        }
    }

    /**
     * Checks a checkpoint end to end (every record's CRC-32, the pickle, storages, tensor views)
     * and returns a one-line summary. For a sharded directory: its metadata, every chunk and value
     * (each a torch.save stream, checked the same way) and that the chunks cover every tensor.
     *
     * @throws io.fabricckpt.core.CheckpointException naming the file and what is wrong
     */
    public static String verify(Path path) {
        return verify(CheckpointLocation.of(path));
    }

    /** {@link #verify(Path)} of a local path or an {@code s3://bucket/key} object. */
    public static String verify(String location) {
        return verify(CheckpointLocation.parse(location));
    }

    private static String verify(CheckpointLocation location) {
        return CheckpointIOs.forReading(location).verify(location);
    }

    /**
     * The globals of a checkpoint that {@code torch.load(weights_only=True)} refuses, as
     * {@code torch.serialization.get_unsafe_globals_in_checkpoint} lists them ({@code "module.name"},
     * e.g. {@code argparse.Namespace}, {@code posix.system}), in order of first appearance; empty when
     * none. A torch.save file: its pickle (legacy files too, which torch's function refuses); a sharded
     * directory: its {@code meta.pt} and value items. Nothing is executed and no tensor data read.
     *
     * @throws io.fabricckpt.core.CheckpointException naming the file and what is wrong
     */
    public static List<String> unsafeGlobals(Path path) {
        return lines(() -> FabricNative.unsafeGlobals(NativeCalls.path(path)));
    }

    /**
     * {@link #unsafeGlobals(Path)} of a local path or an {@code s3://} location: of an object or sharded
     * prefix only its structure and pickles are fetched, never its tensors.
     */
    public static List<String> unsafeGlobals(String location) {
        CheckpointLocation at = CheckpointLocation.parse(location);
        if (at.isLocal()) {
            return unsafeGlobals(at.path());
        }
        String names = CheckpointIOs.OBJECT_STORAGE.unsafeGlobals(at);
        return names.isEmpty() ? List.of() : Arrays.asList(names.split("\n"));
    }

    /**
     * Reads a checkpoint and writes it as one torch.save file: a file is written back unchanged in the
     * current format (same archive folder); a sharded {@code torch.distributed.checkpoint} directory
     * is consolidated as Lightning does (every tensor whole, then the entries of its {@code meta.pt}),
     * with the archive folder {@code torch.save} gives a file of the target's name. A checkpoint
     * holding globals outside torch's weights_only allowlist is refused (see {@link WriteOptions})
     * unless {@code allowUnsafeGlobals}. The format written follows the target's name: a
     * {@code .safetensors} target gets the source's tensors flattened (see {@link #write}; a safetensors
     * source keeps its {@code __metadata__}), refused with the keys it cannot hold; a
     * {@code *.safetensors.index.json} target gets them as a Hugging Face sharded checkpoint.
     */
    public static void convert(Path source, Path target) {
        convert(source, target, false, null);
    }

    /** {@link #convert(Path, Path)}, reporting the bytes written to {@code listener} (may be null). */
    public static void convert(Path source, Path target, ProgressListener listener) {
        convert(source, target, false, listener);
    }

    /** {@link #convert(Path, Path)}; {@code allowUnsafeGlobals} writes globals outside the allowlist too. */
    public static void convert(Path source, Path target, boolean allowUnsafeGlobals, ProgressListener listener) {
        convert(CheckpointLocation.of(source), CheckpointLocation.of(target),
                WriteOptions.DEFAULT.withUnsafeGlobalsAllowed(allowUnsafeGlobals), listener);
    }

    /**
     * {@link #convert(Path, Path, boolean, ProgressListener)} between locations as users write them: local
     * paths or {@code s3://} locations (a sharded directory {@code s3://bucket/prefix/} fetched chunk by
     * chunk, the target uploaded as a multipart upload).
     */
    public static void convert(String source, String target, boolean allowUnsafeGlobals, ProgressListener listener) {
        convert(CheckpointLocation.parse(source), CheckpointLocation.parse(target),
                WriteOptions.DEFAULT.withUnsafeGlobalsAllowed(allowUnsafeGlobals), listener);
    }

    /**
     * {@link #convert(String, String, boolean, ProgressListener)} with the options of the write: fsync,
     * unsafe globals and the largest shard of a {@code *.safetensors.index.json} target (the archive
     * folder follows the target's name, as above).
     */
    public static void convert(String source, String target, WriteOptions options, ProgressListener listener) {
        convert(CheckpointLocation.parse(source), CheckpointLocation.parse(target), options, listener);
    }

    private static void convert(CheckpointLocation from, CheckpointLocation to, WriteOptions options,
            ProgressListener listener) {
        // Read eagerly: CRCs are checked before anything is rewritten.
        try (CheckpointReader reader = CheckpointIOs.forReading(from).open(from, ReadOptions.DEFAULT, null);
                NativeValue root = reader.readAll()) {
            NativeValue safetensorsMetadata = reader.safetensorsMetadata();
            String archive;
            if (CheckpointIOs.isShardedDirectory(from)) {
                archive = TorchSaveFileIO.archiveNameFor(to);
            } else if (safetensorsMetadata != null) {
                archive = "archive"; // what Lightning's torch.save of a state writes
                if (SafetensorsFileIO.isSafetensorsName(to)) {
                    keepMetadata(safetensorsMetadata, root); // safetensors to safetensors: the __metadata__ too
                }
            } else {
                String saved = from.isLocal() ? CheckpointIOs.TORCH_SAVE_FILE.archiveName(from)
                        : CheckpointIOs.OBJECT_STORAGE.archiveName(from);
                archive = saved.isEmpty() ? "archive" : saved; // legacy files are written in the current format
            }
            CheckpointIOs.forWriting(to).write(to, root, options.withArchiveName(archive), listener);
        }
    }

    /** Adds a safetensors file's {@code __metadata__} to its tensors, as the string entries a save writes back. */
    private static void keepMetadata(NativeValue metadata, NativeValue tensors) {
        for (int i = 0; i < metadata.size(); i++) {
            tensors.put(metadata.key(i), metadata.value(i));
        }
    }

    /**
     * Removes what saves killed midway left beside {@code target} ({@code .NAME.tmp-*} files and
     * directories whose writer is gone) and puts back a sharded checkpoint that a replacement
     * interrupted between its two renames set aside. Every save does this for its own target;
     * this is the same on demand ({@code fabric-ckpt clean}).
     *
     * @return the paths removed or restored
     */
    public static List<Path> clean(Path target) {
        return lines(() -> FabricNative.removeStaleTemporaries(NativeCalls.path(target))).stream().map(Path::of)
                .toList();
    }

    /** A native call's newline-separated answer. */
    private static List<String> lines(java.util.function.Supplier<org.bytedeco.javacpp.BytePointer> call) {
        String text;
        try {
            text = NativeCalls.string(call.get());
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
        return text.isEmpty() ? List.of() : Arrays.asList(text.split("\n"));
    }
}
