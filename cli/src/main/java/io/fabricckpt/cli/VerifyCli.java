package io.fabricckpt.cli;

import io.fabricckpt.cli.format.Outlines;
import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointStorageException;
import io.fabricckpt.internal.io.s3.StagedObject;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import java.util.function.Supplier;
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
        // Record by record (or item by item) without libtorch, in bounded memory.
        if (!ObjectLocations.isRemote(location)) {
            try {
                System.out.println(Outlines.verify(Paths.readable(Path.of(location))));
            } catch (CheckpointException | Outlines.FormatException e) {
                throw new CliException(ExitCodes.CHECK_FAILED, e.getMessage());
            }
            return ExitCodes.OK;
        }
        // An s3:// checkpoint is staged with its structure only (as for inspect, a sharded prefix with every
        // chunk's); the bytes verify checksums are read from the store into memory as it reads them.
        try (StagedObject staged = stage(location)) {
            String summary = corruptUnless(staged, () -> Outlines.verify(staged.path()));
            System.out.println(staged.naming(summary, true));
            System.err.printf("%s: read %d of its %d bytes, none written to disk but its structure%n", location,
                    staged.fetchedBytes(), staged.size());
        }
        return ExitCodes.OK;
    }

    /** The checkpoint staged for reading; a structure too broken for that is corrupt. */
    private static StagedObject stage(String location) {
        try {
            return StagedObject.forReading(location, FormatStaging.INSTANCE);
        } catch (Outlines.FormatException e) {
            throw new CliException(ExitCodes.CHECK_FAILED, e.getMessage());
        }
    }

    /** What {@code check} gives; its failure (the checkpoint is corrupt) the exit code saying so, naming the object. */
    private static <T> T corruptUnless(StagedObject staged, Supplier<T> check) {
        try {
            return check.get();
        } catch (CheckpointStorageException e) {
            throw e; // the store failed, not the checkpoint
        } catch (CheckpointException | Outlines.FormatException e) {
            throw new CliException(ExitCodes.CHECK_FAILED, staged.naming(e.getMessage()));
        }
    }
}
