package io.fabricckpt;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.Parameter;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Memory-mapped and eager (parallel) loads through {@link TorchFiles#read(Path, ReadOptions)}. */
class MmapLoadTest {
    @TempDir
    Path dir;

    private static Tensor arange(double n, torch.ScalarType dtype) {
        return torch.arange(new Scalar(n), new TensorOptions(dtype));
    }

    /** Big enough for several 4 MiB pieces per storage, with views and mixed dtypes. */
    private static Map<String, Object> state() {
        Tensor base = arange(3 << 20, torch.ScalarType.Float).reshape(3, -1); // 12 MiB
        Map<String, Object> model = new LinkedHashMap<>();
        model.put("big", base);
        model.put("column", base.select(1, 7));
        model.put("half", arange(1000, torch.ScalarType.Half));
        model.put("long", arange(5 << 20, torch.ScalarType.Long)); // 40 MiB
        model.put("param", new Parameter(arange(10, torch.ScalarType.Double), true));
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("step", 42L);
        state.put("tags", List.of("a", "b"));
        return state;
    }

    private static Tensor tensor(Object loaded, String key) {
        Object v = ((Map<?, ?>) ((Map<?, ?>) loaded).get("model")).get(key);
        return v instanceof Parameter p ? p.data() : (Tensor) v;
    }

    @Test
    void mappedLoadEqualsEagerLoadAndTheDefaultIsEager() {
        Path file = dir.resolve("m.ckpt");
        TorchFiles.write(file, state());
        Object mapped = TorchFiles.read(file, ReadOptions.mapped());
        Object eager = TorchFiles.read(file, ReadOptions.eager());
        Object byDefault = TorchFiles.read(file);
        assertEquals(ReadOptions.DEFAULT, ReadOptions.eager());
        assertTrue(!ReadOptions.DEFAULT.mmap() && ReadOptions.mapped().mmap());
        for (String key : List.of("big", "column", "half", "long", "param")) {
            Tensor m = tensor(mapped, key);
            Tensor e = tensor(eager, key);
            assertEquals(e.scalar_type().intern(), m.scalar_type().intern(), key);
            assertTrue(m.equal(e), key); // same shape and values
            assertTrue(tensor(byDefault, key).equal(e), key);
        }
        assertInstanceOf(Parameter.class, ((Map<?, ?>) ((Map<?, ?>) mapped).get("model")).get("param"));
        assertEquals(42L, ((Map<?, ?>) mapped).get("step"));
        // Views still share their storage.
        tensor(mapped, "big").select(1, 7).fill_(new Scalar(-3.0));
        assertEquals(-3.0, tensor(mapped, "column").get(1).item_double());
    }

    @Test
    void writingToAMappedTensorDoesNotChangeTheFile() throws IOException {
        Path file = dir.resolve("cow.ckpt");
        TorchFiles.write(file, state());
        byte[] before = Files.readAllBytes(file);
        Object mapped = TorchFiles.read(file, ReadOptions.mapped());
        Tensor big = tensor(mapped, "big");
        big.fill_(new Scalar(7.0));
        tensor(mapped, "long").add_(new Scalar(1));
        assertEquals(7.0, big.get(2).get(100).item_double());
        assertArrayEquals(before, Files.readAllBytes(file));
        // A second mapping of the same file sees the file, not the first one's private changes.
        assertEquals(100.0, tensor(TorchFiles.read(file, ReadOptions.mapped()), "big").get(0).get(100)
                .item_double());
        // Writing the changed tree elsewhere saves the changed values.
        Path copy = dir.resolve("copy.ckpt");
        TorchFiles.write(copy, mapped);
        assertEquals(7.0, tensor(TorchFiles.read(copy, ReadOptions.eager()), "big").get(0).get(0)
                .item_double());
    }

    @Test
    void mappedTensorsSurviveTheFileBeingReplaced() {
        Path file = dir.resolve("replaced.ckpt");
        TorchFiles.write(file, state());
        Tensor big = tensor(TorchFiles.read(file, ReadOptions.mapped()), "big");
        TorchFiles.write(file, Map.of("other", 1L)); // atomic: a new file is renamed over the old one
        assertEquals(12345.0, big.view(-1).get(12345).item_double());
        assertEquals(Map.of("other", 1L), TorchFiles.read(file));
    }

    @Test
    void eagerLoadChecksStorageCrcsMappedLoadDoesNot() throws IOException {
        Path file = dir.resolve("flipped.ckpt");
        TorchFiles.write(file, state());
        byte[] bytes = Files.readAllBytes(file);
        bytes[bytes.length / 2] ^= 0x20; // inside the 40 MiB storage
        Files.write(file, bytes);
        CheckpointException e = assertThrows(CheckpointException.class,
                () -> TorchFiles.read(file, ReadOptions.eager()));
        assertTrue(e.getMessage().contains("flipped.ckpt") && e.getMessage().contains("CRC"), e.getMessage());
        TorchFiles.read(file, ReadOptions.eager().withVerifyCrc(false));
        TorchFiles.read(file, ReadOptions.mapped());
        assertThrows(CheckpointException.class, () -> TorchFiles.verify(file));
    }

    /**
     * Another program truncating the file or rewriting it in place (as Python's torch.save does)
     * while the JVM reads it with the default options: each read gives one whole version or a
     * CheckpointException, the JVM lives on, and tensors once loaded never change.
     */
    @Test
    void aFileChangedWhileJavaReadsItNeverCrashesTheJvm() throws Exception {
        Path file = dir.resolve("changing.ckpt");
        Path a = dir.resolve("a.ckpt");
        Path b = dir.resolve("b.ckpt");
        TorchFiles.write(a, Map.of("w", arange(1 << 20, torch.ScalarType.Float)));
        TorchFiles.write(b, Map.of("w", arange(1 << 20, torch.ScalarType.Float).neg()));
        byte[] bytesA = Files.readAllBytes(a);
        byte[] bytesB = Files.readAllBytes(b);
        Files.write(file, bytesA);
        double sumA = 0.5 * (1 << 20) * ((1 << 20) - 1);
        java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
        Thread mutator = new Thread(() -> {
            for (int round = 0; !stop.get(); round++) {
                try (java.nio.channels.FileChannel channel = java.nio.channels.FileChannel.open(file,
                        java.nio.file.StandardOpenOption.WRITE)) {
                    if (round % 3 == 0) {
                        channel.truncate(bytesA.length / (2 + round % 5));
                    }
                    channel.truncate(0); // in place, as open(path, "wb")
                    channel.write(java.nio.ByteBuffer.wrap(round % 2 == 0 ? bytesA : bytesB));
                    Thread.sleep(1);
                } catch (IOException | InterruptedException e) {
                    throw new IllegalStateException(e);
                }
            }
        });
        mutator.start();
        List<Tensor> loaded = new ArrayList<>();
        int whole = 0;
        int refused = 0;
        long until = System.nanoTime() + 2_000_000_000L;
        while (System.nanoTime() < until) {
            try {
                Tensor w = (Tensor) ((Map<?, ?>) TorchFiles.read(file)).get("w");
                double sum = w.sum().item_double();
                assertTrue(sum == sumA || sum == -sumA, "a read mixed two versions: sum " + sum);
                loaded.add(w);
                whole++;
            } catch (CheckpointException e) {
                assertTrue(e.getMessage().contains("changing.ckpt"), e.getMessage());
                refused++;
            }
        }
        stop.set(true);
        mutator.join();
        for (Tensor w : loaded) {
            double sum = w.sum().item_double();
            assertTrue(sum == sumA || sum == -sumA, "a loaded tensor changed: sum " + sum);
        }
        assertTrue(whole + refused > 10, whole + " whole, " + refused + " refused");
    }

    @Test
    void eagerLoadWithAnyThreadCountAndProgress() {
        Path file = dir.resolve("p.ckpt");
        Map<String, Object> state = state();
        List<long[]> writes = new ArrayList<>();
        TorchFiles.write(file, state, WriteOptions.DEFAULT,
                (done, total) -> writes.add(new long[] {done, total}));
        long[] last = writes.get(writes.size() - 1);
        assertEquals(last[0], last[1]);
        assertEquals(file.toFile().length(), last[1]);
        for (int threads : new int[] {1, 2, 3}) {
            List<long[]> reads = new ArrayList<>();
            Object loaded = TorchFiles.read(file, ReadOptions.eager().withThreads(threads),
                    (done, total) -> reads.add(new long[] {done, total}));
            assertTrue(tensor(loaded, "long").equal(arange(5 << 20, torch.ScalarType.Long)));
            long[] end = reads.get(reads.size() - 1);
            assertEquals(end[0], end[1]);
            assertTrue(end[1] >= 52L << 20, Long.toString(end[1]));
        }
        assertThrows(IllegalArgumentException.class, () -> ReadOptions.eager().withThreads(-1));
    }
}
