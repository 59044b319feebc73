package io.fabricckpt.cli;

import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "bench-s3", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Save and load of an s3:// object against Lightning's fabric.save/load to the same server.",
            "The server is the environment's (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), e.g.",
            "the S3Proxy the tests use: java -jar build/s3proxy/s3proxy.jar --properties FILE (docs/storage.md)."})
final class BenchS3Cli implements Callable<Integer> {
    @Option(names = "--size", paramLabel = "SIZE", description = "state size (default: 1G)")
    String size = "1G";

    @Option(names = "--reps", paramLabel = "N", description = "runs of each measurement (default: 3)")
    int reps = 3;

    @Option(names = "--bucket", paramLabel = "NAME", description = "the bucket (created if missing; default: fabric-ckpt-bench)")
    String bucket = "fabric-ckpt-bench";

    @Option(names = "--no-python", description = "skip the Python rows")
    boolean noPython;

    @Option(names = "--no-prime", description = "do not prime memory before the runs (see bench --help)")
    boolean noPrime;

    @Option(names = "--server-pid", paramLabel = "PID", description = {"the S3 server's process, whose CPU seconds"
            + " are shown (default: the process of this machine the endpoint's loopback port is listened on)"})
    Long serverPid;

    @Option(names = "--json", description = "one JSON object (every row, reference, ratio and target) instead of the table")
    boolean json;

    @Override
    public Integer call() throws Exception {
        return S3Bench.run(BenchCommand.parseSize(size), reps, bucket, !noPython, !noPrime, json, serverPid);
    }
}
