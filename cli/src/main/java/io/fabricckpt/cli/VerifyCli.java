package io.fabricckpt.cli;

import io.fabricckpt.TorchFiles;
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
        if (ObjectLocations.isRemote(location)) {
            try {
                System.out.println(TorchFiles.verify(location)); // through the library: every CRC-32, every tensor
            } catch (io.fabricckpt.core.CheckpointStorageException e) { // missing, denied, unreachable
                throw new CliException(ExitCodes.IO, e.getMessage());
            } catch (CheckpointException e) {
                throw new CliException(ExitCodes.CHECK_FAILED, e.getMessage());
            }
            return ExitCodes.OK;
        }
        Path path = Paths.readable(Path.of(location));
        try {
            // Record by record (or item by item) without libtorch, in bounded memory.
            System.out.println(Outlines.verify(path));
        } catch (CheckpointException | Outlines.FormatException e) {
            throw new CliException(ExitCodes.CHECK_FAILED, e.getMessage());
        }
        return ExitCodes.OK;
    }
}
