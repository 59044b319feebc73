package io.fabricckpt.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The CLI in a child JVM for {@link ChildCli}: runs {@link Main} and then reports on stderr, as its
 * last line, the process's peak resident memory (VmHWM) and whether libtorch was ever mapped.
 */
public final class ProbedMain {
    private ProbedMain() {}

    public static void main(String[] args) throws IOException {
        int code = Main.run(args);
        String status = Files.readString(Path.of("/proc/self/status"));
        Matcher hwm = Pattern.compile("VmHWM:\\s+(\\d+) kB").matcher(status);
        long peakKb = hwm.find() ? Long.parseLong(hwm.group(1)) : -1;
        boolean torch = Files.readString(Path.of("/proc/self/maps")).contains("libtorch_cpu");
        System.out.flush();
        System.err.println("probe: peak_kb=" + peakKb + " libtorch=" + torch);
        System.exit(code);
    }
}
