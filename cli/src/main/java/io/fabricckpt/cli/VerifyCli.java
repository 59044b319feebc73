package io.fabricckpt.cli;

import io.fabricckpt.cli.format.CheckedRange;
import io.fabricckpt.cli.format.Outlines;
import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.internal.io.s3.S3Objects;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
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
        // Record by record (or item by item) without libtorch, in bounded memory.
        if (!ObjectLocations.isRemote(location)) {
            try {
                System.out.println(Outlines.verify(Paths.readable(Path.of(location))));
            } catch (CheckpointException | Outlines.FormatException e) {
                throw new CliException(ExitCodes.CHECK_FAILED, e.getMessage());
            }
            return ExitCodes.OK;
        }
        // An s3:// checkpoint is staged as for inspect (its structure fetched, holes where the record and
        // tensor bytes lie); its structure is checked, then those bytes are streamed from the store and
        // checksummed on the way (no copy on disk), and the verify takes their CRC-32s.
        try (StagedObject staged = stage(location)) {
            List<CheckedRange> ranges = corruptUnless(staged, () -> Outlines.verifyRanges(staged.path()));
            StreamedChecksums streamed = new StreamedChecksums();
            Map<CheckedRange, Integer> crcs = streamed.compute(S3Objects.shared(), staged.inHoles(ranges));
            System.out.println(staged.naming(corruptUnless(staged, () -> Outlines.verify(staged.path(), crcs)), true));
            System.err.printf("%s: read %d of its %d bytes, none written to disk%n", location,
                    staged.fetchedBytes() + streamed.streamedBytes(), staged.size());
        }
        return ExitCodes.OK;
    }

    /** The checkpoint staged for its outline; a structure too broken for that is corrupt. */
    private static StagedObject stage(String location) {
        try {
            return StagedObject.forVerify(location);
        } catch (Outlines.FormatException e) {
            throw new CliException(ExitCodes.CHECK_FAILED, e.getMessage());
        }
    }

    /** What {@code check} gives; its failure (the checkpoint is corrupt) the exit code saying so, naming the object. */
    private static <T> T corruptUnless(StagedObject staged, Supplier<T> check) {
        try {
            return check.get();
        } catch (CheckpointException | Outlines.FormatException e) {
            throw new CliException(ExitCodes.CHECK_FAILED, staged.naming(e.getMessage()));
        }
    }
}
