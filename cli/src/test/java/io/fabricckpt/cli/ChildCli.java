package io.fabricckpt.cli;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** Runs the CLI in a fresh JVM ({@link ProbedMain}) and returns what it printed, its peak RSS and more. */
final class ChildCli {
    record Result(int code, String out, String err, long peakBytes, boolean loadedTorch, long millis) {}

    private ChildCli() {}

    static Result run(Path workDir, String... args) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx128m", "-XX:+UseSerialGC", "-cp", System.getProperty("java.class.path"), ProbedMain.class.getName()));
        command.addAll(List.of(args));
        Path out = workDir.resolve("child.out"), err = workDir.resolve("child.err");
        long start = System.nanoTime();
        Process p = new ProcessBuilder(command).redirectOutput(out.toFile()).redirectError(err.toFile()).start();
        if (!p.waitFor(300, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("the CLI did not finish in 300 s: " + String.join(" ", args));
        }
        long millis = (System.nanoTime() - start) / 1_000_000;
        String stdout = java.nio.file.Files.readString(out, StandardCharsets.UTF_8);
        String stderr = java.nio.file.Files.readString(err, StandardCharsets.UTF_8);
        Matcher probe = Pattern.compile("probe: peak_kb=(-?\\d+) libtorch=(true|false)").matcher(stderr);
        if (!probe.find()) {
            throw new AssertionError("no probe line from the child (" + p.exitValue() + "):\n" + stdout + "\n" + stderr);
        }
        return new Result(p.exitValue(), stdout, stderr, Long.parseLong(probe.group(1)) * 1024,
                Boolean.parseBoolean(probe.group(2)), millis);
    }
}
