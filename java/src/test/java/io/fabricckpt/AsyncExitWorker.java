package io.fabricckpt;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;

/**
 * A JVM that requests background saves and calls {@code System.exit} at once (as the CLI and many
 * services do): {@link AsyncSaverTest} checks that the saves still land. Arguments: DIR COUNT MIB.
 */
public final class AsyncExitWorker {
    private AsyncExitWorker() {}

    public static void main(String[] args) {
        Path dir = Path.of(args[0]);
        int count = Integer.parseInt(args[1]);
        Fabric fabric = new Fabric();
        for (int i = 0; i < count; i++) {
            Map<String, Object> state = new LinkedHashMap<>();
            state.put("weights", torch.arange(new Scalar(Long.parseLong(args[2]) << 20), new TensorOptions(torch.ScalarType.Float)));
            state.put("step", (long) i);
            fabric.saveAsync(dir.resolve("ckpt-" + i + ".ckpt"), state);
        }
        System.exit(0); // neither close() nor a wait on the futures
    }
}
