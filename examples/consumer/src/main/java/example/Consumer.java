package example;

import io.fabricckpt.Fabric;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import org.bytedeco.pytorch.Adam;
import org.bytedeco.pytorch.AdamOptions;
import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * Fine-tunes in Java what Python Lightning saved: loads {@code fabric.save(IN, {"model", "optimizer",
 * "step"})} into a Java model and Adam, runs a forward pass, trains one step, saves OUT for Python's
 * {@code fabric.load}.
 *
 * <pre>java -cp ... example.Consumer IN.ckpt OUT.ckpt</pre>
 */
public final class Consumer {
    /** In Python: fc1 = nn.Linear(4, 8), fc2 = nn.Linear(8, 2), forward = fc2(relu(fc1(x))). */
    static final class Net extends Module {
        final LinearImpl fc1 = register_module("fc1", new LinearImpl(4, 8));
        final LinearImpl fc2 = register_module("fc2", new LinearImpl(8, 2));

        Tensor forward(Tensor x) {
            return fc2.forward(torch.relu(fc1.forward(x)));
        }
    }

    public static void main(String[] args) {
        if (args.length != 2) {
            System.err.println("usage: example.Consumer IN.ckpt OUT.ckpt");
            System.exit(2);
        }
        Net model = new Net();
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3)); // the file's lr replaces it
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("optimizer", optimizer);
        state.put("step", 0L);
        Fabric fabric = new Fabric();
        fabric.load(Path.of(args[0]), state);

        // the same batch as the Python side: x = arange(12).reshape(3, 4) / 10, y = ones(3, 2)
        Tensor x = torch.arange(new Scalar(12.0)).reshape(3, 4).div(new Scalar(10.0));
        Tensor y = torch.ones(3, 2);
        Tensor out = model.forward(x);
        StringBuilder forward = new StringBuilder("forward");
        for (int i = 0; i < 3; i++) {
            for (int j = 0; j < 2; j++) {
                forward.append(String.format(Locale.ROOT, " %.9g", out.get(i).get(j).item_double()));
            }
        }
        System.out.println(forward);

        optimizer.zero_grad();
        Tensor loss = torch.mse_loss(out, y);
        loss.backward();
        optimizer.step();
        state.put("step", (Long) state.get("step") + 1);
        fabric.save(Path.of(args[1]), state);
        System.out.printf(Locale.ROOT, "loss %.9g; saved step %d to %s%n", loss.item_double(), state.get("step"), args[1]);
    }
}
