package io.fabricckpt.cli;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "launch", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Start N local JVMs as the ranks of one process group.",
            "RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT are set as torchrun sets them; output is prefixed",
            "by rank. Exits with the first non-zero exit code of the ranks, 124 on timeout."})
final class LaunchCli implements Callable<Integer> {
    @Option(names = {"-n", "--nproc"}, required = true, paramLabel = "N", description = "number of ranks (at least 1)")
    int processes;

    @Option(names = "--timeout", paramLabel = "SECONDS", description = "kill every rank after this long (default: 1800)")
    Double timeout;

    @Option(names = "--grace", paramLabel = "SECONDS",
            description = "how long the others may go on after one rank failed (default: 0)")
    Double grace;

    @Option(names = {"--cp", "-cp", "--classpath"}, paramLabel = "CLASSPATH",
            description = "class path entries put before this JVM's for the ranks")
    String classpath;

    @Parameters(index = "0", paramLabel = "CLASS", description = "the main class every rank runs")
    String mainClass;

    @Parameters(index = "1..*", paramLabel = "ARGS", description = "its arguments")
    List<String> args = new ArrayList<>();

    @Override
    public Integer call() {
        if (processes < 1) {
            throw new CliException(ExitCodes.USAGE, "-n must be at least 1, not " + processes);
        }
        List<String> out = new ArrayList<>(List.of("-n", Integer.toString(processes)));
        if (timeout != null) {
            out.addAll(List.of("--timeout", timeout.toString()));
        }
        if (grace != null) {
            out.addAll(List.of("--grace", grace.toString()));
        }
        if (classpath != null) {
            out.addAll(List.of("--cp", classpath));
        }
        out.add(mainClass);
        out.addAll(args);
        return LaunchCommand.run(out.toArray(String[]::new));
    }
}
