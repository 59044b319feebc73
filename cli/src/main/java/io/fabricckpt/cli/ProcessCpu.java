package io.fabricckpt.cli;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Optional;
import java.util.OptionalLong;

/**
 * CPU seconds (user + system, every thread) a process has used so far: this JVM's, or another local
 * process's from Linux's /proc (the S3 server a bench runs against, found by the loopback port it listens
 * on). On a machine of few cores, a save to a local server is bounded by the CPU both sides burn, so
 * the bench shows it beside the time.
 */
final class ProcessCpu {
    private static final double CLOCK_TICKS = 100; // USER_HZ: 100 on every Linux architecture the JDK runs on

    private final long pid;

    private ProcessCpu(long pid) {
        this.pid = pid;
    }

    /** This JVM. */
    static ProcessCpu self() {
        return new ProcessCpu(ProcessHandle.current().pid());
    }

    /** The process {@code pid}. */
    static ProcessCpu of(long pid) {
        return new ProcessCpu(pid);
    }

    /** The local process listening on TCP {@code port}, if this user can see it (Linux only). */
    static Optional<ProcessCpu> listeningOn(int port) {
        OptionalLong inode = listeningSocket(port);
        if (inode.isEmpty()) {
            return Optional.empty();
        }
        String socket = "socket:[" + inode.getAsLong() + "]";
        try (DirectoryStream<Path> processes = Files.newDirectoryStream(Path.of("/proc"), "[0-9]*")) {
            for (Path process : processes) {
                try (DirectoryStream<Path> fds = Files.newDirectoryStream(process.resolve("fd"))) {
                    for (Path fd : fds) {
                        if (socket.equals(Files.readSymbolicLink(fd).toString())) {
                            return Optional.of(new ProcessCpu(Long.parseLong(process.getFileName().toString())));
                        }
                    }
                } catch (IOException | SecurityException e) {
                    // another user's process, or one that just ended
                }
            }
        } catch (IOException e) {
            return Optional.empty();
        }
        return Optional.empty();
    }

    /** The inode of the socket listening on {@code port} (any address), from /proc/net/tcp and tcp6. */
    private static OptionalLong listeningSocket(int port) {
        String local = String.format(Locale.ROOT, ":%04X", port);
        for (String table : List.of("/proc/net/tcp", "/proc/net/tcp6")) {
            try {
                for (String line : Files.readAllLines(Path.of(table))) {
                    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                    String[] f = line.trim().split("\\s+");
                    if (f.length > 9 && f[1].endsWith(local) && f[3].equals("0A")) { // 0A: LISTEN
                        return OptionalLong.of(Long.parseLong(f[9]));
                    }
                }
            } catch (IOException | NumberFormatException e) {
                // not Linux, or no IPv6 table
            }
        }
        return OptionalLong.empty();
    }

    long pid() {
        return pid;
    }

    /** CPU seconds used so far; NaN once the process is gone. */
    double seconds() {
        if (pid == ProcessHandle.current().pid()
                && ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os) {
            return os.getProcessCpuTime() / 1e9;
        }
        try {
            String stat = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
            // After the command name in parentheses (which may hold spaces): state, ppid, ... utime is field 14, stime 15.
            String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            return (Long.parseLong(f[11]) + Long.parseLong(f[12])) / CLOCK_TICKS;
        } catch (IOException | RuntimeException e) {
            return Double.NaN;
        }
    }
}
