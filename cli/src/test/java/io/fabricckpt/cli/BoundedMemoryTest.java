package io.fabricckpt.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.TorchFiles;
import io.fabricckpt.core.WriteOptions;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * verify, diff and convert stream a file tensor by tensor: on a checkpoint larger than the memory bound
 * this test sets (the CLI's own resident baseline + 64 MiB + the largest tensor), each command's peak
 * resident memory (VmHWM of its JVM) stays below the bound, and its result is right.
 */
class BoundedMemoryTest {
    private static final int TENSORS = 24;
    private static final long ELEMENTS = 4L << 20; // float32: 16 MiB a tensor, 384 MiB a file
    private static final long TENSOR_BYTES = ELEMENTS * 4;

    @TempDir
    Path dir;

    private static Path write(Path path, boolean changed) {
        Map<String, Object> model = new LinkedHashMap<>();
        for (int i = 0; i < TENSORS; i++) {
            Tensor t = torch.full(new long[] {ELEMENTS}, new Scalar((double) i));
            if (changed && i == 7) {
                t.narrow(0, 123_457, 1).fill_(new Scalar(9.5)); // 7.0 -> 9.5: max abs difference 2.5
            }
            model.put("t" + i, t);
        }
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("step", 1L);
        TorchFiles.write(path, state, WriteOptions.DEFAULT.withFsync(false));
        return path;
    }

    @Test
    void verifyDiffAndConvertStayWithinTheBoundOnALargerFile() throws Exception {
        Path a = write(dir.resolve("a.ckpt"), false), b = write(dir.resolve("b.ckpt"), true);
        Path small = dir.resolve("small.ckpt");
        Map<String, Object> tiny = new LinkedHashMap<>();
        tiny.put("w", torch.full(new long[] {4}, new Scalar(1.0)));
        TorchFiles.write(small, tiny);

        long baseline = ChildCli.run(dir, "verify", small.toString()).peakBytes();
        long bound = baseline + (64L << 20) + TENSOR_BYTES;
        long size = Files.size(a);
        assertTrue(size > bound, "the file (" + size + " bytes) must be larger than the bound (" + bound + ")");

        ChildCli.Result verify = ChildCli.run(dir, "verify", a.toString());
        assertEquals(0, verify.code(), verify.err());
        assertTrue(verify.out().contains("OK (") && verify.out().contains(TENSORS + " tensors"), verify.out());

        ChildCli.Result diff = ChildCli.run(dir, "diff", a.toString(), b.toString());
        assertEquals(1, diff.code(), diff.out() + diff.err());
        assertTrue(diff.out().contains("~ model.t7: max abs difference 2.5"), diff.out());
        assertEquals(2, diff.out().lines().count(), "only t7 differs:\n" + diff.out());

        Path converted = dir.resolve("converted.ckpt");
        ChildCli.Result convert = ChildCli.run(dir, "convert", a.toString(), converted.toString());
        assertEquals(0, convert.code(), convert.err());
        assertEquals(-1, Files.mismatch(a, converted), "convert gives the file's bytes back");

        for (var r : Map.of("verify", verify, "diff", diff, "convert", convert).entrySet()) {
            System.out.printf("BoundedMemoryTest: %s of a %d MiB file: peak RSS %d MiB (bound %d MiB, baseline %d MiB), %d ms%n",
                    r.getKey(), size >> 20, r.getValue().peakBytes() >> 20, bound >> 20, baseline >> 20, r.getValue().millis());
            assertTrue(r.getValue().peakBytes() < bound, r.getKey() + " peaked at " + r.getValue().peakBytes()
                    + " bytes, above the bound of " + bound);
        }
    }
}
