package io.fabricckpt.dist;

import io.fabricckpt.internal.FabricNative;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.Consumer;

/**
 * Starts N local JVMs as the ranks of one process group, like {@code torchrun --nproc-per-node N}:
 * each runs {@code mainClass} with {@code RANK}, {@code LOCAL_RANK}, {@code WORLD_SIZE},
 * {@code LOCAL_WORLD_SIZE}, {@code MASTER_ADDR=127.0.0.1} and {@code MASTER_PORT} (a free port) set,
 * so {@link ProcessGroup#fromEnvironment()} joins them, and {@code OMP_NUM_THREADS} (unless set) to
 * the cores divided among the ranks, as Lightning's launchers do. Their output is streamed line by line with a
 * {@code [rank i]} prefix. When a rank fails (non-zero exit), the others get {@link #failureGrace}
 * to finish (default none: they are killed at once, as torchrun does); when {@link #timeout} passes,
 * every rank still running is killed.
 *
 * <pre>{@code
 * LocalLauncher.Result r = new LocalLauncher(2).timeout(Duration.ofMinutes(1)).launch("com.example.Train", "arg");
 * if (!r.succeeded()) throw new IllegalStateException(r.describe());
 * }</pre>
 *
 * <p>From a shell: {@code java -cp CP io.fabricckpt.dist.LocalLauncher -n 2 [--timeout S] [--grace S]
 * [--cp EXTRA] CLASS [ARGS...]} exits with the first non-zero exit code of the ranks (124 on timeout);
 * {@code --cp} puts more class path entries before this JVM's for the ranks.
 */
public final class LocalLauncher {
    private final int processes;
    private Duration timeout = Duration.ofMinutes(30);
    private Duration failureGrace = Duration.ZERO;
    private String classpath = System.getProperty("java.class.path");
    private List<String> jvmArgs = List.of();
    private Map<String, String> environment = Map.of();
    private Consumer<String> output = System.out::println;

    public LocalLauncher(int processes) {
        if (processes < 1) {
            throw new IllegalArgumentException("at least one process, not " + processes);
        }
        this.processes = processes;
    }

    /**
     * JavaCPP extracts the native libraries into its cache on first use; ranks starting together on a
     * machine whose cache is still empty would extract the same files at once, and one rank can map a
     * library while another rewrites it (a SIGBUS, JavaCPP issue 608). Loading them here first, once,
     * leaves the ranks only finding them. A failure here is left for the ranks to report.
     */
    private static void extractNativeLibraries() {
        try {
            FabricNative.load();
        } catch (RuntimeException | LinkageError e) {
            // the ranks load them again and say what is wrong
        }
    }

    /** The cores of this host divided among {@code ranks} (at least one each), as Lightning suggests. */
    static int threadsPerRank(int ranks) {
        return Math.max(1, Runtime.getRuntime().availableProcessors() / ranks);
    }

    /** The longest the whole run may take; then every rank still running is killed. */
    public LocalLauncher timeout(Duration timeout) {
        this.timeout = positive(timeout, "timeout");
        return this;
    }

    /** How long the other ranks may go on after one failed, before they are killed (default zero). */
    public LocalLauncher failureGrace(Duration grace) {
        Objects.requireNonNull(grace, "grace");
        if (grace.isNegative()) {
            throw new IllegalArgumentException("the grace must not be negative");
        }
        this.failureGrace = grace;
        return this;
    }

    /** The ranks' class path (default: this JVM's). */
    public LocalLauncher classpath(String classpath) {
        this.classpath = Objects.requireNonNull(classpath, "classpath");
        return this;
    }

    /** Options for each rank's JVM, before the main class. */
    public LocalLauncher jvmArgs(List<String> jvmArgs) {
        this.jvmArgs = List.copyOf(jvmArgs);
        return this;
    }

    /** Extra environment variables for every rank (the rendezvous variables are set last). */
    public LocalLauncher environment(Map<String, String> environment) {
        this.environment = Map.copyOf(environment);
        return this;
    }

    /** Where the prefixed output lines go (default: System.out). */
    public LocalLauncher output(Consumer<String> output) {
        this.output = Objects.requireNonNull(output, "output");
        return this;
    }

    /** How the ranks ended. */
    public record Result(List<Integer> exitCodes, List<Boolean> killed, boolean timedOut, List<List<String>> output,
            int masterPort) {
        /** Every rank exited by itself with 0. */
        public boolean succeeded() {
            return !timedOut && exitCodes.stream().allMatch(c -> c == 0);
        }

        /** What rank {@code rank} printed (stdout and stderr), without the prefix. */
        public List<String> output(int rank) {
            return output.get(rank);
        }

        /** One line per rank: its exit code, and whether it was killed. */
        public String describe() {
            StringBuilder out = new StringBuilder(timedOut ? "timed out; " : "");
            for (int i = 0; i < exitCodes.size(); i++) {
                out.append(i == 0 ? "" : ", ").append("rank ").append(i).append(": exit ").append(exitCodes.get(i));
                if (killed.get(i)) {
                    out.append(" (killed)");
                }
            }
            return out.toString();
        }
    }

    /** Runs {@code mainClass} in N JVMs and waits for them. */
    public Result launch(String mainClass, String... args) throws IOException, InterruptedException {
        return launch(mainClass, Arrays.asList(args));
    }

    /** Runs {@code mainClass} in N JVMs and waits for them (at most {@link #timeout}). */
    public Result launch(String mainClass, List<String> args) throws IOException, InterruptedException {
        Objects.requireNonNull(mainClass, "mainClass");
        extractNativeLibraries();
        int port = freePort();
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<Process> running = new ArrayList<>();
        List<Thread> readers = new ArrayList<>();
        List<List<String>> lines = new ArrayList<>();
        boolean[] killed = new boolean[processes];
        boolean timedOut = false;
        try {
            for (int rank = 0; rank < processes; rank++) {
                List<String> command = new ArrayList<>();
                command.add(java);
                command.addAll(jvmArgs);
                command.add("-cp");
                command.add(classpath);
                command.add(mainClass);
                command.addAll(args);
                ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true);
                Map<String, String> env = builder.environment();
                env.putAll(environment);
                // As Lightning's launchers (_suggested_max_num_threads) and torchrun: ranks sharing the
                // host share its cores, instead of each rank's OpenMP and copy threads taking all of them.
                env.putIfAbsent("OMP_NUM_THREADS", Integer.toString(threadsPerRank(processes)));
                env.put("MASTER_ADDR", "127.0.0.1");
                env.put("MASTER_PORT", Integer.toString(port));
                env.put("RANK", Integer.toString(rank));
                env.put("LOCAL_RANK", Integer.toString(rank));
                env.put("WORLD_SIZE", Integer.toString(processes));
                env.put("LOCAL_WORLD_SIZE", Integer.toString(processes));
                env.put("GROUP_RANK", "0");
                Process process = builder.start();
                running.add(process);
                List<String> captured = Collections.synchronizedList(new ArrayList<>());
                lines.add(captured);
                readers.add(stream(process, rank, captured));
            }
            long deadline = System.nanoTime() + timeout.toNanos();
            long killAt = Long.MAX_VALUE;
            while (running.stream().anyMatch(Process::isAlive)) {
                long now = System.nanoTime();
                if (killAt == Long.MAX_VALUE && running.stream().anyMatch(p -> !p.isAlive() && p.exitValue() != 0)) {
                    killAt = now + failureGrace.toNanos();
                }
                if (now - deadline >= 0 || now - killAt >= 0) {
                    timedOut = now - deadline >= 0;
                    killAll(running, killed);
                    break;
                }
                Thread.sleep(20);
            }
            List<Integer> codes = new ArrayList<>();
            for (Process p : running) {
                codes.add(p.waitFor());
            }
            for (Thread t : readers) {
                t.join(5_000);
            }
            List<Boolean> killedList = new ArrayList<>();
            List<List<String>> outputs = new ArrayList<>();
            for (int i = 0; i < processes; i++) {
                killedList.add(killed[i]);
                outputs.add(List.copyOf(lines.get(i)));
            }
            return new Result(List.copyOf(codes), List.copyOf(killedList), timedOut, List.copyOf(outputs), port);
        } finally {
            for (Process p : running) { // an exception or an interrupt: leave nothing behind
                if (p.isAlive()) {
                    p.destroyForcibly();
                }
            }
        }
    }

    private static void killAll(List<Process> running, boolean[] killed) throws InterruptedException {
        for (int i = 0; i < running.size(); i++) {
            Process p = running.get(i);
            if (p.isAlive()) {
                killed[i] = true;
                p.descendants().forEach(ProcessHandle::destroyForcibly);
                p.destroyForcibly();
            }
        }
    }

    private Thread stream(Process process, int rank, List<String> captured) {
        String prefix = "[rank " + rank + "] ";
        Thread t = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(
                    new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
                String line;
                while ((line = in.readLine()) != null) {
                    captured.add(line);
                    synchronized (LocalLauncher.class) {
                        output.accept(prefix + line);
                    }
                }
            } catch (IOException e) {
                // the process was killed: its pipe closed
            }
        }, "launcher-rank-" + rank);
        t.setDaemon(true);
        t.start();
        return t;
    }

    /** A port that was free a moment ago on loopback (rank 0's TCPStore binds it). */
    public static int freePort() {
        try (ServerSocket socket = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            socket.setReuseAddress(true);
            return socket.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException("no free port on loopback", e);
        }
    }

    private static Duration positive(Duration d, String what) {
        Objects.requireNonNull(d, what);
        if (d.isNegative() || d.isZero()) {
            throw new IllegalArgumentException("the " + what + " must be positive, not " + d);
        }
        return d;
    }

    private static final String USAGE =
            "usage: launch -n N [--timeout SECONDS] [--grace SECONDS] [--cp CLASSPATH] CLASS [ARGS...]";

    /** {@code LocalLauncher -n N [--timeout SECONDS] [--grace SECONDS] [--cp CLASSPATH] CLASS [ARGS...]}. */
    public static void main(String[] args) throws Exception {
        System.exit(run(args, System.out, System.err));
    }

    /** The command line behind {@link #main}; returns the exit code. */
    public static int run(String[] args, PrintStream out, PrintStream err) throws IOException, InterruptedException {
        int n = -1;
        Duration timeout = Duration.ofMinutes(30);
        Duration grace = Duration.ZERO;
        String classpath = System.getProperty("java.class.path");
        int i = 0;
        try {
            for (; i < args.length && args[i].startsWith("-"); i++) {
                switch (args[i]) {
                    case "-n", "--nproc" -> n = Integer.parseInt(args[++i]);
                    case "--timeout" -> timeout = seconds(args[++i]);
                    case "--grace" -> grace = seconds(args[++i]);
                    case "--cp", "-cp", "--classpath" -> classpath = args[++i] + java.io.File.pathSeparator + classpath;
                    default -> throw new IllegalArgumentException("unknown option " + args[i]);
                }
            }
        } catch (RuntimeException e) {
            err.println("launch: " + e.getMessage());
            err.println(USAGE);
            return 2;
        }
        if (n < 1 || i >= args.length) {
            err.println(USAGE);
            return 2;
        }
        Result result = new LocalLauncher(n).timeout(timeout).failureGrace(grace).classpath(classpath)
                .output(out::println)
                .launch(args[i], Arrays.asList(args).subList(i + 1, args.length));
        if (result.succeeded()) {
            return 0;
        }
        err.println("launch: " + result.describe());
        if (result.timedOut()) {
            return 124;
        }
        return result.exitCodes().stream().filter(c -> c != 0).findFirst().orElse(1);
    }

    private static Duration seconds(String text) {
        return Duration.ofMillis(Math.round(Double.parseDouble(text) * 1000));
    }
}
