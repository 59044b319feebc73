package io.fabricckpt.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.Fabric;
import io.fabricckpt.core.PyTuple;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class MainTest {
    @TempDir
    Path dir;

    private record Result(int code, String out, String err) {}

    private static Result run(String... args) {
        PrintStream oldOut = System.out, oldErr = System.err;
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
        try {
            int code = Main.run(args);
            return new Result(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
        } finally {
            System.setOut(oldOut);
            System.setErr(oldErr);
        }
    }

    private Path checkpoint(String name, double scale) {
        Map<String, Object> state = new LinkedHashMap<>();
        Map<String, Object> model = new LinkedHashMap<>();
        model.put("w", torch.arange(new Scalar(6.0)).reshape(2, 3).mul(new Scalar(scale)));
        state.put("model", model);
        state.put("step", 3L);
        state.put("shape", PyTuple.of(2L, 3L));
        Path path = dir.resolve(name);
        new Fabric().save(path, state);
        return path;
    }

    @Test
    void inspectPrintsKeysDtypesShapesAndBytes() {
        Result r = run("inspect", checkpoint("a.ckpt", 1).toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("w: tensor Float [2, 3] (24 bytes)"), r.out());
        assertTrue(r.out().contains("step: 3"), r.out());
        Result json = run("inspect", checkpoint("b.ckpt", 1).toString(), "--json");
        assertTrue(json.out().contains("\"w\":{\"type\":\"tensor\",\"dtype\":\"Float\",\"shape\":[2,3],\"bytes\":24}"),
                json.out());
    }

    /** A global outside torch's allowlist: inspect lists it, convert refuses it unless allowed. */
    @Test
    void inspectListsUnsafeGlobalsAndConvertRefusesThemUnlessAllowed() throws Exception {
        Path unsafe = dir.resolve("unsafe.ckpt");
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("hook", new io.fabricckpt.core.PyGlobal("os", "system"));
        io.fabricckpt.TorchFiles.write(unsafe, state, io.fabricckpt.core.WriteOptions.DEFAULT.allowUnsafeGlobals());
        Result r = run("inspect", unsafe.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("unsafe globals") && r.out().contains("os.system"), r.out());
        Result json = run("inspect", unsafe.toString(), "--json");
        assertTrue(json.out().startsWith("{\"unsafe_globals\":[\"os.system\"],\"checkpoint\":{"), json.out());
        Result safe = run("inspect", checkpoint("safe.ckpt", 1).toString(), "--json");
        assertTrue(safe.out().startsWith("{\"unsafe_globals\":[],\"checkpoint\":{"), safe.out());

        Path out = dir.resolve("out.ckpt");
        Result refused = run("convert", unsafe.toString(), out.toString());
        assertEquals(ExitCodes.IO, refused.code(), refused.err());
        assertTrue(refused.err().contains("os.system"), refused.err());
        assertFalse(Files.exists(out));
        Result allowed = run("convert", "--allow-unsafe-globals", unsafe.toString(), out.toString());
        assertEquals(0, allowed.code(), allowed.err());
        assertTrue(Files.exists(out));
    }

    /** clean removes a dead writer's temporary file and says what it did. */
    @Test
    void cleanRemovesWhatADeadWriterLeft() throws Exception {
        Path target = checkpoint("c.ckpt", 1);
        Path stale = dir.resolve(".c.ckpt.tmp-0123456789abcdef");
        Files.write(stale, new byte[1000]);
        Files.setLastModifiedTime(stale, java.nio.file.attribute.FileTime.fromMillis(System.currentTimeMillis() - 60_000));
        Result r = run("clean", target.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("cleaned " + stale), r.out());
        assertFalse(Files.exists(stale));
        assertTrue(Files.exists(target));
        assertTrue(run("clean", target.toString()).out().contains("nothing to clean"));
    }

    @Test
    void verifyAcceptsGoodFilesAndNamesBadOnes() throws Exception {
        Path good = checkpoint("good.ckpt", 1);
        Result ok = run("verify", good.toString());
        assertEquals(0, ok.code(), ok.err());
        assertTrue(ok.out().contains("OK") && ok.out().contains("CRC-32 verified"), ok.out());

        byte[] bytes = Files.readAllBytes(good);
        bytes[indexOf(bytes, new byte[] {0, 0, (byte) 0xa0, 0x40}) + 3] ^= 0x01; // 5.0f inside the tensor record
        Path bad = dir.resolve("bad.ckpt");
        Files.write(bad, bytes);
        Result fail = run("verify", bad.toString());
        assertEquals(1, fail.code());
        assertTrue(fail.err().contains("bad.ckpt"), fail.err());
    }

    private static int indexOf(byte[] haystack, byte[] needle) {
        outer:
        for (int i = 0; i + needle.length <= haystack.length; i++) {
            for (int j = 0; j < needle.length; j++) {
                if (haystack[i + j] != needle[j]) {
                    continue outer;
                }
            }
            return i;
        }
        throw new AssertionError("pattern not found");
    }

    @Test
    void diffReportsTensorDifferences() {
        Path a = checkpoint("a.ckpt", 1);
        Result same = run("diff", a.toString(), checkpoint("a2.ckpt", 1).toString());
        assertEquals(0, same.code(), same.out());
        Result differ = run("diff", a.toString(), checkpoint("c.ckpt", 2).toString());
        assertEquals(1, differ.code());
        assertTrue(differ.out().contains("model.w: max abs difference 5.0"), differ.out());
    }

    @Test
    void unknownCommandsAndMissingArgumentsAreUsageErrors() {
        Result unknown = run("frobnicate");
        assertEquals(2, unknown.code());
        assertTrue(unknown.err().contains("Unmatched argument") && unknown.err().contains("Usage: fabric-ckpt"),
                unknown.err());
        Result r = run("convert", "only-one");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("Missing required parameter: 'DST'") && r.err().contains("Usage: fabric-ckpt convert"),
                r.err());
        assertEquals(2, run("inspect", "a", "b").code());
        assertEquals(2, run("inspect", "--jsn", "a").code());
        assertEquals(2, run("bench", "--reps", "many").code());
        Result none = run();
        assertEquals(2, none.code());
        assertTrue(none.err().contains("Usage: fabric-ckpt"), none.err());
    }

    static final String[] COMMANDS = {"demo", "inspect", "verify", "diff", "convert", "clean", "bench", "bench-sharded",
        "bench-s3", "launch"};

    @Test
    void helpOnEveryCommandDoesNothingElse() throws Exception {
        Result top = run("--help");
        assertEquals(0, top.code(), top.err());
        for (String command : COMMANDS) {
            assertTrue(top.out().contains("  " + command + " "), command + " missing from\n" + top.out());
        }
        assertTrue(top.out().contains("Exit codes:"), top.out());
        Path cwd = Path.of("").toAbsolutePath();
        for (String command : COMMANDS) {
            for (String flag : new String[] {"--help", "-h"}) {
                Result r = run(command, flag);
                assertEquals(0, r.code(), command + " " + flag + ": " + r.err());
                assertTrue(r.out().startsWith("Usage: fabric-ckpt " + command), r.out());
                assertEquals("", r.err());
            }
            Result viaHelp = run("help", command);
            assertEquals(0, viaHelp.code());
            assertEquals(run(command, "--help").out(), viaHelp.out());
        }
        // demo --help used to train into a directory named --help
        assertTrue(!Files.exists(cwd.resolve("--help")) && !Files.exists(cwd.resolve("-h")));
    }

    @Test
    void versionNamesTheBuildAndItsLibtorch() {
        for (String[] args : new String[][] {{"--version"}, {"-V"}, {"inspect", "--version"}}) {
            Result r = run(args);
            assertEquals(0, r.code(), r.err());
            assertTrue(r.out().matches("fabric-ckpt \\S+ \\(libtorch 2\\.10\\.0, JavaCPP PyTorch preset 2\\.10\\.0-1\\.5\\.13\\)\\R"),
                    r.out());
        }
    }

    @Test
    void unreadableInputsExitWith3AndOneLine() throws Exception {
        Path missing = dir.resolve("missing.ckpt");
        for (String[] args : new String[][] {{"inspect", missing.toString()}, {"verify", missing.toString()},
                {"diff", checkpoint("a.ckpt", 1).toString(), missing.toString()},
                {"convert", missing.toString(), dir.resolve("out.ckpt").toString()}}) {
            Result r = run(args);
            assertEquals(3, r.code(), String.join(" ", args) + ": " + r.err());
            assertEquals("fabric-ckpt " + args[0] + ": cannot read " + missing + ": no such file or directory\n", r.err());
        }
        Path notCheckpoint = Files.writeString(dir.resolve("notes.txt"), "not a checkpoint");
        Result r = run("inspect", notCheckpoint.toString());
        assertEquals(3, r.code());
        assertOneCleanLine(r.err(), "fabric-ckpt inspect: ");
        Result write = run("convert", checkpoint("b.ckpt", 1).toString(), notCheckpoint.resolve("x.ckpt").toString()); // a file as parent
        assertEquals(3, write.code(), write.err());
        assertOneCleanLine(write.err(), "fabric-ckpt convert: ");
    }

    @Test
    void launchUsageErrorsAreMessagesNotExceptions() {
        Result noValue = run("launch", "-n");
        assertEquals(2, noValue.code());
        assertTrue(noValue.err().startsWith("fabric-ckpt launch: Missing required parameter for option '--nproc'"),
                noValue.err());
        assertFalse(noValue.err().contains("Index") || noValue.err().contains("Exception"), noValue.err());
        Result noClass = run("launch", "-n", "2");
        assertEquals(2, noClass.code());
        assertTrue(noClass.err().contains("Missing required parameter: 'CLASS'"), noClass.err());
        Result zero = run("launch", "-n", "0", "Foo");
        assertEquals(2, zero.code());
        assertEquals("fabric-ckpt launch: -n must be at least 1, not 0\n", zero.err());
        assertEquals(2, run("launch", "-n", "two", "Foo").code());
    }

    @Test
    void launchPassesOptionsAfterTheClassToTheRanks() {
        Result r = run("launch", "-n", "1", "--timeout", "60", Echo.class.getName(), "--flag", "-n", "x");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("[rank 0] args=[--flag, -n, x]"), r.out());
    }

    /** A rank for {@link #launchPassesOptionsAfterTheClassToTheRanks}. */
    public static final class Echo {
        public static void main(String[] args) {
            System.out.println("args=" + java.util.Arrays.toString(args));
        }
    }

    private static void assertOneCleanLine(String err, String prefix) {
        assertTrue(err.startsWith(prefix), err);
        assertEquals(1, err.lines().count(), err);
        assertFalse(err.contains("Exception") || err.contains("\tat "), err);
    }
}
