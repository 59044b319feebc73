package io.fabricckpt.cli;

import io.fabricckpt.cli.format.Outlines;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.internal.io.SafetensorsFileIO;
import io.fabricckpt.internal.io.s3.MultipartWriter;
import io.fabricckpt.internal.io.s3.S3Objects;
import io.fabricckpt.internal.io.s3.SafetensorsIndexUpload;
import io.fabricckpt.internal.io.s3.StagedObject;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.function.Consumer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "convert", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Write any checkpoint this library reads as one torch.save file.",
            "Byte-identical for Lightning files; a sharded directory is consolidated, as Lightning's",
            "consolidate_checkpoint does. Globals outside torch's weights_only allowlist (code a",
            "torch.load(weights_only=False) would run) are refused unless --allow-unsafe-globals.",
            "A DST ending in .safetensors gets a safetensors file (as safetensors.torch.save_file",
            "writes): the tensors flattened to dotted names, strings as metadata; other values are",
            "refused, naming their keys. A DST ending in .safetensors.index.json gets a Hugging Face",
            "sharded checkpoint (as huggingface_hub's save_torch_state_dict writes): the index and",
            "its shards beside it."})
final class ConvertCli implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "SRC", description = "a checkpoint file or sharded directory, local or s3://")
    String sourceLocation;

    @Parameters(index = "1", paramLabel = "DST", description = "the file to write, local or s3://bucket/key (a name ending in"
            + " .safetensors: safetensors, .safetensors.index.json: sharded safetensors, else torch.save)")
    String targetLocation;

    @Option(names = "--max-shard-size", paramLabel = "SIZE", defaultValue = "5GB",
            description = "the largest shard of a .safetensors.index.json DST: bytes, or with KB, MB, GB or TB"
                    + " (decimal, as huggingface_hub reads it; default: ${DEFAULT-VALUE})")
    String maxShardSize;

    @Option(names = "--allow-unsafe-globals",
            description = "write globals outside torch's weights_only allowlist too (only for files you trust)")
    boolean allowUnsafeGlobals;

    @Override
    public Integer call() {
        long shardSize = parseShardSize(maxShardSize);
        if (ObjectLocations.isRemote(targetLocation) && isIndexName(targetLocation)) {
            // Each shard written without libtorch into a multipart upload of its own, in order; the shards
            // appear only when all are sent, then the index (SafetensorsIndexUpload).
            CheckpointLocation index = CheckpointLocation.parse(targetLocation);
            S3Objects objects = S3Objects.shared();
            withSource(sourceLocation, source -> {
                try (Outlines.IndexPlan plan = Outlines.planIndex(source, Outlines.isShardedDirectory(source),
                        targetLocation, shardSize)) {
                    SafetensorsIndexUpload.publish(objects, index, plan.shardNames(), (shard, object) -> {
                        try (MultipartWriter out = objects.openWriter(object)) {
                            plan.writeShard(shard, object.toString(), out::write);
                            return out.sendUncompleted();
                        }
                    }, plan.indexJson(), name -> Outlines.isSafetensorsFileOf(name,
                            SafetensorsFileIO.indexStem(index.fileName())));
                }
            });
            System.out.println("wrote " + targetLocation);
            return ExitCodes.OK;
        }
        if (ObjectLocations.isRemote(targetLocation)) {
            // A torch.save or safetensors object: written without libtorch straight into a multipart upload,
            // each part sent as it fills (concurrency x part size bytes in memory, nothing on disk); the
            // object appears only when complete, and a failure aborts the upload. A consolidation's archive
            // folder follows the key's file name, as torch.save's does.
            CheckpointLocation target = CheckpointLocation.parse(targetLocation);
            if (target.fileName().isEmpty()) {
                throw new CliException(ExitCodes.USAGE, targetLocation + ": names no object (s3://bucket/key)");
            }
            boolean safetensors = Checkpoints.isSafetensorsName(Path.of(targetLocation));
            try (MultipartWriter out = S3Objects.shared().openWriter(target)) {
                withSource(sourceLocation, source -> {
                    boolean sharded = Outlines.isShardedDirectory(source);
                    if (safetensors) {
                        Outlines.convertToSafetensorsInto(source, sharded, targetLocation, out::write);
                    } else if (sharded) {
                        Outlines.convertShardedInto(source, targetLocation, target.fileName(), out::write,
                                allowUnsafeGlobals);
                    } else {
                        Outlines.convertInto(source, targetLocation, out::write, allowUnsafeGlobals);
                    }
                });
                out.complete();
            }
            System.out.println("wrote " + targetLocation);
            return ExitCodes.OK;
        }
        withSource(sourceLocation, source -> convertLocal(source, Path.of(targetLocation), shardSize));
        System.out.println("wrote " + targetLocation);
        return ExitCodes.OK;
    }

    /**
     * Runs {@code convert} on the local path of a local or s3:// source. An s3:// source is staged with its
     * structure only; the converter reads its tensors' bytes from the store into memory as it writes them
     * (nothing of them on disk).
     */
    private static void withSource(String sourceLocation, Consumer<Path> convert) {
        if (ObjectLocations.isRemote(sourceLocation)) {
            try (StagedObject staged = StagedObject.forReading(sourceLocation, FormatStaging.INSTANCE)) {
                try {
                    convert.accept(staged.path());
                } catch (Outlines.FormatException e) {
                    throw new CliException(ExitCodes.IO, staged.naming(e.getMessage()));
                }
            }
        } else {
            convert.accept(Paths.readable(Path.of(sourceLocation)));
        }
    }

    private void convertLocal(Path source, Path target, long maxShardSize) {
        // Without libtorch, one storage (or tensor assembled from its chunks) in memory at a time.
        boolean sharded = Outlines.isShardedDirectory(source);
        if (Checkpoints.isSafetensorsName(target)) {
            Outlines.convertToSafetensors(source, sharded, target, maxShardSize);
        } else if (sharded) {
            Outlines.convertSharded(source, target, allowUnsafeGlobals);
        } else {
            Outlines.convert(source, target, allowUnsafeGlobals);
        }
    }

    private static boolean isIndexName(String location) {
        return location.endsWith(SafetensorsFileIO.INDEX_EXTENSION);
    }

    private static final Map<String, Long> SHARD_UNITS = Map.of("KB", 1_000L, "MB", 1_000_000L, "GB", 1_000_000_000L,
            "TB", 1_000_000_000_000L);

    /** huggingface_hub's parse_size_to_int: "5GB" is 5 x 10^9 bytes; plain digits are bytes. */
    static long parseShardSize(String text) {
        String t = text.strip();
        try {
            if (t.chars().allMatch(Character::isDigit) && !t.isEmpty()) {
                return Long.parseLong(t);
            }
            Long unit = t.length() > 2 ? SHARD_UNITS.get(t.substring(t.length() - 2).toUpperCase(Locale.ROOT)) : null;
            if (unit != null) {
                double value = Double.parseDouble(t.substring(0, t.length() - 2).strip());
                if (value > 0 && value * unit < Long.MAX_VALUE) {
                    return (long) (value * unit);
                }
            }
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new IllegalArgumentException("bad --max-shard-size '" + text + "' (bytes, or e.g. 500MB, 5GB)");
    }
}
