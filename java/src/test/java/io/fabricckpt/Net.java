package io.fabricckpt;

import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Optimizer;
import org.bytedeco.pytorch.Scalar;
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

    /** One optimizer step on a random batch of 8 (loss: mean of the squared outputs). */
    public void trainStep(Optimizer optimizer) {
        forwardBackward(optimizer);
        optimizer.step();
    }

    /** The gradients of a random batch of 8: reads the parameters, changes only their gradients. */
    public void forwardBackward(Optimizer optimizer) {
        optimizer.zero_grad();
        Tensor loss = forward(torch.randn(8, fc1.weight().size(1))).pow(new Scalar(2)).mean();
        loss.backward();
    }
}
