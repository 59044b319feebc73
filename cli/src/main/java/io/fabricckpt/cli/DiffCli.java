package io.fabricckpt.cli;

import io.fabricckpt.cli.format.Outlines;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;

@Command(name = "diff", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Compare two checkpoints.",
            "Keys only in one of them, dtype/shape changes, the largest absolute difference of each tensor.",
            "Exit code 0 when they are equal, 1 when they differ."})
final class DiffCli implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "A", description = "a checkpoint file or sharded directory")
    Path a;

    @Parameters(index = "1", paramLabel = "B", description = "the checkpoint to compare it with")
    Path b;

    @Override
    public Integer call() {
        // Both as outlines: their tensors compared piece by piece from the files, without libtorch.
        Object left = Outlines.read(Paths.readable(a)), right = Outlines.read(Paths.readable(b));
        return Diff.run(left, right, System.out) ? ExitCodes.OK : ExitCodes.CHECK_FAILED;
    }
}
