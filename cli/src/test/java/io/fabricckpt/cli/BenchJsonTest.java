package io.fabricckpt.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code bench --json} on a small state, with its Python references: one JSON object holding every
 * row (Java, dd/cat, Lightning, torch) with its reference and ratio, and every target with met/missed.
 * The figures themselves are not checked (they depend on the machine), only that they are there.
 */
class BenchJsonTest {
    @TempDir
    Path dir;

    @Test
    void jsonHoldsEveryRowWithItsReferenceAndEveryTarget() {
        PrintStream oldOut = System.out;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
        int code;
        try {
            // --no-cold: dropping the page cache would slow everyone else on a shared machine.
            code = Main.run(new String[] {"bench", "--size", "8M", "--reps", "1", "--no-cold", "--json", "--dir",
                dir.toString()});
        } finally {
            System.setOut(oldOut);
        }
        String json = out.toString(StandardCharsets.UTF_8).trim();
        assertEquals(0, code, json);
        assertTrue(json.startsWith("{\"command\":\"bench\",") && json.endsWith("}"), json);
        assertEquals(1, json.lines().count(), "one object on one line");

        for (String row : List.of("Java save", "Java save (fsync)", "Java async save: step blocked",
                "Java sync save: step blocked", "Java async save: until written", "train step (no save)",
                "Java mmap load (cached)", "Java eager load (cached)", "dd write (bs=4M)",
                "dd write (bs=4M, conv=fsync)", "cat > /dev/null (cached)", "fabric.save", "fabric.save (fsync)",
                "torch.save", "torch.save (fsync)", "fabric.load (cached)", "torch.load (cached)",
                "torch.load(mmap=True) (cached)", "CLI inspect (JVM start to exit) (cached)", "CLI verify (cached)",
                "CLI diff (two copies) (cached)", "cmp (two copies) (cached)", "CLI convert (cached)")) {
            assertTrue(json.contains("{\"name\":\"" + row + "\",\"op\":"), "row " + row + " in " + json);
        }
        // Durable against durable, loads against the page cache's speed.
        assertReference(json, "Java save (fsync)", "fabric.save (fsync)");
        assertReference(json, "Java save", "fabric.save");
        assertReference(json, "Java eager load (cached)", "fabric.load (cached)");
        assertTrue(json.contains("{\"name\":\"cat > /dev/null (cached)\",\"ratio\":"), json);
        assertReference(json, "CLI diff (two copies) (cached)", "cmp (two copies) (cached)");

        for (String target : List.of("save >= 2.5x fabric.save", "save >= 0.9x dd", "save (fsync) >= 0.9x dd conv=fsync",
                "eager load >= 0.9x cat (cached)", "mmap load < 10 ms/GB (cached)",
                "extra peak RSS during save <= 64 MiB", "async save: step blocked >= 10x less than sync",
                "CLI inspect: start to exit < 0.5 s", "CLI verify: peak RSS <= JVM + 64 MiB + largest tensor",
                "CLI diff (two copies): peak RSS <= JVM + 64 MiB + largest tensor",
                "CLI convert: peak RSS <= JVM + 64 MiB + largest tensor")) {
            Matcher m = Pattern.compile("\\{\"name\":\"" + Pattern.quote(target)
                    + "\",\"size\":8388608,\"value\":[-0-9.e+]+,\"unit\":\"[^\"]+\",[^{}]*?\"target\":\"[<>]= [0-9.]+[^\"]*\","
                    + "\"met\":(true|false),").matcher(json);
            assertTrue(m.find(), "target " + target + " in " + json);
        }
    }

    private static void assertReference(String json, String row, String reference) {
        Matcher m = Pattern.compile("\\{\"name\":\"" + Pattern.quote(row) + "\",[^{}]*?\"reference\":\"([^\"]*)\",\"ratio\":"
                + "[0-9.e+-]+,").matcher(json);
        assertTrue(m.find(), row + " has a reference in " + json);
        assertEquals(reference, m.group(1), row);
    }
}
