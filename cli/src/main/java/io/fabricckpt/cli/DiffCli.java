package io.fabricckpt.cli;

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
        Object[] both = Checkpoints.readForComparison(Paths.readable(a), Paths.readable(b));
        return Diff.run(both[0], both[1], System.out) ? ExitCodes.OK : ExitCodes.CHECK_FAILED;
    }
}
