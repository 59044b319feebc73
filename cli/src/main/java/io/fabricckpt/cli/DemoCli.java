package io.fabricckpt.cli;

import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;

@Command(name = "demo", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Train a small model in Java with checkpoints; run it again to resume.",
            "Checkpoints every " + Demo.EVERY + " steps with Fabric.save; a second run resumes from the latest one",
            "(Fabric.load). The files load in Python with torch.load or Lightning's fabric.load."})
final class DemoCli implements Callable<Integer> {
    @Parameters(arity = "0..1", paramLabel = "DIR", defaultValue = "demo-checkpoints",
            description = "where the checkpoints go (default: ${DEFAULT-VALUE})")
    Path dir;

    @Override
    public Integer call() {
        Demo.run(dir);
        return ExitCodes.OK;
    }
}
