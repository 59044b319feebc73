package io.fabricckpt;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.PyFrozenSet;
import io.fabricckpt.core.PyGlobal;
import io.fabricckpt.core.PyObject;
import io.fabricckpt.core.PyTuple;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import java.io.IOException;
import java.math.BigInteger;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Raw values through torch.save files, Java to Java. Python's view is in python-compat-tests. */
class TorchFilesTest {
    @TempDir
    Path dir;

    private static Tensor arange(double n, torch.ScalarType dtype) {
        return torch.arange(new Scalar(n), new TensorOptions(dtype));
    }

    @Test
    void plainValuesRoundTripWithTypesAndOrder() {
        Map<Object, Object> inner = new LinkedHashMap<>();
        inner.put(3L, "three");
        inner.put(PyTuple.of(1L, 2L), List.of());
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("z-first", 1L);
        state.put("none", null);
        state.put("yes", true);
        state.put("no", false);
        state.put("small", -5L);
        state.put("int-min", Long.MIN_VALUE);
        state.put("huge", new BigInteger("123456789012345678901234567890"));
        state.put("negative-huge", new BigInteger("-98765432109876543210987654321"));
        state.put("pi", Math.PI);
        state.put("nan", Double.NaN);
        state.put("text", "héllo wörld ✓ 😀");
        state.put("empty", "");
        state.put("bytes", new byte[] {0, 1, 2, (byte) 255, 0});
        state.put("empty-bytes", new byte[0]);
        state.put("tuple", PyTuple.of(1L, "a", PyTuple.of()));
        state.put("list", List.of(1L, 2.5, "x"));
        state.put("set", new LinkedHashSet<>(List.of(1L, 2L)));
        state.put("frozenset", new PyFrozenSet(Set.of("only")));
        state.put("nested", inner);
        state.put("dtype", new PyGlobal("torch", "float32"));

        Path file = dir.resolve("plain.ckpt");
        // Empty bytes (bytes() at protocol 2) and frozensets are outside torch's weights_only
        // allowlist: this round trip of every Python type opts in (unsafeGlobalsAreRefusedOnWrite).
        new Fabric().allowUnsafeGlobals(true).save(file, state);
        Map<String, Object> loaded = new Fabric().load(file);

        assertEquals(new ArrayList<>(state.keySet()), new ArrayList<>(loaded.keySet()));
        for (String key : List.of("z-first", "yes", "no", "small", "int-min", "huge", "negative-huge", "pi", "text",
                "empty", "tuple", "list", "set", "frozenset", "nested", "dtype")) {
            assertEquals(state.get(key), loaded.get(key), key);
        }
        assertNull(loaded.get("none"));
        assertTrue(loaded.containsKey("none"));
        assertTrue(((Double) loaded.get("nan")).isNaN());
        assertArrayEquals((byte[]) state.get("bytes"), (byte[]) loaded.get("bytes"));
        assertArrayEquals(new byte[0], (byte[]) loaded.get("empty-bytes"));
        assertInstanceOf(PyTuple.class, loaded.get("tuple"));
        assertInstanceOf(List.class, loaded.get("list"));
        assertInstanceOf(Long.class, loaded.get("small"));
        assertInstanceOf(BigInteger.class, loaded.get("huge"));
    }

    @Test
    void tensorsOfEveryDtypeRoundTrip() {
        Map<String, Object> state = new LinkedHashMap<>();
        torch.ScalarType[] dtypes = {torch.ScalarType.Float, torch.ScalarType.Double, torch.ScalarType.Half,
            torch.ScalarType.BFloat16, torch.ScalarType.Long, torch.ScalarType.Int, torch.ScalarType.Short,
            torch.ScalarType.Char, torch.ScalarType.Byte, torch.ScalarType.Bool};
        for (torch.ScalarType dtype : dtypes) {
            Tensor t = dtype == torch.ScalarType.Bool ? arange(6, torch.ScalarType.Long).remainder(new Scalar(2)).to(dtype)
                    : arange(6, dtype);
            state.put(dtype.name(), t.reshape(2, 3));
        }
        state.put("scalar", torch.scalar_tensor(new Scalar(7.5)));
        state.put("empty", torch.empty(new long[] {0, 4}));
        Path file = dir.resolve("dtypes.ckpt");
        TorchFiles.write(file, state);
        @SuppressWarnings("unchecked")
        Map<Object, Object> loaded = (Map<Object, Object>) TorchFiles.read(file);
        for (Map.Entry<String, Object> e : state.entrySet()) {
            Tensor expected = (Tensor) e.getValue();
            Tensor actual = (Tensor) loaded.get(e.getKey());
            assertEquals(expected.scalar_type().intern(), actual.scalar_type().intern(), e.getKey());
            assertArrayEquals(shape(expected), shape(actual), e.getKey());
            assertTrue(expected.equal(actual), e.getKey());
        }
    }

    @Test
    void viewsKeepSharingOneStorage() {
        Tensor base = arange(12, torch.ScalarType.Float).reshape(3, 4);
        Tensor row = base.select(0, 1);
        Tensor column = base.select(1, 2);
        Path file = dir.resolve("views.ckpt");
        TorchFiles.write(file, List.of(base, row, column));
        @SuppressWarnings("unchecked")
        List<Object> loaded = (List<Object>) TorchFiles.read(file);
        Tensor loadedBase = (Tensor) loaded.get(0);
        Tensor loadedRow = (Tensor) loaded.get(1);
        Tensor loadedColumn = (Tensor) loaded.get(2);
        assertTrue(row.equal(loadedRow));
        assertTrue(column.equal(loadedColumn));
        assertEquals(column.storage_offset(), loadedColumn.storage_offset());
        assertArrayEquals(new long[] {4}, strides(loadedColumn));
        // One storage in the file: writing through the base shows in the views.
        loadedBase.fill_(new Scalar(-1.0));
        assertEquals(-1.0, loadedRow.sum().item_double() / 4, 0.0);
        assertEquals(-1.0, loadedColumn.sum().item_double() / 3, 0.0);
    }

    @Test
    void sharedObjectsStayShared() {
        List<Object> shared = new ArrayList<>(List.of(1L, 2L));
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("a", shared);
        state.put("b", shared);
        Path file = dir.resolve("shared.ckpt");
        new Fabric().save(file, state);
        Map<String, Object> loaded = new Fabric().load(file);
        assertSame(loaded.get("a"), loaded.get("b"));
    }

    @Test
    void failedSaveLeavesTheOldFileIntact() throws IOException {
        Path file = dir.resolve("keep.ckpt");
        new Fabric().save(file, Map.of("version", 1L));
        byte[] before = Files.readAllBytes(file);
        Map<String, Object> bad = new LinkedHashMap<>();
        bad.put("ok", 1L);
        bad.put("bad", new Object());
        CheckpointException e = assertThrows(CheckpointException.class, () -> new Fabric().save(file, bad));
        assertTrue(e.getMessage().contains("java.lang.Object"), e.getMessage());
        assertArrayEquals(before, Files.readAllBytes(file));
        try (Stream<Path> files = Files.list(dir)) {
            assertEquals(List.of(file), files.toList(), "no temporary files left behind");
        }
    }

    @Test
    void saveIntoMissingFoldersCreatesThem() {
        Path file = dir.resolve("a/b/c.ckpt");
        new Fabric().save(file, Map.of("x", 1L));
        assertEquals(1L, new Fabric().load(file).get("x"));
    }

    @Test
    void missingAndCorruptFilesGiveClearErrors() throws IOException {
        Path missing = dir.resolve("missing.ckpt");
        CheckpointException e = assertThrows(CheckpointException.class, () -> new Fabric().load(missing));
        assertTrue(e.getMessage().contains("missing.ckpt"), e.getMessage());

        Path good = dir.resolve("good.ckpt");
        new Fabric().save(good, Map.of("w", arange(100, torch.ScalarType.Float)));
        byte[] bytes = Files.readAllBytes(good);

        Path truncated = dir.resolve("truncated.ckpt");
        Files.write(truncated, java.util.Arrays.copyOf(bytes, bytes.length / 2));
        e = assertThrows(CheckpointException.class, () -> new Fabric().load(truncated));
        assertTrue(e.getMessage().contains("truncated.ckpt"), e.getMessage());

        Path flipped = dir.resolve("flipped.ckpt");
        byte[] corrupt = bytes.clone();
        corrupt[bytes.length / 2] ^= 0x40; // inside the tensor data: caught by the CRC
        Files.write(flipped, corrupt);
        e = assertThrows(CheckpointException.class, () -> new Fabric().load(flipped));
        assertTrue(e.getMessage().contains("flipped.ckpt") && e.getMessage().contains("CRC"), e.getMessage());

        Path text = dir.resolve("text.ckpt");
        Files.writeString(text, "this is not a checkpoint");
        e = assertThrows(CheckpointException.class, () -> new Fabric().load(text));
        assertTrue(e.getMessage().contains("text.ckpt"), e.getMessage());
    }

    @Test
    void rawLoadOfANonDictionaryIsExplained() {
        Path file = dir.resolve("list.pt");
        TorchFiles.write(file, List.of(1L));
        CheckpointException e = assertThrows(CheckpointException.class, () -> new Fabric().load(file));
        assertTrue(e.getMessage().contains("not a dictionary"), e.getMessage());
        assertEquals(List.of(1L), TorchFiles.read(file));
    }

    @Test
    void fsyncCanBeSkipped() {
        Path file = dir.resolve("fast.pt");
        TorchFiles.write(file, Map.of("x", 2L), WriteOptions.DEFAULT.withFsync(false));
        assertEquals(Map.of("x", 2L), TorchFiles.read(file));
        assertFalse(Files.exists(dir.resolve("fast.pt.tmp")));
    }

    static long[] shape(Tensor t) {
        long[] out = new long[(int) t.dim()];
        for (int i = 0; i < out.length; i++) {
            out[i] = t.size(i);
        }
        return out;
    }

    static long[] strides(Tensor t) {
        long[] out = new long[(int) t.dim()];
        for (int i = 0; i < out.length; i++) {
            out[i] = t.stride(i);
        }
        return out;
    }

    @Test
    void unsafeGlobalsAreRefusedOnWriteUnlessAllowed() {
        Map<String, Object> hparams = new LinkedHashMap<>();
        hparams.put("lr", 0.1);
        PyObject namespace = new PyObject(PyObject.Construction.NEW_OBJ, new PyGlobal("argparse", "Namespace"),
                PyTuple.of(), null, hparams, List.of(), List.of());
        PyObject call = new PyObject(PyObject.Construction.REDUCE, new PyGlobal("posix", "system"), PyTuple.of("echo hi"),
                null, null, List.of(), List.of());
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("hparams", namespace);
        state.put("callbacks", List.of(1L, call));
        Path file = dir.resolve("unsafe.ckpt");

        CheckpointException refused = assertThrows(CheckpointException.class, () -> TorchFiles.write(file, state));
        assertTrue(refused.getMessage().contains("argparse.Namespace at ['hparams']"), refused.getMessage());
        assertTrue(refused.getMessage().contains("posix.system at ['callbacks'][1]"), refused.getMessage());
        assertFalse(Files.exists(file));
        assertThrows(CheckpointException.class, () -> new Fabric().save(file, state));
        CheckpointException async = assertThrows(CheckpointException.class,
                () -> new Fabric().saveAsync(file, state, Map.of(), null).awaitWritten());
        assertTrue(async.getMessage().contains("argparse.Namespace at ['hparams']"), async.getMessage());
        assertFalse(Files.exists(file));

        TorchFiles.write(file, state, WriteOptions.DEFAULT.allowUnsafeGlobals());
        assertEquals(List.of("argparse.Namespace", "posix.system"), TorchFiles.unsafeGlobals(file));
        assertTrue(TorchFiles.verify(file).contains("WARNING: 2 globals"), TorchFiles.verify(file));
        // Read inertly by default, refused as torch.load(weights_only=True) refuses it on request.
        Map<?, ?> loaded = (Map<?, ?>) TorchFiles.read(file);
        assertInstanceOf(PyObject.class, loaded.get("hparams"));
        CheckpointException weightsOnly = assertThrows(CheckpointException.class,
                () -> TorchFiles.read(file, ReadOptions.DEFAULT.withWeightsOnly(true)));
        assertTrue(weightsOnly.getMessage().contains("argparse.Namespace, posix.system"), weightsOnly.getMessage());
        // Load-then-save does not launder them either.
        Path copy = dir.resolve("copy.ckpt");
        assertThrows(CheckpointException.class, () -> TorchFiles.convert(file, copy));
        assertFalse(Files.exists(copy));
        TorchFiles.convert(file, copy, true, null);
        assertEquals(TorchFiles.unsafeGlobals(file), TorchFiles.unsafeGlobals(copy));
        new Fabric().allowUnsafeGlobals(true).save(copy, state);

        Path safe = dir.resolve("safe.ckpt");
        TorchFiles.write(safe, Map.of("w", arange(2, torch.ScalarType.Float), "dtype", new PyGlobal("torch", "float16")));
        assertEquals(List.of(), TorchFiles.unsafeGlobals(safe));
        assertInstanceOf(Map.class, TorchFiles.read(safe, ReadOptions.eager().withWeightsOnly(true)));
    }
}
