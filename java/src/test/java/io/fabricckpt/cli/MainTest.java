package io.fabricckpt.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.Fabric;
import io.fabricckpt.PyTuple;
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
        assertEquals(2, run("frobnicate").code());
        Result r = run("convert", "only-one");
        assertEquals(1, r.code());
        assertTrue(r.err().contains("usage"), r.err());
    }
}
