package io.fabricckpt.cli;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "bench-sharded", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = "Sharded and full saves/loads across JVM ranks against Lightning's FSDP2.")
final class BenchShardedCli implements Callable<Integer> {
    @Option(names = "--size", paramLabel = "SIZE", description = "model size (default: 256M)")
    String size;

    @Option(names = "--ranks", paramLabel = "N", description = "JVM ranks (default: 2)")
    Integer ranks;

    @Option(names = "--reps", paramLabel = "N", description = "runs of each measurement (default: 3)")
    Integer reps;

    @Option(names = "--dir", paramLabel = "DIR", description = "where the files go (default: a temporary directory)")
    Path dir;

    @Option(names = "--no-python", description = "skip the Python rows")
    boolean noPython;

    @Option(names = "--json", description = "one JSON object (every row, reference, ratio and target) instead of the table")
    boolean json;

    @Override
    public Integer call() {
        List<String> args = new ArrayList<>();
        if (size != null) {
            args.addAll(List.of("--size", size));
        }
        if (ranks != null) {
            args.addAll(List.of("--ranks", ranks.toString()));
        }
        if (reps != null) {
            args.addAll(List.of("--reps", reps.toString()));
        }
        if (dir != null) {
            args.addAll(List.of("--dir", dir.toString()));
        }
        if (noPython) {
            args.add("--no-python");
        }
        if (json) {
            args.add("--json");
        }
        return ShardedBench.run(args.toArray(String[]::new));
    }
}
