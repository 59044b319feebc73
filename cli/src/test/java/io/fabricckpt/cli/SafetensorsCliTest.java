package io.fabricckpt.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.Fabric;
import io.fabricckpt.TorchFiles;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** inspect, verify, diff and convert of safetensors files; convert choosing the format by the target's name. */
class SafetensorsCliTest {
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
        Map<String, Object> model = new LinkedHashMap<>();
        model.put("w", torch.arange(new Scalar(6.0)).reshape(2, 3).mul(new Scalar(scale)));
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("note", "cli");
        Path path = dir.resolve(name);
        new Fabric().save(path, state);
        return path;
    }

    @Test
    void convertToSafetensorsAndBackInspectVerifyDiff() throws Exception {
        Path ckpt = checkpoint("a.ckpt", 1);
        Path st = dir.resolve("a.safetensors");
        Result converted = run("convert", ckpt.toString(), st.toString());
        assertEquals(0, converted.code(), converted.err());
        assertEquals(0, run("verify", st.toString()).code());
        assertTrue(run("verify", st.toString()).out().contains("ok: safetensors, 1 tensors"));

        Result inspect = run("inspect", st.toString());
        assertEquals(0, inspect.code(), inspect.err());
        assertTrue(inspect.out().contains("model.w: tensor Float [2, 3] (24 bytes)"), inspect.out());

        Path back = dir.resolve("back.ckpt");
        assertEquals(0, run("convert", st.toString(), back.toString()).code());
        @SuppressWarnings("unchecked")
        Map<String, Object> read = (Map<String, Object>) TorchFiles.read(back);
        assertTrue(((Tensor) read.get("model.w")).equal(torch.arange(new Scalar(6.0)).reshape(2, 3)));

        assertEquals(0, run("diff", st.toString(), checkpoint("b.safetensors", 1).toString()).code());
        Result differ = run("diff", st.toString(), checkpoint("c.safetensors", 2).toString());
        assertEquals(1, differ.code());
        assertTrue(differ.out().contains("model.w: max abs difference 5.0"), differ.out());
    }

    @Test
    void convertNamesTheKeysSafetensorsCannotHold() {
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("w", torch.ones(2));
        state.put("step", 3L);
        state.put("lrs", java.util.List.of(0.1));
        Path ckpt = dir.resolve("s.ckpt");
        new Fabric().save(ckpt, state);
        Path st = dir.resolve("s.safetensors");
        Result r = run("convert", ckpt.toString(), st.toString());
        assertEquals(ExitCodes.IO, r.code(), r.out());
        assertTrue(r.err().contains("step (int)") && r.err().contains("lrs (list)"), r.err());
        assertFalse(Files.exists(st));
    }

    @Test
    void verifyNamesABrokenFile() throws Exception {
        Path st = dir.resolve("ok.safetensors");
        TorchFiles.write(st, Map.of("w", torch.ones(8)));
        byte[] bytes = Files.readAllBytes(st);
        Path bad = dir.resolve("bad.safetensors");
        Files.write(bad, Arrays.copyOf(bytes, bytes.length - 4));
        Result r = run("verify", bad.toString());
        assertEquals(1, r.code());
        assertTrue(r.err().contains("bad.safetensors") && r.err().contains("offsets past the end"), r.err());
    }
}
