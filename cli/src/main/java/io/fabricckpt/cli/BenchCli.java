package io.fabricckpt.cli;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "bench", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Save/load throughput against Python Lightning, torch and dd/cat.",
            "Measures fabric-ckpt, Lightning's fabric.save/load, torch.save/torch.load and dd/cat on the same",
            "disk and prints one table."})
final class BenchCli implements Callable<Integer> {
    @Option(names = {"--size", "--sizes"}, paramLabel = "SIZES", description = "state sizes, comma-separated (default: 256M,1G)")
    String sizes;

    @Option(names = "--4g", description = "add a 4 GiB state")
    boolean fourG;

    @Option(names = "--reps", paramLabel = "N", description = "runs of each measurement")
    Integer reps;

    @Option(names = "--dir", paramLabel = "DIR", description = "where the files go (default: a temporary directory)")
    Path dir;

    @Option(names = "--no-python", description = "skip the Python rows")
    boolean noPython;

    @Option(names = "--no-cold", description = "cached runs only (do not drop the page cache)")
    boolean noCold;

    @Option(names = "--no-prime", description = "do not prime memory before the runs")
    boolean noPrime;

    @Option(names = "--json", description = "one JSON object (every row, reference, ratio and target) instead of the table")
    boolean json;

    @Override
    public Integer call() {
        List<String> args = new ArrayList<>();
        if (sizes != null) {
            args.addAll(List.of("--size", sizes));
        }
        if (fourG) {
            args.add("--4g");
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
        if (noCold) {
            args.add("--no-cold");
        }
        if (noPrime) {
            args.add("--no-prime");
        }
        if (json) {
            args.add("--json");
        }
        return BenchCommand.run(args.toArray(String[]::new));
    }
}
