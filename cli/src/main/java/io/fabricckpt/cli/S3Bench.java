package io.fabricckpt.cli;

import static io.fabricckpt.cli.BenchSystem.MIB;
import static io.fabricckpt.cli.BenchSystem.human;

import io.fabricckpt.TorchFiles;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.io.s3.S3Objects;
import io.fabricckpt.internal.io.s3.S3Settings;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.function.BiFunction;
import java.util.function.Function;
import java.util.function.Supplier;
import java.util.stream.Stream;
import software.amazon.awssdk.core.sync.RequestBody;
import software.amazon.awssdk.services.s3.S3Client;
import software.amazon.awssdk.services.s3.S3Configuration;
import software.amazon.awssdk.services.s3.model.BucketAlreadyOwnedByYouException;

/**
 * {@code fabric-ckpt bench-s3}: saves and loads of an {@code s3://} object on the S3 server the
 * environment names (AWS_ENDPOINT_URL and credentials, as for every s3:// location), against Lightning's
 * {@code fabric.save/load} of the same state to the same server (bench/s3_bench.py, through s3fs) and a
 * single-stream PUT of the same file (what a plain {@code aws s3 cp} of one stream does) and a single-stream
 * GET of it whose bytes are dropped (the server's own read rate, nothing parsed or filled), in the same
 * run after a warm-up round, with the extra peak resident memory of each, and the targets: save and
 * load >= 3x Lightning, extra memory of a save <= 128 MiB.
 */
final class S3Bench {
    private S3Bench() {}

    /** CPU seconds one run of an operation took on average: the client's (this JVM, or Python), the server's (NaN: unknown). */
    private record Cpu(double client, double server) {}

    static int run(long size, int reps, String bucket, boolean python, boolean prime, boolean json, Long serverPid)
            throws Exception {
        if (System.getenv("AWS_ENDPOINT_URL") == null && System.getenv("AWS_ENDPOINT_URL_S3") == null) {
            System.err.println("fabric-ckpt bench-s3: note: no AWS_ENDPOINT_URL, so this measures AWS itself");
        }
        S3Settings settings = S3Settings.fromEnvironment();
        ProcessCpu server = serverPid != null ? ProcessCpu.of(serverPid) : localServer(settings);
        if (server != null) {
            System.err.printf(Locale.ROOT, "fabric-ckpt bench-s3: the server is process %d of this machine: its CPU seconds"
                    + " are shown%n", server.pid());
        }
        ProcessCpu self = ProcessCpu.self();
        Map<String, Cpu> cpu = new LinkedHashMap<>();
        S3Client client = client(settings);
        try {
            client.createBucket(b -> b.bucket(bucket));
        } catch (BucketAlreadyOwnedByYouException ignored) {
            // the bucket of an earlier run
        } catch (software.amazon.awssdk.services.s3.model.S3Exception e) {
            if (e.statusCode() != 409) {
                throw e;
            }
        }
        String url = "s3://" + bucket + "/java.ckpt";
        // Primed as bench's runs are (BenchSystem.prime): a load's fresh memory is then as warm for each tool.
        long primeBytes = prime ? 2 * size + 256 * MIB : 0;
        JavaBench java = new JavaBench(primeBytes);
        // A row of `reps` timed calls, with the CPU seconds both sides spent inside the calls (not priming).
        BiFunction<String, Supplier<Object>, BenchRow> timed = (op, call) -> {
            double[] used = new double[2];
            BenchRow row = java.repeat(size, op, "-", reps, null, () -> {
                double client0 = self.seconds();
                double server0 = server != null ? server.seconds() : Double.NaN;
                Object result = call.get();
                used[0] += self.seconds() - client0;
                used[1] += server != null ? server.seconds() - server0 : Double.NaN;
                return result;
            });
            cpu.put(op, new Cpu(used[0] / reps, used[1] / reps));
            return row;
        };
        Map<String, Object> state = JavaBench.buildState(size);
        List<BenchRow> rows = new ArrayList<>();
        System.err.printf(Locale.ROOT, "[%s] Java: save and load of %s%n", human(size), url);
        java.repeat(size, "warm-up", "-", 1, null, () -> { // JIT, SDK classes, connections
            TorchFiles.write(url, state, WriteOptions.DEFAULT, null);
            return TorchFiles.read(url, ReadOptions.DEFAULT, null);
        });
        rows.add(timed.apply("Java save to S3", () -> {
            TorchFiles.write(url, state, WriteOptions.DEFAULT, null);
            return null;
        }));
        rows.add(timed.apply("Java load from S3", () -> TorchFiles.read(url, ReadOptions.DEFAULT, null)));

        System.err.printf(Locale.ROOT, "[%s] single-stream PUT of the same file%n", human(size));
        Path file = Files.createTempFile("fabric-ckpt-bench-s3", ".ckpt");
        try {
            TorchFiles.write(file, state, WriteOptions.DEFAULT.withFsync(false));
            String key = "single-stream.ckpt";
            client.putObject(b -> b.bucket(bucket).key(key), RequestBody.fromFile(file)); // warm-up
            rows.add(timed.apply("single-stream PUT (one file)", () -> {
                client.putObject(b -> b.bucket(bucket).key(key), RequestBody.fromFile(file));
                return null;
            }));
            // The server's own read rate: one GET stream, its bytes dropped (no parse, no memory to fill).
            byte[] discard = new byte[1 << 20];
            rows.add(timed.apply("single-stream GET (discarded)", () -> {
                try (var in = client.getObject(b -> b.bucket(bucket).key(key))) {
                    while (in.read(discard) >= 0) {
                        // dropped
                    }
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
                return null;
            }));
        } finally {
            Files.deleteIfExists(file);
        }
        if (python) {
            System.err.printf(Locale.ROOT, "[%s] Python: fabric.save/load of s3://%s/python.ckpt%n", human(size), bucket);
            rows.addAll(pythonRows(size, reps, "s3://" + bucket + "/python.ckpt", prime, server, cpu));
        }
        List<BenchTarget> targets = Stream.of(
                BenchTarget.ratio("S3 save >= 3x Lightning fabric.save", find(rows, "Java save to S3"),
                        find(rows, "fabric.save to S3"), 3.0),
                BenchTarget.ratio("S3 load >= 3x Lightning fabric.load", find(rows, "Java load from S3"),
                        find(rows, "fabric.load from S3"), 3.0),
                find(rows, "Java save to S3") == null ? null : BenchTarget.atMost("S3 save extra memory <= 128 MiB",
                        find(rows, "Java save to S3"), find(rows, "Java save to S3").extraRss() / (double) MIB,
                        " MiB", 128))
                .filter(Objects::nonNull).toList();
        Function<BenchRow, List<BenchRow>> references = r -> r.op().startsWith("Java save")
                ? Stream.of(find(rows, "fabric.save to S3"), find(rows, "single-stream PUT (one file)"))
                        .filter(Objects::nonNull).toList()
                : r.op().startsWith("Java load") ? Stream.of(find(rows, "fabric.load from S3"),
                        find(rows, "single-stream GET (discarded)")).filter(Objects::nonNull).toList() : List.of();
        int cores = Runtime.getRuntime().availableProcessors();
        List<String> ceilings = server == null ? List.of() : Stream.of(
                ceiling(rows, cpu, "save", "fabric.save to S3", cores),
                ceiling(rows, cpu, "load", "fabric.load from S3", cores)).filter(Objects::nonNull).toList();
        if (json) {
            Map<String, Object> fields = new LinkedHashMap<>();
            fields.put("sizes", List.of(size));
            fields.put("reps", reps);
            fields.put("endpoint", Objects.toString(System.getenv("AWS_ENDPOINT_URL"), "AWS"));
            fields.put("python", python);
            fields.put("cores", cores);
            fields.put("primed", prime);
            Map<String, Object> cpuJson = new LinkedHashMap<>();
            cpu.forEach((op, c) -> cpuJson.put(op, Map.of("client", c.client(),
                    "server", Double.isNaN(c.server()) ? "unknown" : c.server())));
            fields.put("cpu_seconds_per_run", cpuJson);
            fields.put("server_bound", ceilings);
            System.out.println(BenchReport.json("bench-s3", fields, rows, targets, references));
            return 0;
        }
        System.out.printf(Locale.ROOT, "%-6s %-32s %10s %8s %7s %10s %6s %7s  %s%n", "size", "operation", "median ms",
                "best ms", "GB/s", "+peak MiB", "CPU s", "srv CPU", "Java vs references (same run, same server)");
        for (BenchRow r : rows) {
            String vs = String.join(", ", references.apply(r).stream().map(ref -> String.format(Locale.ROOT,
                    "%.2fx %s", ref.median() / r.median(), ref.op())).toList());
            Cpu c = cpu.getOrDefault(r.op(), new Cpu(Double.NaN, Double.NaN));
            System.out.printf(Locale.ROOT, "%-6s %-32s %10.1f %8.1f %7.2f %10.0f %6s %7s  %s%n", human(size), r.op(),
                    r.median() * 1e3, r.best() * 1e3, r.gbps(), r.extraRss() / (double) MIB, seconds(c.client()),
                    seconds(c.server()), vs);
        }
        System.out.println();
        BenchReport.printTargets(targets, System.out);
        ceilings.forEach(System.out::println);
        System.out.println("Endpoint " + Objects.toString(System.getenv("AWS_ENDPOINT_URL"), "AWS") + "; part size and"
                + " concurrency from FABRICCKPT_S3_PART_SIZE / FABRICCKPT_S3_CONCURRENCY (defaults 16M, 4). +peak MiB:"
                + " peak resident memory during the operation minus resident memory before it. CPU s: CPU seconds"
                + " (user + system, all threads) of one run, averaged, of the client process (this JVM, or"
                + " Python's) and of the server (" + (server == null ? "unknown: not a process of this machine, or"
                + " name it with --server-pid" : "process " + server.pid()) + ")." + (prime ? " Every timed run (both"
                + " clients) starts right after touching and freeing 2x size + 256 MiB of memory (--no-prime: not):"
                + " see BenchSystem.prime." : ""));
        return 0;
    }

    private static String seconds(double s) {
        return Double.isNaN(s) ? "-" : String.format(Locale.ROOT, "%.2f", s);
    }

    /**
     * What the server's own CPU time allows of {@code kind} (save or load) on this machine: the least
     * CPU seconds it spent on one run of such an operation, whoever the client, spread over every core;
     * no client, however cheap, is faster than that, nor faster than Lightning's {@code reference} by more
     * than its ratio to it. Null without those rows.
     */
    private static String ceiling(List<BenchRow> rows, Map<String, Cpu> cpu, String kind, String reference, int cores) {
        BenchRow lightning = find(rows, reference);
        double least = rows.stream().filter(r -> isKind(r.op(), kind) && cpu.containsKey(r.op()))
                .mapToDouble(r -> cpu.get(r.op()).server()).filter(v -> !Double.isNaN(v)).min().orElse(Double.NaN);
        if (lightning == null || Double.isNaN(least)) {
            return null;
        }
        double floor = least / cores;
        return String.format(Locale.ROOT, "Server-bound %s: the server spent at least %.2f CPU s on each %s above; on"
                + " %d cores no client's %s takes less than %.0f ms, so none is faster than %s by more than %.2fx.",
                kind, least, kind, cores, kind, floor * 1e3, reference, lightning.median() / floor);
    }

    private static boolean isKind(String op, String kind) {
        return kind.equals("save") ? op.contains("save") || op.contains("PUT") : op.contains("load") || op.contains("GET");
    }

    /** The local process an endpoint on this machine's loopback listens from, or null (another machine, AWS). */
    private static ProcessCpu localServer(S3Settings settings) {
        URI endpoint = settings.endpoint();
        if (endpoint == null || endpoint.getHost() == null) {
            return null;
        }
        String host = endpoint.getHost();
        boolean loopback = host.equals("localhost") || host.startsWith("127.") || host.equals("[::1]")
                || host.equals("::1");
        int port = endpoint.getPort() != -1 ? endpoint.getPort() : endpoint.getScheme().equals("https") ? 443 : 80;
        return loopback ? ProcessCpu.listeningOn(port).orElse(null) : null;
    }

    private static BenchRow find(List<BenchRow> rows, String op) {
        return rows.stream().filter(r -> r.op().equals(op)).findFirst().orElse(null);
    }

    /**
     * A client for the bench's own bucket and reference PUT, configured from the environment as the
     * library's, but with the SDK's default chunked encoding: over http a 1 GiB PUT's signed payload must
     * be chunked (S3Proxy buffers an unchunked one to check its hash, and refuses it above 128 MiB).
     */
    private static S3Client client(S3Settings settings) {
        return S3Objects.clientBuilder(settings)
                .serviceConfiguration(S3Configuration.builder().chunkedEncodingEnabled(true).build()).build();
    }

    /** Lightning's rows (bench/s3_bench.py), with the CPU seconds of their runs put into {@code cpu}. */
    private static List<BenchRow> pythonRows(long size, int reps, String url, boolean prime, ProcessCpu server,
            Map<String, Cpu> cpu) {
        List<String> command = new ArrayList<>(List.of(BenchSystem.python(),
                BenchSystem.benchScript("s3_bench.py").toString(), "--bytes", Long.toString(size), "--url", url,
                "--reps", Integer.toString(reps)));
        if (prime) {
            command.add("--prime");
        }
        if (server != null) {
            command.addAll(List.of("--server-pid", Long.toString(server.pid())));
        }
        String out = BenchSystem.exec(command);
        List<BenchRow> rows = new ArrayList<>();
        for (String line : out.split("\n")) {
            String[] f = line.split("\t");
            if (f.length == 6) {
                double[] seconds = Stream.of(f[2].split(",")).mapToDouble(Double::parseDouble).toArray();
                rows.add(new BenchRow(size, f[0], f[1], seconds, Long.parseLong(f[3])));
                double serverSeconds = Double.parseDouble(f[5]);
                cpu.put(f[0], new Cpu(Double.parseDouble(f[4]), serverSeconds < 0 ? Double.NaN : serverSeconds));
            }
        }
        if (rows.isEmpty()) {
            throw new IllegalStateException("bench/s3_bench.py printed no results:\n" + out);
        }
        return rows;
    }
}
