package io.fabricckpt.cli;

import io.fabricckpt.TorchFiles;
import io.fabricckpt.cli.format.Outlines;
import java.nio.file.Path;
import java.util.concurrent.Callable;
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
            "refused, naming their keys."})
final class ConvertCli implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "SRC", description = "a checkpoint file or sharded directory, local or s3://")
    String sourceLocation;

    @Parameters(index = "1", paramLabel = "DST", description = "the file to write, local or s3://bucket/key (a name ending in"
            + " .safetensors: safetensors, else torch.save)")
    String targetLocation;

    @Option(names = "--allow-unsafe-globals",
            description = "write globals outside torch's weights_only allowlist too (only for files you trust)")
    boolean allowUnsafeGlobals;

    @Override
    public Integer call() {
        if (ObjectLocations.isRemote(sourceLocation) || ObjectLocations.isRemote(targetLocation)) {
            // Through the library: a sharded s3:// directory fetched chunk by chunk, an s3:// target uploaded
            // as a multipart upload (the object appears only when complete).
            ProgressBar bar = new ProgressBar("convert");
            TorchFiles.convert(sourceLocation, targetLocation, allowUnsafeGlobals, bar);
            bar.finish();
            System.out.println("wrote " + targetLocation);
            return ExitCodes.OK;
        }
        Path source = Paths.readable(Path.of(sourceLocation));
        Path target = Path.of(targetLocation);
        // Without libtorch, one storage (or tensor assembled from its chunks) in memory at a time; a
        // safetensors target through the library (the tensors flattened).
        if (Checkpoints.isSafetensorsName(target)) {
            ProgressBar bar = new ProgressBar("convert");
            TorchFiles.convert(source, target, allowUnsafeGlobals, bar);
            bar.finish();
        } else if (Outlines.isShardedDirectory(source)) {
            Outlines.convertSharded(source, target, allowUnsafeGlobals);
        } else {
            Outlines.convert(source, target, allowUnsafeGlobals);
        }
        System.out.println("wrote " + target);
        return ExitCodes.OK;
    }
}
