package io.fabricckpt;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;

/**
 * A JVM that requests background saves, for {@link AsyncSaverTest}. Arguments: DIR COUNT MIB [loop].
 * By default it requests COUNT saves ({@code ckpt-<i>.ckpt}) and calls {@code System.exit} at once,
 * as the CLI and many services do: the saves must still land. With {@code loop} it saves
 * {@code ckpt.ckpt} over and over (step 0, 1, ...) until it is killed, printing {@code requested <step>}.
 */
public final class AsyncExitWorker {
    private AsyncExitWorker() {}

    public static void main(String[] args) {
        Path dir = Path.of(args[0]);
        int count = Integer.parseInt(args[1]);
        Fabric fabric = new Fabric();
        if (args.length > 3 && args[3].equals("loop")) {
            for (long step = 0;; step++) {
                Map<String, Object> state = new LinkedHashMap<>();
                state.put("weights", torch.full(new long[] {Long.parseLong(args[2]) << 18}, new Scalar((double) step)));
                state.put("step", step);
                fabric.saveAsync(dir.resolve("ckpt.ckpt"), state);
                System.out.println("requested " + step);
                System.out.flush();
            }
        }
        for (int i = 0; i < count; i++) {
            Map<String, Object> state = new LinkedHashMap<>();
            state.put("weights", torch.arange(new Scalar(Long.parseLong(args[2]) << 20), new TensorOptions(torch.ScalarType.Float)));
            state.put("step", (long) i);
            fabric.saveAsync(dir.resolve("ckpt-" + i + ".ckpt"), state);
        }
        System.exit(0); // neither close() nor a wait on the futures
    }
}
