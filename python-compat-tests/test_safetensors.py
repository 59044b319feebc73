"""safetensors interop with the real package (safetensors 0.8.0): what Java writes is byte for byte
what `safetensors.torch.save_file` writes for the same tensors and metadata, and reads back with
`load_file` and `safe_open`; what Python writes, Java reads."""
import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import assert_same

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.float16, torch.bfloat16,
          torch.int32, torch.uint32, torch.float32, torch.float64, torch.int64, torch.uint64, torch.complex64,
          torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz]


def every_dtype():
    torch.manual_seed(0)
    tensors = {}
    for i, dtype in enumerate(DTYPES):
        name = str(dtype).split(".")[-1]
        tensors[f"{name}.w"] = (torch.randn(3, 5) * 4).to(dtype)
        tensors[f"{name}.scalar"] = torch.tensor(i % 2 + 1).to(dtype)
        tensors[f"{name}.empty"] = torch.zeros(0, 2, dtype=dtype)
    return tensors


def header(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}, {"format": "pt", "source": "é\"\\\n\x01", "a": "b"}])
def test_java_rewrites_save_file_output_byte_for_byte(java, tmp_path, metadata):
    python = tmp_path / "python.safetensors"
    save_file(every_dtype(), python, metadata=metadata)
    java_out = tmp_path / "java.safetensors"
    # Java reads Python's file and writes its tensors and metadata again. With several metadata keys,
    # save_file's order is its Rust HashMap's (random per process); Java keeps the file's order.
    java.tool("convert", python, java_out)
    assert java_out.read_bytes() == python.read_bytes()


def test_java_writes_what_save_file_writes_for_a_fabric_like_state(java, tmp_path):
    torch.manual_seed(1)
    weight = torch.randn(4, 6)
    state = {
        "model": {"layer.weight": weight.t(), "layer.bias": torch.arange(4.0, dtype=torch.bfloat16)},  # not contiguous
        "steps": torch.tensor(5),
        "flags": torch.tensor([True, False]),
        "opt": {0: {"exp_avg": torch.zeros(3, dtype=torch.float64)}},
        "note": "java ✓",
    }
    source = tmp_path / "state.pt"
    torch.save(state, source)
    out = tmp_path / "state.safetensors"
    java.tool("convert", source, out)

    flat = {"model.layer.weight": weight.t().contiguous(), "model.layer.bias": state["model"]["layer.bias"],
            "steps": state["steps"], "flags": state["flags"], "opt.0.exp_avg": state["opt"][0]["exp_avg"]}
    reference = tmp_path / "reference.safetensors"
    save_file(flat, reference, metadata={"note": "java ✓"})
    assert out.read_bytes() == reference.read_bytes()

    loaded = load_file(out)
    assert list(loaded) == list(load_file(reference))
    assert_same(dict(sorted(loaded.items())), dict(sorted(flat.items())))
    with safe_open(out, framework="pt") as f:
        assert f.metadata() == {"note": "java ✓"}
        assert sorted(f.keys()) == sorted(flat)
        assert torch.equal(f.get_tensor("model.layer.weight"), weight.t().contiguous())
        assert torch.equal(f.get_slice("model.layer.weight")[1:3], weight.t().contiguous()[1:3])


def test_python_writes_java_reads(java, tmp_path):
    tensors = every_dtype()
    python = tmp_path / "python.safetensors"
    save_file(tensors, python, metadata={"format": "pt"})
    as_torch_save = tmp_path / "from_java.pt"
    java.tool("convert", python, as_torch_save)
    loaded = torch.load(as_torch_save, weights_only=True)
    assert list(loaded) == list(load_file(python))  # data order, as load_file gives it
    for name, tensor in tensors.items():
        got = loaded[name]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape, name
        assert torch.equal(got.reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), name


def test_what_safetensors_cannot_hold_is_refused_naming_the_keys(java, tmp_path):
    source = tmp_path / "state.pt"
    torch.save({"w": torch.ones(2), "epoch": 3, "lrs": [0.1, 0.2], "cfg": {"depth": 4.5}}, source)
    proc = java.run("io.fabricckpt.compat.CompatTool", "convert", source, tmp_path / "out.safetensors", check=False)
    assert proc.returncode != 0
    for key in ["epoch (int)", "lrs (list)", "cfg.depth (float)"]:
        assert key in proc.stderr, proc.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_hostile_file_is_refused_naming_the_file_and_problem(java, tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.ones(4)}, good)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[:-3])  # cut short: the offsets run past the end
    proc = java.run("io.fabricckpt.compat.CompatTool", "describe", bad, check=False)
    assert proc.returncode != 0
    assert str(bad) in proc.stderr and "offsets past the end" in proc.stderr, proc.stderr
    with pytest.raises(Exception):
        load_file(bad)  # the real package refuses it too


def test_hugging_face_sharded_checkpoint_reads_as_one_state(java, tmp_path):
    from huggingface_hub import save_torch_state_dict

    torch.manual_seed(2)
    state = {f"layers.{i}.weight": torch.randn(64, 8).to(torch.bfloat16 if i % 2 else torch.float32)
             for i in range(6)}
    shards = tmp_path / "hf"
    shards.mkdir()
    save_torch_state_dict(state, shards, max_shard_size=3000)  # several model-0000x-of-0000N files
    index = json.loads((shards / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1

    # The directory and the index file both name the checkpoint; Java gives every shard's tensors.
    for source in (shards, shards / "model.safetensors.index.json"):
        out = tmp_path / f"whole_{source.name}.safetensors"
        java.tool("convert", source, out)
        loaded = load_file(out)
        assert sorted(loaded) == sorted(state)
        for name, tensor in state.items():
            assert torch.equal(loaded[name], tensor), name
    assert "ok: safetensors index of" in java.cli("verify", shards).stdout

    # A shard that lacks what the index maps to it is refused, naming the index and the tensor.
    first = sorted(shards.glob("model-*.safetensors"))[0]
    save_file({"other": torch.zeros(1)}, first)
    proc = java.run("io.fabricckpt.compat.CompatTool", "describe", shards, check=False)
    assert proc.returncode != 0 and "model.safetensors.index.json" in proc.stderr and "does not hold it" in proc.stderr, \
        proc.stderr


def hub_state():
    """A state as a model gives it: tied weights (one tensor, two names), empty tensors (one storage
    to huggingface_hub), several dtypes, sizes that split into shards of 3000 bytes."""
    torch.manual_seed(5)
    embed = torch.randn(20, 16)
    return {"embed.weight": embed, "layers.0.w": torch.randn(16, 16), "layers.0.b": torch.zeros(16, dtype=torch.bfloat16),
            "lm_head.weight": embed, "empty.a": torch.zeros(0), "layers.1.w": torch.randn(30, 10, dtype=torch.float64),
            "empty.b": torch.zeros(0, 3, dtype=torch.int64), "big": torch.randn(1000), "mask": torch.ones(7, dtype=torch.bool)}


def files_of(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_java_writes_what_save_torch_state_dict_writes(java, tmp_path):
    from huggingface_hub import save_torch_state_dict

    state = hub_state()
    python_dir = tmp_path / "python"
    python_dir.mkdir()
    save_torch_state_dict(dict(state), python_dir, max_shard_size=3000, metadata={"note": "v1 \u00e9"})
    expected = files_of(python_dir)
    assert len(expected) > 3 and "model.safetensors.index.json" in expected  # several shards and the index

    # torch.save keeps the sharing (tied weights, views of one storage); Java's convert writes the index
    # path as huggingface_hub does: the same files, byte for byte.
    source = tmp_path / "state.pt"
    torch.save({**state, "note": "v1 \u00e9"}, source)
    java_dir = tmp_path / "java"
    java_dir.mkdir()
    # What an earlier save left under the pattern goes (it would be read instead); other files stay.
    (java_dir / "model.safetensors").write_bytes(b"stale")
    (java_dir / "model-00001-of-00009.safetensors").write_bytes(b"stale")
    (java_dir / "config.json").write_text("{}")
    out = java.cli("convert", source, java_dir / "model.safetensors.index.json", "--max-shard-size", "3000").stdout
    assert "wrote" in out
    written = files_of(java_dir)
    assert written.pop("config.json") == b"{}"
    assert sorted(written) == sorted(expected)
    for name in expected:
        assert written[name] == expected[name], name

    # Java reads the sharded checkpoint it wrote: every kept tensor, the tied one under its kept name.
    whole = tmp_path / "whole.safetensors"
    java.tool("convert", java_dir / "model.safetensors.index.json", whole)
    loaded = load_file(whole)
    assert "lm_head.weight" not in loaded and torch.equal(loaded["embed.weight"], state["embed.weight"])
    for name, tensor in state.items():
        if name != "lm_head.weight":
            assert torch.equal(loaded[name], tensor), name

    # A Hugging Face checkpoint rewritten through Java is the same files (its metadata strings kept): it
    # reads in the index's order, which is the order of the state split (a tensor larger than a shard,
    # or one sharing a storage, is listed out of it, so those are left out here).
    tensors = {name: t.clone() for name, t in state.items() if name not in ("lm_head.weight", "big", "empty.a", "empty.b")}
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    save_torch_state_dict(tensors, hub_dir, max_shard_size="3KB", metadata={"note": "v1"})
    again = tmp_path / "again"
    java.cli("convert", hub_dir / "model.safetensors.index.json", again / "model.safetensors.index.json",
             "--max-shard-size", "3KB")
    assert files_of(again) == files_of(hub_dir)

    # A size huggingface_hub would not read is a usage error naming it; nothing is written.
    proc = java.cli("convert", source, tmp_path / "bad" / "model.safetensors.index.json", "--max-shard-size", "5GiB",
                    check=False)
    assert proc.returncode == 2 and "bad --max-shard-size '5GiB'" in proc.stderr, proc.stderr
    assert not (tmp_path / "bad").exists()


def test_tensors_sharing_memory_are_refused_in_one_file_as_save_file_refuses_them(java, tmp_path):
    state = hub_state()
    with pytest.raises(RuntimeError, match="share memory"):
        save_file(state, tmp_path / "python.safetensors")
    source = tmp_path / "state.pt"
    torch.save(state, source)
    proc = java.cli("convert", source, tmp_path / "java.safetensors", check=False)
    assert proc.returncode != 0 and not (tmp_path / "java.safetensors").exists()
    assert "share memory (embed.weight, lm_head.weight)" in proc.stderr and "java.safetensors" in proc.stderr, proc.stderr

    # A view of part of a storage is refused by both for a sharded checkpoint (it would store the rest).
    from huggingface_hub import save_torch_state_dict
    views = {"w": torch.zeros(4), "part": torch.arange(10.0)[2:5]}
    with pytest.raises(RuntimeError, match="None is covering the entire storage"):
        save_torch_state_dict(views, tmp_path / "hub")
    torch.save(views, source)
    proc = java.cli("convert", source, tmp_path / "out" / "model.safetensors.index.json", check=False)
    assert proc.returncode != 0 and "part views part of a larger storage" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


DCP_SAFETENSORS_SAVE = """
import sys
import warnings
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.filesystem import SerializationFormat
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

warnings.simplefilter("ignore")
dist.init_process_group("gloo")
mesh = init_device_mesh("cpu", (2,))
torch.manual_seed(3)  # the same full tensors on both ranks; each keeps its rows
full = {"w": torch.randn(4, 6), "b": torch.arange(5, dtype=torch.bfloat16), "n": torch.tensor(7)}
state = {"model": {"w": distribute_tensor(full["w"], mesh, [Shard(0)]),
                   "b": distribute_tensor(full["b"], mesh, [Shard(0)]), "n": full["n"]}, "step": 5}
dcp.save(state, storage_writer=FileSystemWriter(sys.argv[1], serialization_format=SerializationFormat.SAFETENSORS))
if dist.get_rank() == 0:
    torch.save(full, sys.argv[2])
dist.barrier()
dist.destroy_process_group()
"""


def test_dcp_directory_with_safetensors_serialization_reads_in_java(java, tmp_path):
    """torch 2.10's own FileSystemReader cannot read this layout back (it torch.loads each slice); Java
    reads it, the library and the torch-free command line alike, chunks of 2 ranks assembled."""
    import subprocess
    import sys

    script = tmp_path / "save.py"
    script.write_text(DCP_SAFETENSORS_SAVE)
    path, full_path = tmp_path / "dcp", tmp_path / "full.pt"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    script, path, full_path], check=True, capture_output=True, timeout=300)
    full = torch.load(full_path, weights_only=True)
    raw = (path / "__0_0.distcp").read_bytes()
    assert b'"DCP_SHARDING_INFO"' in raw  # the shard file's tensors are a safetensors blob

    out = tmp_path / "consolidated.pt"
    java.tool("convert", path, out)
    loaded = torch.load(out, weights_only=True)
    assert loaded["step"] == 5
    for name, tensor in full.items():
        assert torch.equal(loaded["model"][name], tensor), name
    # The command line outlines it without libtorch: the same consolidation, byte for byte.
    cli_out = tmp_path / "cli" / "consolidated.pt"  # the same name: the archive folder follows it
    java.cli("convert", path, cli_out)
    assert cli_out.read_bytes() == out.read_bytes()
    assert "3 tensors in 5 chunks" in java.cli("verify", path).stdout
    assert "checkpoints are equal" in java.cli("diff", path, out).stdout
    assert "w: tensor Float [4, 6]" in java.cli("inspect", path).stdout
