package io.fabricckpt.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.TorchFiles;
import java.io.IOException;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The commands that need no tensor math never load libtorch: their JNI library links the format
 * library alone, and a fresh JVM running each of them never maps libtorch_cpu.so.
 */
class TorchFreeCommandsTest {
    private static final String NATIVES = "io/fabricckpt/cli/format/linux-x86_64/";

    @TempDir
    Path dir;

    private static List<String> needed(Path library) throws IOException, InterruptedException {
        Process p = new ProcessBuilder("readelf", "-d", library.toString()).redirectErrorStream(true).start();
        String text = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), text);
        List<String> out = new ArrayList<>();
        for (String line : text.split("\n")) {
            if (line.contains("(NEEDED)")) {
                out.add(line.substring(line.indexOf('[') + 1, line.indexOf(']')));
            }
        }
        return out;
    }

    @Test
    void theFormatJniLibrariesNeedNoLibtorch() throws Exception {
        for (String name : List.of("libjnifabricckptformat.so", "libfabricckptformat.so")) {
            URL url = getClass().getClassLoader().getResource(NATIVES + name);
            assertNotNull(url, NATIVES + name + " is not on the class path");
            List<String> needed = needed(toPath(url));
            assertFalse(needed.isEmpty(), name + ": no NEEDED entries read");
            for (String lib : needed) {
                assertFalse(lib.contains("torch") || lib.contains("c10") || lib.contains("fabricckpt.so")
                        && !lib.equals("libfabricckptformat.so"), name + " needs " + lib + ": " + needed);
            }
        }
    }

    private static Path toPath(URL url) throws URISyntaxException {
        return Path.of(url.toURI());
    }

    private Path checkpoint(String name, double scale) {
        Map<String, Object> model = new LinkedHashMap<>();
        model.put("w", torch.arange(new Scalar(6.0)).reshape(2, 3).mul(new Scalar(scale)));
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("step", 3L);
        Path path = dir.resolve(name);
        TorchFiles.write(path, state);
        return path;
    }

    /** Runs each case {exit code, arguments, expected output} in a fresh JVM that must never map libtorch. */
    private void runWithoutLibtorch(Object[][] cases) throws Exception {
        for (Object[] c : cases) {
            String[] args = (String[]) c[1];
            ChildCli.Result r = ChildCli.run(dir, args);
            String what = String.join(" ", args) + " (" + r.millis() + " ms):\n" + r.out() + r.err();
            assertEquals(c[0], r.code(), what);
            assertTrue(r.out().contains((String) c[2]), what);
            assertFalse(r.loadedTorch(), "libtorch was loaded by " + what);
        }
    }

    @Test
    void inspectVerifyDiffConvertCleanAndVersionNeverLoadLibtorch() throws Exception {
        Path a = checkpoint("a.ckpt", 1), b = checkpoint("b.ckpt", 2);
        Path converted = dir.resolve("c.ckpt");
        Object[][] cases = {
            {0, new String[] {"inspect", a.toString()}, "w: tensor Float [2, 3] (24 bytes)"},
            {0, new String[] {"inspect", a.toString(), "--json"}, "\"shape\":[2,3]"},
            {0, new String[] {"verify", a.toString()}, ": OK (7 records, CRC-32 verified, 1 tensors over 1 storages of 24 bytes)"},
            {0, new String[] {"diff", a.toString(), a.toString()}, "checkpoints are equal (2 entries)"},
            {1, new String[] {"diff", a.toString(), b.toString()}, "~ model.w: max abs difference 5.0"},
            {0, new String[] {"convert", a.toString(), converted.toString()}, "wrote " + converted},
            {0, new String[] {"clean", a.toString()}, "nothing to clean beside " + a},
            {0, new String[] {"--version"}, "fabric-ckpt "},
        };
        runWithoutLibtorch(cases);
        assertEquals(-1, Files.mismatch(a, converted), "convert of a file this library wrote gives its bytes back");
    }

    /** The project's test data (cpp/tests/data), from the cli module's directory where Maven runs the tests. */
    private static Path testData(String relative) {
        Path path = Path.of("..", "cpp", "tests", "data").resolve(relative).toAbsolutePath().normalize();
        assertTrue(Files.exists(path), path + " is missing");
        return path;
    }

    /**
     * Legacy (pre-1.6) torch.save files, safetensors files, Hugging Face sharded checkpoints and sharded
     * directories too: the format library reads them all, so no command loads libtorch for them.
     */
    @Test
    void legacySafetensorsAndShardedCheckpointsNeedNoLibtorchEither() throws Exception {
        Path legacy = testData("torch/legacy.pt"), sharded = testData("dcp/single");
        Path st = dir.resolve("m.safetensors");
        Map<String, Object> tensors = new LinkedHashMap<>();
        tensors.put("w", torch.arange(new Scalar(6.0)).reshape(2, 3));
        tensors.put("i", torch.arange(new Scalar(3)));
        TorchFiles.write(st, tensors);
        Path hf = dir.resolve("hf");
        Files.createDirectories(hf);
        TorchFiles.write(hf.resolve("model-00001-of-00001.safetensors"), tensors);
        Files.writeString(hf.resolve("model.safetensors.index.json"), "{\"metadata\": {\"total_size\": 72}, \"weight_map\": "
                + "{\"w\": \"model-00001-of-00001.safetensors\", \"i\": \"model-00001-of-00001.safetensors\"}}");
        Path fromLegacy = dir.resolve("legacy.ckpt"), fromSt = dir.resolve("st.ckpt"), fromHf = dir.resolve("hf.ckpt");
        Path fromSharded = dir.resolve("sharded.ckpt");
        Object[][] cases = {
            {0, new String[] {"inspect", legacy.toString()}, "w: tensor Float [2, 3] (24 bytes)"},
            {0, new String[] {"verify", legacy.toString()}, ": OK (legacy format, 2 tensors over 2 storages of 48 bytes)"},
            {0, new String[] {"convert", legacy.toString(), fromLegacy.toString()}, "wrote " + fromLegacy},
            {0, new String[] {"diff", legacy.toString(), fromLegacy.toString()}, "checkpoints are equal (3 entries)"},
            {0, new String[] {"inspect", st.toString()}, "i: tensor Long [3] (24 bytes)"},
            {0, new String[] {"verify", st.toString()}, "ok: safetensors, 2 tensors, 48 bytes of tensor data"},
            {0, new String[] {"convert", st.toString(), fromSt.toString()}, "wrote " + fromSt},
            {1, new String[] {"diff", st.toString(), fromLegacy.toString()}, "checkpoints differ"},
            {0, new String[] {"diff", st.toString(), hf.toString()}, "checkpoints are equal (2 entries)"},
            {0, new String[] {"verify", hf.toString()}, "ok: safetensors index of 1 shards, 2 tensors"},
            {0, new String[] {"convert", hf.toString(), fromHf.toString()}, "wrote " + fromHf},
            {0, new String[] {"inspect", sharded.toString()}, "tensor"},
            {0, new String[] {"convert", sharded.toString(), fromSharded.toString()}, "wrote " + fromSharded},
            {0, new String[] {"diff", sharded.toString(), fromSharded.toString()}, "checkpoints are equal"},
        };
        runWithoutLibtorch(cases);
        // What the library's convert writes for the same sources (TorchFiles loads them with libtorch).
        for (Path[] pair : new Path[][] {{legacy, fromLegacy}, {st, fromSt}, {hf, fromHf}}) {
            Path reference = dir.resolve("reference-" + pair[1].getFileName());
            TorchFiles.convert(pair[0], reference);
            assertEquals(-1, Files.mismatch(reference, pair[1]), "convert of " + pair[0]);
        }
    }

    /**
     * convert to safetensors (one file, or a Hugging Face index) reads and writes without libtorch too,
     * and writes what the library's convert writes for the same source (loaded with libtorch), byte for
     * byte, or refuses what it refuses with the same message.
     */
    @Test
    void convertToSafetensorsNeedsNoLibtorchAndWritesTheLibrarysBytes() throws Exception {
        Path st = dir.resolve("m.safetensors");
        Map<String, Object> tensors = new LinkedHashMap<>();
        tensors.put("w", torch.arange(new Scalar(600.0)).reshape(20, 30).t()); // written contiguous
        tensors.put("i", torch.arange(new Scalar(3)));
        tensors.put("note", "v1");
        TorchFiles.write(st, tensors);
        Path ckpt = dir.resolve("tensors.ckpt");
        TorchFiles.write(ckpt, tensors);
        Path[] sources = {st, ckpt, checkpoint("a.ckpt", 1), testData("torch/legacy.pt"), testData("dcp/single")};
        int written = 0;
        for (Path source : sources) {
            for (String name : List.of("out.safetensors", "hf/model.safetensors.index.json")) {
                Path byCli = dir.resolve("cli-" + source.getFileName()).resolve(name);
                Path byLibrary = dir.resolve("library-" + source.getFileName()).resolve(name);
                Files.createDirectories(byCli.getParent());
                Files.createDirectories(byLibrary.getParent());
                String refused = null;
                try {
                    TorchFiles.convert(source.toString(), byLibrary.toString(),
                            io.fabricckpt.core.WriteOptions.DEFAULT.withMaxShardSize(1000), null);
                } catch (RuntimeException e) {
                    refused = e.getMessage().replace(byLibrary.toString(), byCli.toString());
                }
                ChildCli.Result r = ChildCli.run(dir, "convert", source.toString(), byCli.toString(),
                        "--max-shard-size", "1000");
                String what = source + " -> " + name + ":\n" + r.out() + r.err();
                assertFalse(r.loadedTorch(), "libtorch was loaded by " + what);
                if (refused != null) {
                    assertTrue(r.code() != 0 && r.err().contains(refused.substring(refused.indexOf(": ") + 2)),
                            "the library refused with: " + refused + "\n" + what);
                    assertFalse(Files.exists(byCli), what);
                    continue;
                }
                assertEquals(0, r.code(), what);
                Map<String, byte[]> expected = filesOf(byLibrary.getParent()), got = filesOf(byCli.getParent());
                assertEquals(expected.keySet(), got.keySet(), what);
                for (String file : expected.keySet()) {
                    assertEquals(-1, java.util.Arrays.mismatch(expected.get(file), got.get(file)), what + " " + file);
                }
                written++;
            }
        }
        assertTrue(written >= 4, written + " converts written, the rest refused");
    }

    private static Map<String, byte[]> filesOf(Path directory) throws IOException {
        Map<String, byte[]> files = new java.util.TreeMap<>();
        try (var listing = Files.list(directory)) {
            for (Path f : listing.toList()) {
                files.put(f.getFileName().toString(), Files.readAllBytes(f));
            }
        }
        return files;
    }
}
