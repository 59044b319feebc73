package io.fabricckpt.cli;

import static io.fabricckpt.cli.BenchSystem.MIB;
import static io.fabricckpt.cli.BenchSystem.human;
import static io.fabricckpt.cli.BenchSystem.quote;

import io.fabricckpt.TorchFiles;
import io.fabricckpt.core.WriteOptions;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The command line's rows of {@code fabric-ckpt bench}: {@code inspect}, {@code verify}, {@code diff}
 * and {@code convert} of the bench's state saved as a file, each a fresh JVM started as bin/fabric-ckpt
 * starts the torch-free commands, timed from its start to its exit, with its whole peak resident
 * memory (/usr/bin/time); {@code cmp} of the same two files is diff's reference. The targets
 * ({@link BenchReport#targets}): inspect done in under 0.5 s, and verify, diff and convert within
 * 64 MiB plus the largest tensor above the JVM's own footprint (inspect's peak).
 */
final class CliBench {
    /** The largest tensor of {@link JavaBench#buildState}'s states (its first). */
    static final long LARGEST_TENSOR = 32 * MIB;

    private final ReferenceBench shell;

    CliBench(ReferenceBench shell) {
        this.shell = shell;
    }

    List<BenchRow> rows(long size, Path dir, int reps) throws IOException {
        System.err.printf(Locale.ROOT, "[%s] command line: inspect, verify, diff, convert%n", human(size));
        Path file = dir.resolve("cli.ckpt");
        Path copy = dir.resolve("cli-copy.ckpt");
        Path out = dir.resolve("cli-out.ckpt");
        try {
            TorchFiles.write(file, JavaBench.buildState(size), WriteOptions.DEFAULT.withFsync(false));
            Files.copy(file, copy, StandardCopyOption.REPLACE_EXISTING);
            String f = quote(file.toString());
            String c = quote(copy.toString());
            shell.warm("cat " + f + " " + c + " > /dev/null"); // every row cached
            String cli = cli();
            List<BenchRow> rows = new ArrayList<>();
            rows.add(shell.timed(size, "CLI inspect (JVM start to exit)", "cached", reps, null,
                    cli + " inspect " + f + " > /dev/null"));
            rows.add(shell.timed(size, "CLI verify", "cached", reps, null, cli + " verify " + f + " > /dev/null"));
            rows.add(shell.timed(size, "CLI diff (two copies)", "cached", reps, null,
                    cli + " diff " + f + " " + c + " > /dev/null"));
            rows.add(shell.timed(size, "cmp (two copies)", "cached", reps, null, "cmp " + f + " " + c));
            rows.add(shell.timed(size, "CLI convert", "cached", reps, () -> BenchSystem.delete(out),
                    cli + " convert " + f + " " + quote(out.toString()) + " > /dev/null"));
            return rows;
        } finally {
            BenchSystem.delete(file);
            BenchSystem.delete(copy);
            BenchSystem.delete(out);
        }
    }

    /** The command line as bin/fabric-ckpt runs its torch-free commands: this JVM's java and class path. */
    private static String cli() {
        String java = ProcessHandle.current().info().command().orElse("java");
        return quote(java) + " -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp " + quote(System.getProperty("java.class.path"))
                + " io.fabricckpt.cli.Main";
    }
}
