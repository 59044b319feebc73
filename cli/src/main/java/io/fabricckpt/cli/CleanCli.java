package io.fabricckpt.cli;

import io.fabricckpt.cli.format.Outlines;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;

@Command(name = "clean", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Remove what saves killed midway left beside a checkpoint.",
            "Removes .NAME.tmp-* files and directories whose writer is gone (older than 5 s, no lock",
            "held) and puts back a sharded checkpoint that an interrupted replacement set aside as",
            ".NAME.old-*. Every save does this for its own target; this does it on demand."})
final class CleanCli implements Callable<Integer> {
    @Parameters(paramLabel = "PATH", description = "the checkpoint file or sharded directory (it need not exist)")
    Path path;

    @Override
    public Integer call() {
        List<Path> cleaned = Outlines.clean(path);
        if (cleaned.isEmpty()) {
            System.out.println("nothing to clean beside " + path);
        }
        for (Path p : cleaned) {
            System.out.println("cleaned " + p);
        }
        return ExitCodes.OK;
    }
}
