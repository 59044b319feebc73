"""Checkpoints written by Python (torch.save, Lightning's fabric.save) and read by Java.

Each test checks Java's view of the file against Python's (types, key order, dtypes, shapes,
values), then has Java write what it read and checks that Python reads back the same tree, and
for Lightning's files that the bytes are identical.
"""
import argparse
import io
from collections import OrderedDict

import lightning as L
import pytest
import torch

from conftest import assert_same, describe


def lightning_checkpoint(path):
    torch.manual_seed(0)
    fabric = L.Fabric(accelerator="cpu", devices=1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        optimizer.step()
    state = {"model": model, "optimizer": optimizer, "iteration": 2, "hparams": {"lr": 1e-3, "name": "mlp"},
             "betas": (0.9, 0.999)}
    fabric.save(path, state)
    return path


def check_java_reads(java, path, tmp_path, weights_only=True, archive="archive"):
    """Java's view equals Python's; what Java writes back loads in Python as the same tree.
    `archive` is the zip folder: torch.save(obj, path) names it after the file."""
    original = torch.load(path, weights_only=weights_only)
    assert java.describe(path) == describe(original)
    again = tmp_path / "java-wrote.pt"
    # A file torch only loads with weights_only=False may hold globals outside its allowlist
    # (argparse.Namespace, frozenset, ...): writing those back takes Java's explicit opt-in.
    java.tool("roundtrip", path, again, archive, *([] if weights_only else ["--allow-unsafe-globals"]))
    assert_same(original, torch.load(again, weights_only=weights_only))
    return again


def test_lightning_fabric_save_reads_in_java_and_writes_back_identically(java, tmp_path):
    path = lightning_checkpoint(tmp_path / "lightning.ckpt")
    again = check_java_reads(java, path, tmp_path)
    # Through Java values and back: the same bytes Lightning wrote.
    assert again.read_bytes() == path.read_bytes()


def test_convert_is_byte_identical(java, tmp_path):
    path = lightning_checkpoint(tmp_path / "lightning.ckpt")
    java.cli("convert", path, tmp_path / "converted.ckpt")
    assert (tmp_path / "converted.ckpt").read_bytes() == path.read_bytes()


def test_torch_save_to_a_path_keeps_its_archive_folder(java, tmp_path):
    path = tmp_path / "named.pt"
    torch.save({"w": torch.ones(3)}, path)  # archive folder "named"
    java.cli("convert", path, tmp_path / "copy.pt")
    assert (tmp_path / "copy.pt").read_bytes() == path.read_bytes()


ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
              torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128, torch.uint16, torch.uint32,
              torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2]


def test_every_dtype(java, tmp_path):
    torch.manual_seed(1)
    state = {str(d): (torch.randn(3, 5) * 4).to(d) for d in ALL_DTYPES}
    state["scalar"] = torch.tensor(3.5)
    state["empty"] = torch.empty(0, 7)
    path = tmp_path / "dtypes.pt"
    torch.save(state, path)
    again = check_java_reads(java, path, tmp_path, archive=path.stem)
    assert again.read_bytes() == path.read_bytes()


def test_views_sharing_storage(java, tmp_path):
    base = torch.arange(24.0).reshape(4, 6)
    state = {"base": base, "row": base[2], "col": base[:, 3], "block": base[1:3, 2:5], "t": base.t()}
    path = tmp_path / "views.pt"
    torch.save(state, path)
    again = check_java_reads(java, path, tmp_path, archive=path.stem)
    loaded = torch.load(again)
    assert loaded["row"].untyped_storage().data_ptr() == loaded["base"].untyped_storage().data_ptr()
    assert again.read_bytes() == path.read_bytes()


def test_parameters_and_requires_grad(java, tmp_path):
    state = {"p": torch.nn.Parameter(torch.ones(2, 2)), "g": torch.zeros(3, requires_grad=True)}
    path = tmp_path / "params.pt"
    torch.save(state, path)
    again = check_java_reads(java, path, tmp_path, archive=path.stem)
    assert again.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_protocols(java, tmp_path, protocol):
    state = OrderedDict(w=torch.arange(6.0).reshape(2, 3), n=12345678901234567890, neg=-7, f=0.25,
                        s="ünïcode", b=b"\x00\x01raw", t=(1, (2, 3)), l=[None, True, False], st={1, 2},
                        fs=frozenset({"x"}), d={1: "int key", (1, 2): "tuple key"}, dt=torch.bfloat16)
    path = tmp_path / f"proto{protocol}.pt"
    torch.save(state, path, pickle_protocol=protocol)
    # torch.load(weights_only=True) itself refuses protocols above 2 and sets: compare unrestricted.
    check_java_reads(java, path, tmp_path, weights_only=False)


def test_unknown_classes_survive_a_round_trip(java, tmp_path):
    state = {"hparams": argparse.Namespace(lr=0.1, layers=[1, 2], name="x"), "w": torch.ones(2)}
    path = tmp_path / "namespace.pt"
    torch.save(state, path)
    again = check_java_reads(java, path, tmp_path, weights_only=False, archive=path.stem)
    assert again.read_bytes() == path.read_bytes()


def test_legacy_format(java, tmp_path):
    base = torch.arange(10.0)
    state = {"w": base.reshape(2, 5), "i": torch.arange(3), "step": 7, "name": "old"}
    path = tmp_path / "legacy.pt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    check_java_reads(java, path, tmp_path)


def test_corrupt_file_is_reported_with_its_name(java, tmp_path):
    path = lightning_checkpoint(tmp_path / "lightning.ckpt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(bytes(data))
    proc = java.cli("convert", bad, tmp_path / "out.ckpt", check=False)
    assert proc.returncode == 3  # could not read
    assert "bad.ckpt" in proc.stderr
    assert proc.stderr.startswith("fabric-ckpt convert: ") and "Exception" not in proc.stderr, proc.stderr
    proc = java.cli("verify", bad, check=False)
    assert proc.returncode == 1  # the check found corruption
    assert proc.stderr.startswith("fabric-ckpt verify: ") and "bad.ckpt" in proc.stderr, proc.stderr
    assert not (tmp_path / "out.ckpt").exists()
