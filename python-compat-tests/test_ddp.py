"""DDP across processes: Java ranks (2 JVMs through io.fabricckpt.dist.LocalLauncher) write a checkpoint
that torch.load and Lightning's fabric.load read; Lightning with strategy="ddp" on CPU (2 processes,
gloo) writes one that 2 JVMs load. Both sides describe what they hold with the same digest: every
tensor of the model's and the optimizer's state dicts as "path:sum" (DdpWorker.digest)."""
import os
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch

from twin_models import Net

WORKER = "io.fabricckpt.dist.DdpWorker"
LAUNCHER = "io.fabricckpt.dist.LocalLauncher"


def digest(model_state, optimizer_state):
    parts = []

    def walk(path, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{path}.{k}", x)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(f"{path}.{i}", x)
        elif isinstance(v, torch.Tensor):
            parts.append(f"{path}:{v.detach().double().sum().item():.6e}")

    walk("model", model_state)
    walk("optimizer", optimizer_state)
    return ",".join(sorted(parts))


def rank_lines(stdout, rank, prefix):
    tag = f"[rank {rank}] {prefix}"
    return [line[len(tag):] for line in stdout.splitlines() if line.startswith(tag)]


def launch(java, *args):
    proc = java.run(LAUNCHER, "-n", 2, "--timeout", 180, WORKER, *args, check=False)
    assert proc.returncode == 0, f"launch failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_java_ddp_checkpoint_reads_in_python(java, tmp_path):
    out = launch(java, "save", tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["ddp.ckpt"]  # rank 0 alone wrote, atomically
    path = tmp_path / "ddp.ckpt"
    java_digests = [rank_lines(out, r, "digest=") for r in (0, 1)]
    assert java_digests[0] == java_digests[1] and len(java_digests[0]) == 1

    ckpt = torch.load(path, weights_only=True)
    assert list(ckpt) == ["model", "optimizer", "step", "hparams"]
    assert ckpt["step"] == 5 and ckpt["hparams"] == {"lr": 1e-3, "name": "ddp"}
    assert java_digests[0][0] == digest(ckpt["model"], ckpt["optimizer"]) + ";step=5"

    # Lightning's fabric.load restores a twin model and optimizer from it
    fabric = L.Fabric(accelerator="cpu", devices=1)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.5)
    state = {"model": model, "optimizer": optimizer, "step": 0}
    remainder = fabric.load(path, state)
    assert state["step"] == 5 and list(remainder) == ["hparams"]
    assert digest(model.state_dict(), optimizer.state_dict()) == digest(ckpt["model"], ckpt["optimizer"])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


LIGHTNING_DDP = textwrap.dedent('''
    import sys
    import torch
    import lightning as L
    from twin_models import Net

    def main(fabric, path):
        torch.manual_seed(7)
        model = Net()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model, optimizer = fabric.setup(model, optimizer)
        torch.manual_seed(100 + fabric.global_rank)  # different data per rank; DDP averages the gradients
        loss = model(torch.randn(8, 4)).pow(2).mean()
        fabric.backward(loss)
        optimizer.step()
        fabric.save(path, {"model": model, "optimizer": optimizer, "step": 5})
        print(f"rank {fabric.global_rank} of {fabric.world_size} saved", flush=True)

    if __name__ == "__main__":
        fabric = L.Fabric(accelerator="cpu", devices=2, strategy="ddp")
        fabric.launch(main, sys.argv[1])
''')


def test_lightning_ddp_checkpoint_loads_on_two_jvms(java, tmp_path):
    script = tmp_path / "lightning_ddp.py"
    script.write_text(LIGHTNING_DDP)
    path = tmp_path / "lightning-ddp.ckpt"
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE",
                                                          "LOCAL_RANK", "NODE_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(__file__), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, f"Lightning DDP failed:\n{proc.stdout}\n{proc.stderr}"
    assert "rank 0 of 2 saved" in proc.stdout and "rank 1 of 2 saved" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".ckpt") == ["lightning-ddp.ckpt"]

    ckpt = torch.load(path, weights_only=True)
    expected = digest(ckpt["model"], ckpt["optimizer"]) + ";step=5"
    out = launch(java, "load", path)
    for rank in (0, 1):
        assert rank_lines(out, rank, "digest=") == [expected], out
        assert rank_lines(out, rank, "remainder=") == ["[]"], out
