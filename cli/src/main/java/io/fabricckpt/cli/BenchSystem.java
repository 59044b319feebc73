package io.fabricckpt.cli;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;

/** What every bench measurement needs from the machine: memory figures, the page cache, processes. */
final class BenchSystem {
    static final long MIB = 1L << 20;

    private BenchSystem() {}

    static String human(long bytes) {
        return bytes % (1024 * MIB) == 0 ? bytes / (1024 * MIB) + "G"
                : bytes % MIB == 0 ? bytes / MIB + "M"
                : bytes >= MIB ? String.format(java.util.Locale.ROOT, "%.1fM", bytes / (double) MIB) : bytes + "B";
    }

    /** A field of /proc/self/status in bytes (VmRSS, VmHWM), 0 where there is none. */
    static long status(String field) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith(field + ":")) {
                    return Long.parseLong(line.substring(field.length() + 1).trim().split("\\s+")[0]) * 1024;
                }
            }
        } catch (IOException | NumberFormatException ignored) {
            // not Linux: no figure
        }
        return 0;
    }

    static void resetPeak() {
        try {
            Files.writeString(Path.of("/proc/self/clear_refs"), "5");
        } catch (IOException ignored) {
            // older kernels: the peak is the process's since start
        }
    }

    /**
     * Touches and frees {@code bytes} of memory right before a timed run. Virtual machines that hand
     * memory left free for a while back to their host (virtio-balloon free page reporting; this one
     * does after 2 s) make the next first touch of it slow: 1 to 2.5 GB/s instead of 12 to 14 here.
     * Every save fills page cache and every eager load fresh memory, so without this the figures
     * would measure how long the machine had been idle before each run. Every tool gets the same.
     */
    static void prime(long bytes) {
        if (bytes <= 0) {
            return;
        }
        try (Tensor memory = torch.empty(new long[] {bytes}, new TensorOptions(torch.ScalarType.Byte),
                new org.bytedeco.pytorch.MemoryFormatOptional())) {
            memory.fill_(new org.bytedeco.pytorch.Scalar(1.0));
        }
    }

    /** sync, then drop the page cache; false where that is not allowed. */
    static boolean dropCaches() {
        exec(List.of("sync"));
        try {
            Files.writeString(Path.of("/proc/sys/vm/drop_caches"), "3");
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /** The target gone and earlier dirty pages on disk: every save starts alike. */
    static void fresh(Path file) {
        delete(file);
        exec(List.of("sync"));
    }

    static void delete(Path file) {
        try {
            Files.deleteIfExists(file);
        } catch (IOException e) {
            throw new IllegalStateException("cannot delete " + file + ": " + e.getMessage(), e);
        }
    }

    static String fileSystem(Path dir) {
        try {
            return Files.getFileStore(dir).type() + " " + Files.getFileStore(dir).name();
        } catch (IOException e) {
            return "unknown file system";
        }
    }

    /** Runs a command (stderr passed through) and returns its stdout; a failure is an exception. */
    static String exec(List<String> command) {
        try {
            Process p = new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.INHERIT).start();
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            int rc = p.waitFor();
            if (rc != 0) {
                throw new IllegalStateException(String.join(" ", command) + " failed (exit " + rc + ")");
            }
            return out;
        } catch (IOException e) {
            throw new IllegalStateException("cannot run " + command.get(0) + ": " + e.getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
    }

    static String quote(String s) {
        return "'" + s.replace("'", "'\\''") + "'";
    }

    /** The Python that runs the reference side: FABRICCKPT_PYTHON, $VENV/bin/python, or python3. */
    static String python() {
        String explicit = System.getenv("FABRICCKPT_PYTHON");
        if (explicit != null && !explicit.isEmpty()) {
            return explicit;
        }
        String venv = System.getenv("VENV");
        return venv != null && !venv.isEmpty() ? venv + "/bin/python" : "python3";
    }

    /** bench/{@code name} of the source tree: under $ROOT, else the nearest folder above the working one. */
    static Path benchScript(String name) {
        String root = System.getenv("ROOT");
        if (root != null && !root.isEmpty()) {
            return Path.of(root, "bench", name);
        }
        for (Path d = Path.of("").toAbsolutePath(); d != null; d = d.getParent()) {
            Path candidate = d.resolve("bench").resolve(name);
            if (Files.isRegularFile(candidate)) {
                return candidate;
            }
        }
        return Path.of("bench", name);
    }
}
