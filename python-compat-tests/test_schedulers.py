"""LR schedulers across languages: a Fabric checkpoint with {"model", "optimizer", "scheduler"}
(SGD with momentum, StepLR) written by one side resumes on the other with the same learning rate,
the same step count and the same schedule from there on; the same for ReduceLROnPlateau.

The Java side is io.fabricckpt.compat.ScheduleTool: Net(4, 8, 2), SGD(lr=0.1, momentum=0.9),
StepLR(step_size=2, gamma=0.5), one optimizer.step() then scheduler.step() per epoch.
libtorch's StepLR takes no step in its constructor (Python's does): its step count is Python's
_step_count, and its first step() keeps the lr as Python's initial step does.
"""
import json

import lightning as L
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau, StepLR

from twin_models import Net

EPOCHS, NEXT = 3, 5


def fresh():
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return {"model": model, "optimizer": optimizer, "scheduler": StepLR(optimizer, step_size=2, gamma=0.5)}


def epoch(state):
    optimizer = state["optimizer"]
    optimizer.zero_grad()
    state["model"](torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    state["scheduler"].step()
    return optimizer.param_groups[0]["lr"]


def schedule(java, source, steps, saved, out):
    return json.loads(java.tool("schedule", source, steps, saved, NEXT, out))


def test_python_checkpoint_resumes_in_java(java, tmp_path):
    fabric = L.Fabric(accelerator="cpu", devices=1)
    state = fresh()
    for _ in range(EPOCHS):
        epoch(state)
    fabric.save(tmp_path / "python.ckpt", state)
    lr, step_count = state["optimizer"].param_groups[0]["lr"], state["scheduler"]._step_count
    python_next = [epoch(state) for _ in range(NEXT)]

    java_side = schedule(java, tmp_path / "python.ckpt", 0, tmp_path / "resaved.ckpt", tmp_path / "java.ckpt")
    assert java_side["loaded"] == {"lr": lr, "step_count": step_count} == {"lr": 0.05, "step_count": EPOCHS + 1}
    assert java_side["next"] == python_next
    # Loaded and saved again untouched, Java writes Python's file byte for byte.
    assert (tmp_path / "resaved.ckpt").read_bytes() == (tmp_path / "python.ckpt").read_bytes()


def test_java_checkpoint_resumes_in_python(java, tmp_path):
    java_side = schedule(java, "-", EPOCHS, tmp_path / "java.ckpt", tmp_path / "java_next.ckpt")

    fabric = L.Fabric(accelerator="cpu", devices=1)
    state = fresh()
    state["model"].fc1.weight.data.zero_()  # anything: the checkpoint must overwrite it
    assert fabric.load(tmp_path / "java.ckpt", state) == {}
    optimizer, scheduler = state["optimizer"], state["scheduler"]
    assert {"lr": optimizer.param_groups[0]["lr"], "step_count": scheduler._step_count} == java_side["trained"]
    assert scheduler.last_epoch == scheduler._step_count - 1
    assert optimizer.param_groups[0]["initial_lr"] == 0.1 and scheduler.base_lrs == [0.1]
    assert scheduler.get_last_lr() == [optimizer.param_groups[0]["lr"]]
    assert [epoch(state) for _ in range(NEXT)] == java_side["next"]


def test_java_file_is_torch_save_of_the_same_state(java, tmp_path):
    """Python loads Java's checkpoint into its objects and saves them again: the same bytes."""
    schedule(java, "-", EPOCHS, tmp_path / "java.ckpt", tmp_path / "java_next.ckpt")
    fabric = L.Fabric(accelerator="cpu", devices=1)
    state = fresh()
    fabric.load(tmp_path / "java.ckpt", state)
    fabric.save(tmp_path / "python.ckpt", state)
    assert (tmp_path / "python.ckpt").read_bytes() == (tmp_path / "java.ckpt").read_bytes()


def test_java_checkpoint_loads_with_plain_torch_load(java, tmp_path):
    schedule(java, "-", EPOCHS, tmp_path / "java.ckpt", tmp_path / "java_next.ckpt")
    checkpoint = torch.load(tmp_path / "java.ckpt", weights_only=True)
    assert list(checkpoint) == ["model", "optimizer", "scheduler"]
    sd = checkpoint["scheduler"]
    python = fresh()["scheduler"].state_dict()
    assert list(sd) == list(python)
    assert {k: type(v) for k, v in sd.items()} == {k: type(v) for k, v in python.items()}
    assert sd["step_size"] == 2 and sd["gamma"] == 0.5 and sd["base_lrs"] == [0.1]
    group = checkpoint["optimizer"]["param_groups"][0]
    assert list(group)[-2:] == ["initial_lr", "params"]


# ReduceLROnPlateau(factor=0.5, patience=1) over SGD(lr=0.1): metrics exact in float32, as libtorch keeps them.
PLATEAU_BEFORE, PLATEAU_AFTER = [1.0, 0.5, 0.75, 0.875, 0.25], [0.5, 0.5, 0.5, 0.125, 0.5]


def fresh_plateau():
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(Net().parameters(), lr=0.1)
    return {"optimizer": optimizer, "scheduler": ReduceLROnPlateau(optimizer, factor=0.5, patience=1)}


def plateau_steps(state, metrics):
    lrs = []
    for metric in metrics:
        state["scheduler"].step(metric)
        lrs.append(state["optimizer"].param_groups[0]["lr"])
    return lrs


def metrics_arg(metrics):
    return ",".join(map(str, metrics))


def test_plateau_checkpoints_resume_both_ways(java, tmp_path):
    fabric = L.Fabric(accelerator="cpu", devices=1)
    state = fresh_plateau()
    plateau_steps(state, PLATEAU_BEFORE)
    fabric.save(tmp_path / "python.ckpt", state)
    python_next = plateau_steps(state, PLATEAU_AFTER)
    assert len(set(python_next)) > 1  # the lr is reduced on the way

    # Python -> Java: the same next lrs; loaded and saved untouched, the same bytes.
    java_next = json.loads(java.tool("plateau", tmp_path / "python.ckpt", metrics_arg(PLATEAU_AFTER), tmp_path / "j.ckpt"))
    assert java_next["lrs"] == python_next
    java.tool("plateau", tmp_path / "python.ckpt", "", tmp_path / "resaved.ckpt")
    assert (tmp_path / "resaved.ckpt").read_bytes() == (tmp_path / "python.ckpt").read_bytes()

    # Java -> Python: Java's run to the same point resumes in Python with fabric.load.
    java.tool("plateau", "-", metrics_arg(PLATEAU_BEFORE), tmp_path / "java.ckpt")
    resumed = fresh_plateau()
    assert fabric.load(tmp_path / "java.ckpt", resumed) == {}
    assert resumed["scheduler"].state_dict() == fresh_plateau_after_before().state_dict()
    assert plateau_steps(resumed, PLATEAU_AFTER) == python_next


def fresh_plateau_after_before():
    state = fresh_plateau()
    plateau_steps(state, PLATEAU_BEFORE)
    return state["scheduler"]
