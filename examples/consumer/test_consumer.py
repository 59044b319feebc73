"""The example consumer against an installed fabric-ckpt: Python Lightning saves, the Java project
(whose only dependency is io.fabricckpt:fabric-ckpt-platform) loads, runs forward, trains one step,
saves; Lightning's fabric.load checks the result against the same step done in Python.

Environment: FABRICCKPT_CONSUMER_DIR (a copy of examples/consumer), FABRICCKPT_M2 (the local Maven
repository fabric-ckpt was installed into). scripts/cold-path.sh sets both."""
import os
import subprocess
from pathlib import Path

import pytest
import torch
from lightning.fabric import Fabric


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def batch():
    return torch.arange(12.0).reshape(3, 4) / 10, torch.ones(3, 2)


def train_step(model, optimizer):
    x, y = batch()
    optimizer.zero_grad()
    out = model(x)
    loss = torch.nn.functional.mse_loss(out, y)
    loss.backward()
    optimizer.step()
    return out.detach()


@pytest.fixture(scope="module")
def consumer():
    project = Path(os.environ["FABRICCKPT_CONSUMER_DIR"])
    m2 = os.environ["FABRICCKPT_M2"]
    subprocess.run(["mvn", "-B", "-q", "-Dstyle.color=never", f"-Dmaven.repo.local={m2}", "package"],
                   cwd=project, check=True)
    classpath = f"{project / 'target' / 'classes'}:{(project / 'target' / 'classpath.txt').read_text().strip()}"
    return classpath


def test_java_fine_tunes_a_lightning_checkpoint(consumer, tmp_path):
    fabric = Fabric(accelerator="cpu", devices=1)
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_step(model, optimizer)  # so that the optimizer has state (exp_avg, exp_avg_sq, step)
    fabric.save(tmp_path / "in.ckpt", {"model": model, "optimizer": optimizer, "step": 7})

    run = subprocess.run(["java", "-cp", consumer, "example.Consumer", str(tmp_path / "in.ckpt"),
                          str(tmp_path / "out.ckpt")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    forward = [line for line in run.stdout.splitlines() if line.startswith("forward ")]
    assert len(forward) == 1, run.stdout

    # the same forward pass and step in Python, from the same file
    expected_model = Net()
    expected_opt = torch.optim.Adam(expected_model.parameters(), lr=1e-3)
    state = {"model": expected_model, "optimizer": expected_opt, "step": 0}
    fabric.load(tmp_path / "in.ckpt", state)
    assert state["step"] == 7
    out = train_step(expected_model, expected_opt)
    java_out = torch.tensor([float(v) for v in forward[0].split()[1:]]).reshape(3, 2)
    torch.testing.assert_close(java_out, out, rtol=1e-6, atol=1e-7)

    loaded_model = Net()
    loaded_opt = torch.optim.Adam(loaded_model.parameters(), lr=1e-3)
    loaded = {"model": loaded_model, "optimizer": loaded_opt, "step": 0}
    fabric.load(tmp_path / "out.ckpt", loaded)
    assert loaded["step"] == 8
    for name, p in expected_model.state_dict().items():
        torch.testing.assert_close(loaded_model.state_dict()[name], p, rtol=1e-6, atol=1e-7, msg=name)
    assert loaded_opt.state_dict()["param_groups"][0]["lr"] == pytest.approx(1e-2)
    for index, s in expected_opt.state_dict()["state"].items():
        got = loaded_opt.state_dict()["state"][index]
        assert float(got["step"]) == float(s["step"]) == 2.0
        torch.testing.assert_close(got["exp_avg"], s["exp_avg"], rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(got["exp_avg_sq"], s["exp_avg_sq"], rtol=1e-6, atol=1e-10)
    # and the parameters moved from what Python saved
    assert not torch.equal(loaded_model.state_dict()["fc1.weight"], torch.load(tmp_path / "in.ckpt")["model"]["fc1.weight"])
