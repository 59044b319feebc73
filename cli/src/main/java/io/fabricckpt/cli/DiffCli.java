package io.fabricckpt.cli;

import io.fabricckpt.cli.format.Outlines;
import io.fabricckpt.internal.io.s3.StagedObject;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;

@Command(name = "diff", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Compare two checkpoints.",
            "Keys only in one of them, dtype/shape changes, the largest absolute difference of each tensor.",
            "Exit code 0 when they are equal, 1 when they differ."})
final class DiffCli implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "A", description = {"a checkpoint file or sharded directory,",
        "local or s3://bucket/key (s3://bucket/prefix/)"})
    String a;

    @Parameters(index = "1", paramLabel = "B", description = "the checkpoint to compare it with")
    String b;

    @Override
    public Integer call() {
        // Both as outlines: their tensors compared piece by piece from the files, without libtorch. An
        // s3:// checkpoint is staged with its structure only; its tensors' bytes are read from the store
        // into memory as they are compared (nothing of them on disk).
        try (StagedObject left = stage(a); StagedObject right = stage(b)) {
            try {
                Object x = Outlines.read(left == null ? Paths.readable(Path.of(a)) : left.path());
                Object y = Outlines.read(right == null ? Paths.readable(Path.of(b)) : right.path());
                return Diff.run(x, y, System.out) ? ExitCodes.OK : ExitCodes.CHECK_FAILED;
            } catch (Outlines.FormatException e) {
                throw new CliException(ExitCodes.IO, named(named(e.getMessage(), left), right));
            }
        }
    }

    private static StagedObject stage(String location) {
        return ObjectLocations.isRemote(location) ? StagedObject.forReading(location, FormatStaging.INSTANCE) : null;
    }

    private static String named(String text, StagedObject staged) {
        return staged == null ? text : staged.naming(text);
    }
}
