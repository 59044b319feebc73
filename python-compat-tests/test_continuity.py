"""Training continuity across languages: a run checkpointed in one language and resumed in the
other follows the same loss curve as resuming in the original language.

The model is the MLP of java/src/test/java/io/fabricckpt/Net.java (fc1: Linear(4, 8), ReLU,
fc2: Linear(8, 2)) trained with Adam(lr=1e-2) on MSE. Both sides run the same float32 kernels of
the same libtorch version, so the curves agree to float32 rounding: tolerance rtol=1e-4, atol=1e-6.
"""
import lightning as L
import torch

from twin_models import Net

STEPS = 20
RTOL, ATOL = 1e-4, 1e-6


def batches(path, seed, steps=STEPS):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, 16, 4, generator=g)
    y = torch.stack([xb[:, :2] * 2.0 - xb[:, 2:] for xb in x])
    torch.save({"x": x, "y": y}, path)
    return x, y


def train(model, optimizer, x, y):
    losses = []
    for xb, yb in zip(x, y):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def fresh(fabric):
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return {"model": model, "optimizer": optimizer, "step": 0}


def java_losses(java, *args):
    return [float(line) for line in java.tool("train", *args).split()]


def test_python_checkpoint_resumed_in_java(java, tmp_path):
    fabric = L.Fabric(accelerator="cpu", devices=1)
    state = fresh(fabric)
    x0, y0 = batches(tmp_path / "warmup.pt", seed=1)
    train(state["model"], state["optimizer"], x0, y0)
    state["step"] = STEPS
    fabric.save(tmp_path / "python.ckpt", state)

    x, y = batches(tmp_path / "data.pt", seed=2)
    python = train(state["model"], state["optimizer"], x, y)
    java_side = java_losses(java, tmp_path / "python.ckpt", tmp_path / "data.pt", tmp_path / "java.ckpt")
    print("python", python[-3:], "java", java_side[-3:])
    torch.testing.assert_close(torch.tensor(java_side), torch.tensor(python), rtol=RTOL, atol=ATOL)
    assert python[-1] < python[0]


def test_java_checkpoint_resumed_in_python(java, tmp_path):
    batches(tmp_path / "warmup.pt", seed=3)
    java_losses(java, "-", tmp_path / "warmup.pt", tmp_path / "java.ckpt")

    x, y = batches(tmp_path / "data.pt", seed=4)
    java_side = java_losses(java, tmp_path / "java.ckpt", tmp_path / "data.pt", tmp_path / "java2.ckpt")

    fabric = L.Fabric(accelerator="cpu", devices=1)
    state = fresh(fabric)
    state["model"].fc1.weight.data.zero_()  # anything: the checkpoint must overwrite it
    remainder = fabric.load(tmp_path / "java.ckpt", state)
    assert remainder == {} and state["step"] == STEPS
    python = train(state["model"], state["optimizer"], x, y)
    print("python", python[-3:], "java", java_side[-3:])
    torch.testing.assert_close(torch.tensor(python), torch.tensor(java_side), rtol=RTOL, atol=ATOL)
