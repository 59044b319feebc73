package io.fabricckpt.cli;

import io.fabricckpt.Fabric;
import io.fabricckpt.PyTuple;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/** The README's first command: a checkpoint made in Java, saved, loaded back and shown. */
final class Demo {
    private Demo() {}

    static void run(Path dir) {
        try {
            Path folder = dir != null ? Files.createDirectories(dir) : Files.createTempDirectory("fabric-ckpt-demo");
            Path file = folder.resolve("demo.ckpt");

            Map<String, Object> state = new LinkedHashMap<>();
            state.put("weights", torch.arange(new org.bytedeco.pytorch.Scalar(6.0)).reshape(2, 3));
            state.put("iteration", 42L);
            state.put("lr", 1e-3);
            state.put("tags", List.of("java", "fabric"));
            state.put("shape", PyTuple.of(2L, 3L));

            Fabric fabric = new Fabric();
            fabric.save(file, state);
            System.out.println("saved " + file + " (" + Files.size(file) + " bytes)");

            Map<String, Object> loaded = fabric.load(file);
            System.out.println("loaded " + loaded.size() + " entries:");
            Inspect.print(loaded, System.out);
            System.out.println("load it in Python: torch.load('" + file + "', weights_only=True)");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
