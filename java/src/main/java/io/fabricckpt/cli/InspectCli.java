package io.fabricckpt.cli;

import io.fabricckpt.TorchFiles;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "inspect", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = "The keys, dtypes, shapes and sizes in a checkpoint file or sharded directory.")
final class InspectCli implements Callable<Integer> {
    @Parameters(paramLabel = "PATH", description = "a torch.save file or a sharded (torch.distributed.checkpoint) directory")
    Path path;

    @Option(names = "--json", description = "print the tree as JSON")
    boolean json;

    @Override
    public Integer call() {
        Object checkpoint = TorchFiles.read(Paths.readable(path));
        if (json) {
            System.out.println(Inspect.json(checkpoint));
        } else {
            Inspect.print(checkpoint, System.out);
        }
        return ExitCodes.OK;
    }
}
