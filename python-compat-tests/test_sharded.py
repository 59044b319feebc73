"""Sharded (FSDP-style) checkpoints across languages. Lightning's ModelParallelStrategy (FSDP2 fully_shard on
CPU with gloo, 2 processes: Lightning's FSDPStrategy refuses CPUs) writes a torch.distributed.checkpoint
directory that Java loads with 2 JVMs, with 1 and in a plain single process; 2 Java ranks
(io.fabricckpt.dist.FsdpWorker) write one that torch.distributed.checkpoint, dcp_to_torch_save and
Lightning's loader read, and a gathered full file that torch.load and Lightning read. Every comparison
is of exact tensor values."""
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from twin_models import Net

WORKER = "io.fabricckpt.dist.FsdpWorker"
LAUNCHER = "io.fabricckpt.dist.LocalLauncher"
PARAMS = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]

LIGHTNING = textwrap.dedent('''
    import sys
    import warnings
    import torch
    import lightning as L
    from lightning.fabric.strategies import ModelParallelStrategy
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
    from torch.distributed.fsdp import fully_shard
    from twin_models import Net

    def parallelize(model, mesh):
        fully_shard(model.fc1, mesh=mesh["data_parallel"])
        fully_shard(model.fc2, mesh=mesh["data_parallel"])
        fully_shard(model, mesh=mesh["data_parallel"])
        return model

    def main(fabric, mode, path, out):
        torch.manual_seed(7 if mode == "save" else 100 + fabric.global_rank)
        model = fabric.setup_module(Net())
        optimizer = fabric.setup_optimizers(torch.optim.Adam(model.parameters(), lr=1e-3 if mode == "save" else 0.5))
        if mode == "save":
            torch.manual_seed(7)  # the same batch on both ranks
            loss = model(torch.randn(8, 4)).pow(2).mean()
            fabric.backward(loss)
            optimizer.step()
            fabric.save(path, {"model": model, "optimizer": optimizer, "step": 5,
                               "hparams": {"lr": 1e-3, "name": "lightning"}})
            fabric.barrier()
            if fabric.global_rank == 0:
                dcp_to_torch_save(path, out)
        else:
            state = {"model": model, "optimizer": optimizer, "step": 0}
            remainder = fabric.load(path, state)
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            module = model.module  # the sharded model under Fabric's wrapper (names without a prefix)
            full = {"model": get_model_state_dict(module, options=options),
                    "optimizer": get_optimizer_state_dict(module, optimizer.optimizer, options=options),
                    "step": state["step"], "remainder": sorted(remainder)}
            if fabric.global_rank == 0:
                torch.save(full, out)
        print(f"rank {fabric.global_rank} of {fabric.world_size} done", flush=True)
        # Leave the group before the interpreter exits: gloo threads torn down at exit can abort the
        # process ("terminate called without an active exception") after the work is done.
        fabric.barrier()
        torch.distributed.destroy_process_group()

    if __name__ == "__main__":
        warnings.simplefilter("ignore")
        strategy = ModelParallelStrategy(parallelize, data_parallel_size=2, tensor_parallel_size=1)
        fabric = L.Fabric(accelerator="cpu", devices=2, strategy=strategy)
        fabric.launch(main, *sys.argv[1:])
''')


def run_lightning(tmp, *args):
    script = tmp / "lightning_fsdp.py"
    script.write_text(LIGHTNING)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(__file__), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp)
    assert proc.returncode == 0, f"Lightning failed:\n{proc.stdout}\n{proc.stderr}"
    assert "rank 0 of 2 done" in proc.stdout and "rank 1 of 2 done" in proc.stdout, proc.stdout


def launch(java, n, *args, check=True):
    proc = java.run(LAUNCHER, "-n", n, "--timeout", 180, WORKER, *args, check=False)
    if check:
        assert proc.returncode == 0, f"launch failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def rank_lines(stdout, rank, prefix):
    tag = f"[rank {rank}] {prefix}"
    return [line[len(tag):] for line in stdout.splitlines() if line.startswith(tag)]


def assert_equal_trees(expected, actual, path="root"):
    """Same keys (any order), equal plain values, tensors equal in dtype, shape and every value."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        assert set(expected) == set(actual), (path, sorted(map(str, expected)), sorted(map(str, actual)))
        for k in expected:
            assert_equal_trees(expected[k], actual[k], f"{path}.{k}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(expected) == len(actual), path
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_equal_trees(e, a, f"{path}.{i}")
    elif isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), path
        assert expected.dtype == actual.dtype and expected.shape == actual.shape, (path, expected, actual)
        assert torch.equal(expected, actual), (path, expected, actual)
    else:
        assert expected == actual, (path, expected, actual)


def by_name(optimizer_state):
    """An optimizer state dict keyed by parameter index (torch's) re-keyed by name, as FSDP keys it."""
    if all(isinstance(k, str) for k in optimizer_state["state"]):
        return optimizer_state
    groups = [dict(g, params=[PARAMS[i] for i in g["params"]]) for g in optimizer_state["param_groups"]]
    return {"state": {PARAMS[i]: s for i, s in optimizer_state["state"].items()}, "param_groups": groups}


def assert_same_training_state(expected, actual):
    assert_equal_trees(dict(expected["model"]), dict(actual["model"]), "model")
    assert_equal_trees(by_name(expected["optimizer"])["state"], by_name(actual["optimizer"])["state"], "optimizer.state")
    expected_group = by_name(expected["optimizer"])["param_groups"][0]
    actual_group = by_name(actual["optimizer"])["param_groups"][0]
    assert actual_group["params"] == PARAMS
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad"):
        assert actual_group[key] == pytest.approx(expected_group[key]), key


@pytest.fixture(scope="module")
def lightning_sharded(tmp_path_factory):
    """Lightning (2 processes) trained one step and saved a sharded directory; its dcp_to_torch_save."""
    tmp = tmp_path_factory.mktemp("lightning")
    run_lightning(tmp, "save", tmp / "ckpt", tmp / "reference.pt")
    assert sorted(os.listdir(tmp / "ckpt")) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
    return tmp / "ckpt", torch.load(tmp / "reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def java_sharded(tmp_path_factory, java):
    """2 Java ranks trained one step and saved a sharded directory."""
    tmp = tmp_path_factory.mktemp("java")
    out = launch(java, 2, "save-sharded", tmp / "ckpt")
    for rank in (0, 1):
        assert rank_lines(out, rank, "files=") == [".metadata,__0_0.distcp,__1_0.distcp,meta.pt"], out
    return tmp / "ckpt"


@pytest.fixture(scope="module")
def java_converted(java, java_sharded, tmp_path_factory):
    """The Java-written directory consolidated by Java (fabric-ckpt convert) into one torch.save file."""
    path = tmp_path_factory.mktemp("java-converted") / "java.pt"
    java.cli("convert", java_sharded, path)
    # the CLI consolidates without libtorch, tensor by tensor: the bytes of the library's convert
    reference = path.parent / "reference" / "java.pt"
    reference.parent.mkdir()
    java.tool("convert", java_sharded, reference)
    assert path.read_bytes() == reference.read_bytes()
    # diff (torch-free too) of the directory, its tensors assembled from both ranks' chunks, and its consolidation
    diffed = java.cli("diff", java_sharded, path)
    assert "checkpoints are equal" in diffed.stdout, diffed.stdout + diffed.stderr
    return torch.load(path, weights_only=True)


def test_lightning_sharded_checkpoint_loads_in_java(java, lightning_sharded, tmp_path):
    path, reference = lightning_sharded
    assert torch.load(path / "meta.pt") == {"step": 5, "hparams": {"lr": 1e-3, "name": "lightning"}}
    for ranks in (2, 1):
        out = tmp_path / f"loaded-{ranks}.ckpt"
        stdout = launch(java, ranks, "load", path, out)
        for rank in range(ranks):
            assert rank_lines(stdout, rank, "step=") == ["5"], stdout
            assert rank_lines(stdout, rank, "remainder=") == ["[hparams]"], stdout
        loaded = torch.load(out, weights_only=True)
        assert loaded["step"] == 5
        assert_same_training_state(reference, loaded)

    # fabric-ckpt convert consolidates it as Lightning's consolidate_checkpoint does: dcp_to_torch_save + meta.pt
    java.cli("convert", path, tmp_path / "converted.pt")
    (tmp_path / "reference").mkdir()
    java.tool("convert", path, tmp_path / "reference" / "converted.pt")
    assert (tmp_path / "converted.pt").read_bytes() == (tmp_path / "reference" / "converted.pt").read_bytes()
    converted = torch.load(tmp_path / "converted.pt", weights_only=True)
    assert list(converted) == ["model", "optimizer", "step", "hparams"]
    assert_equal_trees(reference, {k: converted[k] for k in reference})
    assert converted["step"] == 5 and converted["hparams"] == {"lr": 1e-3, "name": "lightning"}

    # a plain single process with an unsharded model
    out = tmp_path / "plain.ckpt"
    proc = java.run(WORKER, "load-plain", path, out)
    assert "step=5" in proc.stdout and "remainder=[hparams]" in proc.stdout, proc.stdout
    assert_same_training_state(reference, torch.load(out, weights_only=True))


def test_java_sharded_checkpoint_reads_in_python(java_sharded, java_converted, tmp_path):
    # torch.distributed.checkpoint, in one process without a process group, into whole tensors
    shapes = {k: v.shape for k, v in Net().state_dict().items()}
    target = {"model": {k: torch.zeros(s) for k, s in shapes.items()}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(target, checkpoint_id=java_sharded)
        dcp_to_torch_save(java_sharded, tmp_path / "python.pt")
    consolidated = torch.load(tmp_path / "python.pt", weights_only=True)
    assert_equal_trees(consolidated["model"], target["model"], "dcp.load")
    assert all(t.abs().sum() > 0 for t in target["model"].values())
    assert sorted(consolidated["optimizer"]["state"]) == sorted(PARAMS)
    assert consolidated["optimizer"]["param_groups"][0]["params"] == PARAMS

    # Java's own consolidation (fabric-ckpt convert) holds what dcp_to_torch_save gives, plus meta.pt's values
    converted = java_converted
    assert list(converted) == ["model", "optimizer", "step", "hparams"]
    assert_equal_trees(consolidated, {k: converted[k] for k in consolidated})
    assert converted["step"] == 5 and converted["hparams"] == {"lr": 1e-3, "name": "fsdp"}

    # Lightning's loader on 2 processes restores its sharded model and optimizer from it
    run_lightning(tmp_path, "load", java_sharded, tmp_path / "lightning.pt")
    restored = torch.load(tmp_path / "lightning.pt", weights_only=True)
    assert restored["step"] == 5 and restored["remainder"] == ["hparams"]
    assert_same_training_state(consolidated, restored)


def test_java_sharded_save_with_safetensors_serialization(java, java_sharded, java_converted, tmp_path):
    """Fsdp(SHARDED, SAFETENSORS): each rank's file is its values' torch.save streams, then its chunks as
    the safetensors blob safetensors.torch.save gives for them with DCP's metadata (torch 2.10's
    FileSystemWriter(serialization_format=SAFETENSORS)); every chunk recorded at the blob's start."""
    import json
    import struct
    from safetensors.torch import load as load_blob, save as save_blob
    from torch.distributed.checkpoint import FileSystemReader

    path = tmp_path / "ckpt"
    out = launch(java, 2, "save-sharded-safetensors", path)
    for rank in (0, 1):
        assert rank_lines(out, rank, "files=") == [".metadata,__0_0.distcp,__1_0.distcp,meta.pt"], out
    storage = FileSystemReader(path).read_metadata().storage_data
    plain = FileSystemReader(java_sharded).read_metadata().storage_data
    for rank in (0, 1):
        name = f"__{rank}_0.distcp"
        raw = (path / name).read_bytes()
        items = {k: v for k, v in storage.items() if v.relative_path == name}
        tensor_items = {k: v for k, v in items.items() if k.offset is not None}
        starts = {v.offset for v in tensor_items.values()}
        assert len(starts) == 1, starts
        start = starts.pop()
        # The values before the blob: the same streams as in the torch.save serialization's file.
        plain_tensor_starts = [v.offset for k, v in plain.items() if v.relative_path == name and k.offset is not None]
        assert raw[:start] == (java_sharded / name).read_bytes()[:min(plain_tensor_starts)]
        blob = raw[start:]
        chunks = load_blob(blob)
        assert set(chunks) == {k.fqn for k in tensor_items}
        for k, v in tensor_items.items():
            assert v.length == chunks[k.fqn].numel() * chunks[k.fqn].element_size(), k
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + n])
        metadata = header.pop("__metadata__")
        assert metadata["DCP_VERSION"] == "1.0" and metadata["format"] == "pt"
        assert json.loads(metadata["DCP_SHARDING_INFO"]) == {k.fqn: {"saved_offsets": list(k.offset)} for k in tensor_items}
        # What safetensors.torch.save writes for these chunks and this metadata (its own key order aside).
        python = save_blob(chunks, metadata=metadata)
        (m,) = struct.unpack("<Q", python[:8])
        assert m == n and json.loads(python[8:8 + m]) == {**header, "__metadata__": metadata}
        assert python[8 + m:] == blob[8 + n:]

    # Java reads it back (library and torch-free command line alike) as the same training state.
    converted = tmp_path / "java.pt"
    java.tool("convert", path, converted)
    cli = tmp_path / "cli" / "java.pt"
    java.cli("convert", path, cli)
    assert cli.read_bytes() == converted.read_bytes()
    assert_equal_trees(java_converted, torch.load(converted, weights_only=True))
    assert "every tensor covered" in java.cli("verify", path).stdout


def test_java_full_checkpoint_reads_in_python(java, java_converted, tmp_path):
    path = tmp_path / "full.ckpt"
    launch(java, 2, "save-full", path)
    assert os.listdir(tmp_path) == ["full.ckpt"]  # rank 0 alone wrote, atomically
    for kwargs in ({"weights_only": True}, {"weights_only": True, "mmap": True}):
        full = torch.load(path, **kwargs)
        assert list(full) == ["model", "optimizer", "step", "hparams"]
    assert full["step"] == 5 and full["hparams"] == {"lr": 1e-3, "name": "fsdp"}
    # the same training as the sharded save's, so the same values as its consolidation
    assert_same_training_state(java_converted, full)

    run_lightning(tmp_path, "load", path, tmp_path / "lightning.pt")
    restored = torch.load(tmp_path / "lightning.pt", weights_only=True)
    assert restored["step"] == 5 and restored["remainder"] == ["hparams"]
    assert_same_training_state(full, restored)


def test_metadata_paths_cannot_leave_the_directory(java, java_sharded, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(java_sharded, copy)
    with open(copy / ".metadata", "rb") as f:
        metadata = pickle.load(f)
    first = next(iter(metadata.storage_data))
    metadata.storage_data[first].relative_path = "../outside.distcp"
    with open(copy / ".metadata", "wb") as f:
        pickle.dump(metadata, f)
    shutil.copy(copy / "__0_0.distcp", tmp_path / "outside.distcp")

    proc = java.run(WORKER, "load-plain", copy, tmp_path / "out.ckpt", check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert ".metadata" in message and "../outside.distcp" in message, message
    assert not (tmp_path / "out.ckpt").exists()
