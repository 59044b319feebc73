package io.fabricckpt;

import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/** A small MLP, the Java counterpart of torch.nn.Sequential(Linear, ReLU, Linear) with names fc1/fc2. */
public class Net extends Module {
    public final LinearImpl fc1;
    public final LinearImpl fc2;

    public Net(long in, long hidden, long out) {
        fc1 = register_module("fc1", new LinearImpl(in, hidden));
        fc2 = register_module("fc2", new LinearImpl(hidden, out));
    }

    public Tensor forward(Tensor x) {
        return fc2.forward(torch.relu(fc1.forward(x)));
    }
}
