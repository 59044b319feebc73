"""Checkpoints written by Java and read by Python: torch.load (also weights_only and mmap) and
Lightning's fabric.load."""
import io
from collections import OrderedDict

import lightning as L
import pytest
import torch

from conftest import assert_same


def expected_sample():
    """What CompatTool.sample() builds in Java."""
    weight = torch.arange(12.0).reshape(3, 4)
    model = OrderedDict(weight=weight, bias=torch.arange(3.0))
    model._metadata = OrderedDict([("", {"version": 1})])
    return {
        "model": model,
        "row": weight[1],
        "half": torch.arange(4.0, dtype=torch.float16),
        "bf16": torch.arange(4.0, dtype=torch.bfloat16),
        "flags": torch.tensor([False, True, False, True]),
        "int8": torch.arange(-2, 2, dtype=torch.int8),
        "steps": torch.tensor(5),
        "iteration": 1000,
        "big": 2**70,
        "lr": 0.001,
        "name": "java ✓",
        "betas": (0.9, 0.999),
        "history": [1, 2, 3],
        "blob": b"\x00\x01\x02\x03",
        "nothing": None,
        "done": True,
    }


@pytest.fixture
def sample(java, tmp_path):
    path = tmp_path / "java.ckpt"
    java.tool("write-sample", path)
    return path


@pytest.mark.parametrize("options", [{}, {"weights_only": True}, {"mmap": True}, {"mmap": True, "weights_only": True}])
def test_torch_load(sample, options):
    loaded = torch.load(sample, **options)
    assert_same(expected_sample(), loaded)
    assert loaded["row"].untyped_storage().data_ptr() == loaded["model"]["weight"].untyped_storage().data_ptr()


def test_same_bytes_as_python_for_the_same_state(sample):
    # torch.save to a file object, as Lightning does. (fabric.save itself would drop the
    # OrderedDict's _metadata attribute of a plain value, which is not a state_dict() here.)
    buffer = io.BytesIO()
    torch.save(expected_sample(), buffer)
    assert sample.read_bytes() == buffer.getvalue()


def test_lightning_fabric_load(sample):
    fabric = L.Fabric(accelerator="cpu", devices=1)
    assert_same(expected_sample(), fabric.load(sample))

    model = torch.nn.Linear(4, 3)
    remainder = fabric.load(sample, {"model": model})
    assert torch.equal(model.weight.detach(), torch.arange(12.0).reshape(3, 4))
    assert "model" not in remainder and remainder["iteration"] == 1000
