package io.fabricckpt.cli;

import io.fabricckpt.cli.format.Outlines;
import io.fabricckpt.core.CheckpointException;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;

@Command(name = "verify", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Check a checkpoint for corruption.",
            "Checks every record's CRC-32, the pickle, storages and tensor views; for a sharded",
            "directory every shard item, and that the chunks cover every tensor.",
            "Exit code 1 when the checkpoint is corrupt, 3 when it cannot be read at all."})
final class VerifyCli implements Callable<Integer> {
    @Parameters(paramLabel = "PATH",
            description = "a torch.save or safetensors file, or a sharded directory; local or s3://")
    String location;

    @Override
    public Integer call() {
        // Record by record (or item by item) without libtorch, in bounded memory; an s3:// checkpoint is
        // first copied whole to the temporary folder (to disk), then verified as a local one.
        try (StagedObject staged = ObjectLocations.isRemote(location) ? StagedObject.whole(location) : null) {
            Path path = staged != null ? staged.path() : Paths.readable(Path.of(location));
            try {
                String summary = Outlines.verify(path);
                System.out.println(staged != null ? staged.naming(summary, true) : summary);
            } catch (CheckpointException | Outlines.FormatException e) {
                throw new CliException(ExitCodes.CHECK_FAILED, staged != null ? staged.naming(e.getMessage())
                        : e.getMessage());
            }
        }
        return ExitCodes.OK;
    }
}
