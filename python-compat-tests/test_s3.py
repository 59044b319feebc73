"""s3:// checkpoints against a real S3 server (S3Proxy, started by the s3_server fixture), with real
Lightning reading and writing through fsspec/s3fs: the objects Java writes are the bytes of the local
file and Lightning loads them; what Lightning writes, Java loads and writes back as the same object."""
import io
import json
import os
import re
import shutil
import struct
import subprocess
import zipfile

import lightning as L
import pytest
import torch

from conftest import _classpath, _cli_classpath, assert_same, describe, normalise
from test_java_writes import expected_sample
from test_sharded import (assert_equal_trees, assert_same_training_state, java_sharded, launch,  # noqa: F401 (fixtures)
                          lightning_sharded, rank_lines)


def test_java_saves_lightning_loads(java, s3_server, tmp_path):
    bucket = s3_server.new_bucket("java-writes")
    url = f"s3://{bucket}/run/java.ckpt"
    java.tool("write-sample", url)
    java.tool("write-sample", tmp_path / "java.ckpt")
    fs = s3_server.filesystem()
    assert fs.cat(url) == (tmp_path / "java.ckpt").read_bytes()

    fabric = L.Fabric(accelerator="cpu", devices=1)
    assert_same(expected_sample(), fabric.load(url))
    model = torch.nn.Linear(4, 3)
    remainder = fabric.load(url, {"model": model})
    assert torch.equal(model.weight.detach(), torch.arange(12.0).reshape(3, 4))
    assert remainder["iteration"] == 1000


def _lightning_state(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 512))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(8, 512)).pow(2).mean().backward()
    optimizer.step()
    return {"model": model, "optimizer": optimizer, "step": 12, "hparams": {"lr": 1e-3, "name": "run ✓"}}


def test_lightning_saves_java_loads_and_writes_back_the_same_object(java, s3_server):
    bucket = s3_server.new_bucket("lightning-writes")
    url = f"s3://{bucket}/lightning.ckpt"
    fabric = L.Fabric(accelerator="cpu", devices=1)
    state = _lightning_state(0)
    fabric.save(url, state)  # fsspec: the whole file in memory, one upload
    fs = s3_server.filesystem()
    original = fs.cat(url)
    assert len(original) > 20 << 20  # several 5 MiB parts when Java writes it back

    assert normalise(describe(torch.load(io.BytesIO(original)))) == java.describe_location(url)
    java.tool("roundtrip-location", url, f"s3://{bucket}/java.ckpt")
    assert fs.cat(f"s3://{bucket}/java.ckpt") == original
    assert fs.ls(bucket) and not fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")

    restored = _lightning_state(1)
    fabric.load(f"s3://{bucket}/java.ckpt", restored)
    for a, b in zip(restored["model"].parameters(), state["model"].parameters()):
        assert torch.equal(a, b)


def test_an_https_store_with_a_private_ca_serves_java_and_lightning_from_one_environment(
        java, s3_server, monkeypatch, tmp_path):
    """AWS_CA_BUNDLE, which botocore (so s3fs and Lightning) reads, Java reads too: one environment points
    both sides at an https store whose self-signed certificate only that bundle trusts."""
    import s3fs
    bucket = s3_server.new_bucket("https")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.secure_endpoint)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(s3_server.ca_bundle))
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec would reuse the http one Lightning made before
    try:
        url = f"s3://{bucket}/java.ckpt"
        java.tool("write-sample", url)
        java.tool("write-sample", tmp_path / "java.ckpt")
        fabric = L.Fabric(accelerator="cpu", devices=1)
        assert_same(expected_sample(), fabric.load(url))
        fabric.save(f"s3://{bucket}/lightning.ckpt", _lightning_state(0))
        java.tool("roundtrip-location", f"s3://{bucket}/lightning.ckpt", f"s3://{bucket}/back.ckpt")

        plain = s3_server.filesystem()  # the same objects, over http
        assert plain.cat(url) == (tmp_path / "java.ckpt").read_bytes()
        assert plain.cat(f"s3://{bucket}/back.ckpt") == plain.cat(f"s3://{bucket}/lightning.ckpt")

        monkeypatch.delenv("AWS_CA_BUNDLE")  # the JVM's own roots do not trust the server
        refused = java.cli("inspect", url, check=False)
        assert refused.returncode != 0
        assert url in refused.stderr and f"cannot reach {s3_server.secure_endpoint}" in refused.stderr, refused.stderr
        assert "AWS_CA_BUNDLE" in refused.stderr, refused.stderr
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def test_lightning_sharded_directory_in_s3_loads_in_java_and_converts(java, s3_server, lightning_sharded, tmp_path):
    """Lightning's ModelParallel save (a local directory: Lightning 2.6.6 writes sharded checkpoints
    through torch.distributed.checkpoint's FileSystemWriter, local paths only) uploaded as it is."""
    local, reference = lightning_sharded
    bucket = s3_server.new_bucket("lightning-sharded")
    fs = s3_server.filesystem()
    for name in sorted(os.listdir(local)):
        fs.put_file(str(local / name), f"{bucket}/run/step-5/{name}")
    url = f"s3://{bucket}/run/step-5/"
    for ranks in (2, 1):
        out = tmp_path / f"loaded-{ranks}.ckpt"
        stdout = launch(java, ranks, "load", url, out)
        for rank in range(ranks):
            assert rank_lines(stdout, rank, "step=") == ["5"], stdout
            assert rank_lines(stdout, rank, "remainder=") == ["[hparams]"], stdout
        assert_same_training_state(reference, torch.load(out, weights_only=True))

    # convert from S3 gives the bytes of the local directory's convert (test_sharded: Lightning's consolidation)
    java.cli("convert", url, tmp_path / "from-s3" / "converted.pt")
    java.cli("convert", local, tmp_path / "from-disk" / "converted.pt")
    assert (tmp_path / "from-s3" / "converted.pt").read_bytes() == (tmp_path / "from-disk" / "converted.pt").read_bytes()
    # ... and into S3 (the archive folder inside follows the key's file name, as torch.save's does)
    java.cli("convert", url, f"s3://{bucket}/consolidated/converted.pt")
    assert fs.cat(f"s3://{bucket}/consolidated/converted.pt") == (tmp_path / "from-disk" / "converted.pt").read_bytes()
    converted = torch.load(tmp_path / "from-s3" / "converted.pt", weights_only=True)
    assert converted["step"] == 5 and converted["hparams"] == {"lr": 1e-3, "name": "lightning"}
    assert "OK: sharded checkpoint" in java.cli("verify", url).stdout


def test_cli_inspect_verify_convert_on_s3_objects(java, s3_server, tmp_path):
    bucket = s3_server.new_bucket("cli")
    local = tmp_path / "java.ckpt"
    java.tool("write-sample", local)
    url = f"s3://{bucket}/java.ckpt"
    s3_server.filesystem().put_file(str(local), f"{bucket}/java.ckpt")

    assert json.loads(java.cli("inspect", "--json", url).stdout) == json.loads(java.cli("inspect", "--json", local).stdout)
    assert java.cli("verify", url).stdout.startswith(f"{url}: OK")
    # convert into S3 and out of it: the same bytes (a Lightning file's convert is byte-identical)
    java.cli("convert", local, f"s3://{bucket}/copy.ckpt")
    assert s3_server.filesystem().cat(f"s3://{bucket}/copy.ckpt") == local.read_bytes()
    java.cli("convert", url, tmp_path / "out" / "java.ckpt")
    assert (tmp_path / "out" / "java.ckpt").read_bytes() == local.read_bytes()

    missing = java.cli("verify", f"s3://{bucket}/nothing.ckpt", check=False)
    assert missing.returncode == 3 and f"s3://{bucket}/nothing.ckpt" in missing.stderr, missing.stderr


def test_safetensors_objects_are_the_files_safetensors_writes_and_reads(java, s3_server, tmp_path):
    """A .safetensors key is a safetensors object: what Python's save_file wrote and s3fs uploaded, Java
    reads (its bytes say what it is) and writes back byte for byte; what Java writes to s3:// is what
    save_file writes for the same tensors and loads with safetensors.torch.load; inspect fetches its
    header, not its tensors."""
    from safetensors.torch import load, save_file
    torch.manual_seed(3)
    tensors = {"model.weight": torch.randn(2048, 1024), "model.bias": torch.randn(1024).to(torch.bfloat16),
               "step": torch.tensor(7)}  # 8 MiB: several 5 MiB parts
    python = tmp_path / "python.safetensors"
    save_file(tensors, python)
    bucket = s3_server.new_bucket("safetensors")
    fs = s3_server.filesystem()
    fs.put_file(str(python), f"{bucket}/python.safetensors")
    url = f"s3://{bucket}/python.safetensors"

    assert java.describe_location(url) == java.describe(python)
    java.tool("roundtrip-location", url, f"s3://{bucket}/java.safetensors")
    assert fs.cat(f"s3://{bucket}/java.safetensors") == python.read_bytes()
    assert not fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")

    state = tmp_path / "state.pt"
    torch.save({"model": {"weight": tensors["model.weight"].t()}, "note": "from torch"}, state)
    java.cli("convert", state, f"s3://{bucket}/converted.safetensors")
    reference = tmp_path / "reference.safetensors"
    save_file({"model.weight": tensors["model.weight"].t().contiguous()}, reference, metadata={"note": "from torch"})
    converted = fs.cat(f"s3://{bucket}/converted.safetensors")
    assert converted == reference.read_bytes()
    assert torch.equal(load(converted)["model.weight"], tensors["model.weight"].t())
    # from an s3:// source too (its tensors read from the store as they are written into the upload)
    fs.put_file(str(state), f"{bucket}/state.pt")
    java.cli("convert", f"s3://{bucket}/state.pt", f"s3://{bucket}/again.safetensors")
    assert fs.cat(f"s3://{bucket}/again.safetensors") == reference.read_bytes()
    assert not fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")

    remote = java.cli("inspect", "--json", url)
    assert json.loads(remote.stdout) == json.loads(java.cli("inspect", "--json", python).stdout)
    fetched = re.search(rf"{re.escape(url)}: read (\d+) of its (\d+) bytes", remote.stderr)
    assert fetched and int(fetched.group(1)) <= 512 << 10 < int(fetched.group(2)), remote.stderr  # the edges only
    verified = java.cli("verify", url).stdout
    assert verified.startswith(url) and "safetensors" in verified, verified


def test_hugging_face_sharded_checkpoints_in_s3_are_the_files_huggingface_hub_writes(java, s3_server, tmp_path):
    """convert to s3://.../model.safetensors.index.json writes the shard objects and the index
    save_torch_state_dict writes locally (tied weights, metadata), byte for byte; the library loads the
    index object with its shards, and inspect (each shard's header), verify and convert (staged as a
    directory) take it as they take the local directory."""
    from huggingface_hub import save_torch_state_dict
    from test_safetensors import files_of, hub_state
    state = hub_state()
    python_dir = tmp_path / "python"
    python_dir.mkdir()
    save_torch_state_dict(dict(state), python_dir, max_shard_size=3000, metadata={"note": "v1"})
    expected = files_of(python_dir)
    source = tmp_path / "state.pt"
    torch.save({**state, "note": "v1"}, source)
    bucket = s3_server.new_bucket("hf-index")
    url = f"s3://{bucket}/hf/model.safetensors.index.json"
    java.cli("convert", source, url, "--max-shard-size", "3000")
    fs = s3_server.filesystem()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{bucket}/hf")) == sorted(expected)
    for name, data in expected.items():
        assert fs.cat(f"{bucket}/hf/{name}") == data, name

    local_index = python_dir / "model.safetensors.index.json"
    assert java.describe_location(url) == java.describe(local_index)
    remote = java.cli("inspect", "--json", url)
    assert json.loads(remote.stdout) == json.loads(java.cli("inspect", "--json", local_index).stdout)
    verified = java.cli("verify", url).stdout
    assert verified.startswith(url) and "safetensors index of" in verified, verified
    java.cli("convert", url, tmp_path / "whole.safetensors")
    java.cli("convert", local_index, tmp_path / "whole-local.safetensors")
    assert (tmp_path / "whole.safetensors").read_bytes() == (tmp_path / "whole-local.safetensors").read_bytes()

    # From the store into the store (an index source staged, each shard streamed into its upload): the
    # files save_torch_state_dict wrote for the tensors as they load (the tied one under its kept name);
    # what an earlier save under the pattern left goes, other objects stay.
    fs.pipe({f"{bucket}/again/model.safetensors": b"stale", f"{bucket}/again/model-00001-of-00009.safetensors": b"stale",
             f"{bucket}/again/config.json": b"{}"})
    java.cli("convert", url, f"s3://{bucket}/again/model.safetensors.index.json", "--max-shard-size", "3000")
    again = {p.rsplit("/", 1)[1]: fs.cat(p) for p in fs.ls(f"{bucket}/again")}
    assert again.pop("config.json") == b"{}"
    java.cli("convert", local_index, tmp_path / "again" / "model.safetensors.index.json", "--max-shard-size", "3000")
    assert again == files_of(tmp_path / "again")
    assert not fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")


def test_cli_inspect_of_a_legacy_s3_object_stages_it_whole_and_reads_it_without_torch(java, s3_server, tmp_path):
    """A pre-1.6 torch.save file (its storages' sizes lie between the storages) is fetched whole into the
    staged file, then outlined as the local file is."""
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "step": 3}, legacy, _use_new_zipfile_serialization=False)
    bucket = s3_server.new_bucket("legacy")
    s3_server.filesystem().put_file(str(legacy), f"{bucket}/legacy.pt")
    url = f"s3://{bucket}/legacy.pt"
    remote = java.cli("inspect", "--json", url)
    assert json.loads(remote.stdout) == json.loads(java.cli("inspect", "--json", legacy).stdout)
    size = legacy.stat().st_size
    assert f"{url}: read {size} of its {size} bytes" in remote.stderr, remote.stderr


def test_cli_inspect_of_an_s3_object_fetches_only_its_directory_and_pickle(java, s3_server, tmp_path):
    """inspect of a 48 MiB object fetches its start, end, local headers and data.pkl (kilobytes), never a
    tensor's bytes, and prints what inspect of the local file prints."""
    state = {"model": {f"layer{i}.weight": torch.randn(1024, 1024) for i in range(12)}, "step": 3,
             "hparams": {"lr": 1e-3}}
    local = tmp_path / "big.ckpt"
    torch.save(state, local)
    bucket = s3_server.new_bucket("inspect")
    s3_server.filesystem().put_file(str(local), f"{bucket}/big.ckpt")
    url = f"s3://{bucket}/big.ckpt"
    remote = java.cli("inspect", "--json", url)
    assert json.loads(remote.stdout) == json.loads(java.cli("inspect", "--json", local).stdout)
    fetched = re.search(rf"{re.escape(url)}: read (\d+) of its (\d+) bytes", remote.stderr)
    assert fetched, remote.stderr
    assert int(fetched.group(2)) == local.stat().st_size
    assert int(fetched.group(1)) < 1 << 20, remote.stderr  # 2 x 256 KiB edges, 12 local headers
    assert java.cli("inspect", url).stdout == java.cli("inspect", local).stdout


@pytest.mark.parametrize("serialization", ["torch_save", "safetensors"])
def test_cli_inspect_of_an_s3_sharded_prefix_fetches_only_its_metadata_and_item_directories(
        java, s3_server, tmp_path, serialization):
    """inspect of a sharded prefix (torch's own single-process dcp.save, 48 MiB of whole tensors in one
    shard file, either serialization) fetches .metadata and each item's zip directory and pickle (or the
    safetensors blob's header), never a chunk's bytes, and prints what inspect of the local directory prints."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint.filesystem import SerializationFormat
    state = {"model": {f"layer{i}.weight": torch.randn(1024, 1024) for i in range(12)}, "step": 3,
             "hparams": {"lr": 1e-3, "name": "inspect"}}
    local = tmp_path / "dcp"
    dcp.save(state, storage_writer=FileSystemWriter(local, serialization_format=SerializationFormat(serialization)))
    bucket = s3_server.new_bucket(f"inspect-dcp-{serialization.replace('_', '-')}")
    fs = s3_server.filesystem()
    for name in os.listdir(local):
        fs.put_file(str(local / name), f"{bucket}/run/{name}")
    url = f"s3://{bucket}/run/"
    remote = java.cli("inspect", "--json", url)
    assert json.loads(remote.stdout) == json.loads(java.cli("inspect", "--json", local).stdout)
    fetched = re.search(rf"{re.escape(url.rstrip('/'))}/?: read (\d+) of its (\d+) bytes", remote.stderr)
    assert fetched, remote.stderr
    assert int(fetched.group(2)) == sum((local / name).stat().st_size for name in os.listdir(local))
    assert int(fetched.group(1)) < 1 << 20, remote.stderr  # .metadata, 14 items' directories and pickles
    assert java.cli("inspect", url).stdout == java.cli("inspect", local).stdout


def _consolidated(reader):
    """What dcp_to_torch_save writes, read through any DCP storage reader (FsspecReader for s3://)."""
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
    state = {}
    _load_state_dict(state, storage_reader=reader, planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    return state


def test_java_sharded_save_to_s3_reads_in_torch_through_fsspec(java, s3_server, java_sharded):
    """2 Java ranks save to s3://bucket/prefix: every shard file and meta.pt is the object of the local
    directory's file, byte for byte; torch's FsspecReader (s3fs) consolidates the prefix as
    FileSystemReader does the local directory, and the metadata records the URL as FsspecWriter does."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader
    bucket = s3_server.new_bucket("java-sharded")
    url = f"s3://{bucket}/run/step-5"
    launch(java, 2, "save-sharded", url)
    fs = s3_server.filesystem()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(url)) == sorted(os.listdir(java_sharded))
    for name in ("__0_0.distcp", "__1_0.distcp", "meta.pt"):
        assert fs.cat(f"{url}/{name}") == (java_sharded / name).read_bytes(), name
    assert not fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")

    reader = FsspecReader(url)
    assert reader.read_metadata().storage_meta.checkpoint_id == url
    assert_equal_trees(_consolidated(FileSystemReader(java_sharded)), _consolidated(reader))
    meta = torch.load(io.BytesIO(fs.cat(f"{url}/meta.pt")), weights_only=True)
    assert meta == {"step": 5, "hparams": {"lr": 1e-3, "name": "fsdp"}}


FSSPEC_SAVE = """
import sys
import warnings
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from torch.distributed.checkpoint import _fsspec_filesystem


def rename(self, path, new_path):
    # fsspec's mv deletes with DeleteObjects, whose CRC header botocore always sends and S3Proxy refuses:
    # the same copy, then a single-object delete.
    self.fs.copy(path, new_path)
    self.fs.rm_file(path)


_fsspec_filesystem.FileSystem.rename = rename
warnings.simplefilter("ignore")
dist.init_process_group("gloo")
mesh = init_device_mesh("cpu", (2,))
torch.manual_seed(3)  # the same full tensors on both ranks; each keeps its rows
full = {"w": torch.randn(4096, 384), "b": torch.arange(6, dtype=torch.bfloat16), "n": torch.tensor(7)}
state = {"model": {"w": distribute_tensor(full["w"], mesh, [Shard(0)]),
                   "b": distribute_tensor(full["b"], mesh, [Shard(0)]), "n": full["n"]},
         "step": 5, "names": ["a", "b"]}
dcp.save(state, storage_writer=FsspecWriter(sys.argv[1]))
if dist.get_rank() == 0:
    torch.save(full, sys.argv[2])
dist.barrier()
dist.destroy_process_group()
"""


def test_torch_fsspec_sharded_save_to_s3_loads_and_converts_in_java(java, s3_server, tmp_path):
    """torch.distributed.checkpoint's FsspecWriter on 2 ranks writes a prefix (6 MiB of rows, several
    ranged GETs per shard file); Java's convert from s3:// equals the consolidation torch itself reads
    through FsspecReader, and equals the convert of the same files downloaded."""
    import subprocess
    import sys
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader
    bucket = s3_server.new_bucket("torch-fsspec")
    url = f"s3://{bucket}/dcp"
    script = tmp_path / "save.py"
    script.write_text(FSSPEC_SAVE)
    full_path = tmp_path / "full.pt"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           script, url, full_path], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    full = torch.load(full_path, weights_only=True)

    out = tmp_path / "from-s3" / "consolidated.pt"
    java.cli("convert", url + "/", out)
    loaded = torch.load(out, weights_only=True)
    assert_equal_trees(_consolidated(FsspecReader(url)), loaded)
    for name, tensor in full.items():
        assert torch.equal(loaded["model"][name], tensor), name
    assert loaded["step"] == 5 and loaded["names"] == ["a", "b"]
    local = tmp_path / "downloaded"
    s3_server.filesystem().get(url + "/", str(local), recursive=True)
    java.cli("convert", local, tmp_path / "from-disk" / "consolidated.pt")
    assert out.read_bytes() == (tmp_path / "from-disk" / "consolidated.pt").read_bytes()
    assert java.cli("verify", url).stdout.startswith(f"{url}: OK")


def _user_namespaces_work():
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode == 0


def _on_a_small_disk(small, size, classpath, main, *args):
    """Runs `java main args` with its temporary folder on a real small disk: a tmpfs of `size` mounted at
    `small` in a user namespace of its own. Then lists what the folder holds afterwards (stdout's end)."""
    script = f'mount -t tmpfs -o size={size} tmpfs "{small}" || exit 99; "$@"; rc=$?; ls -A "{small}"; exit $rc'
    cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
           "java", f"-Djava.io.tmpdir={small}", "-cp", classpath, main, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return proc, f"{args[0]}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def test_a_sharded_s3_load_reads_its_tensors_into_memory_not_onto_the_temporary_disk(java, s3_server, tmp_path):
    """A sharded load from s3:// stages only the structure of the chunks it reads (and .metadata) in the
    temporary folder, and reads their tensors' bytes from the store straight into the tensors: on a real
    20 MiB disk, a 48 MiB torch.distributed.checkpoint directory (torch's own dcp.save) loads whole as the
    local one does, and leaves nothing there."""
    import torch.distributed.checkpoint as dcp
    if not _user_namespaces_work():
        pytest.skip("no user namespaces here (unshare --user --mount), so no small disk can be mounted")
    local = tmp_path / "dcp"
    state = {"w": torch.arange(8 << 20, dtype=torch.float32).reshape(1024, -1),  # 32 MiB
             "v": torch.arange(4 << 20, dtype=torch.float32), "b": torch.ones(10), "step": 7}
    dcp.save(state, checkpoint_id=str(local), no_dist=True)
    bucket = s3_server.new_bucket("sharded-small-disk")
    fs = s3_server.filesystem()
    for name in sorted(os.listdir(local)):
        fs.put_file(str(local / name), f"{bucket}/dcp/{name}")
    small = tmp_path / "small-disk"
    small.mkdir()
    loaded, what = _on_a_small_disk(small, "20m", _classpath(), "io.fabricckpt.compat.CompatTool",
                                    "describe-location", f"s3://{bucket}/dcp/")
    assert loaded.returncode == 0, what
    described = loaded.stdout.strip().splitlines()
    assert len(described) == 1, what  # the description, and nothing left on the small disk
    assert normalise(json.loads(described[0])) == java.describe(local)


def test_cli_on_an_s3_checkpoint_larger_than_the_temporary_disk(java, s3_server, tmp_path):
    """verify, diff and convert of an s3:// checkpoint stage only its structure in the temporary folder and
    read its tensors' bytes from the store into memory: on a real small disk (a 20 MiB tmpfs, mounted in a
    user namespace of its own) a 32 MiB object verifies, diffs and converts, and leaves nothing there. On a
    disk too small even for its structure (256 KiB) the staging fails naming the file and the free bytes
    (the fault of a write into a mapping, not a JVM crash)."""
    if not _user_namespaces_work():
        pytest.skip("no user namespaces here (unshare --user --mount), so no small disk can be mounted")
    bucket = s3_server.new_bucket("small-disk")
    local = tmp_path / "big.pt"
    torch.save({"w": torch.arange(8 << 20, dtype=torch.float32)}, local)  # 32 MiB
    url = f"s3://{bucket}/big.pt"
    s3_server.filesystem().put_file(str(local), f"{bucket}/big.pt")
    small = tmp_path / "small-disk"
    small.mkdir()

    def run(size, *args):
        return _on_a_small_disk(small, size, _cli_classpath(), "io.fabricckpt.cli.Main", *args)

    verified, what = run("20m", "verify", url)
    assert verified.returncode == 0, what
    assert verified.stdout.strip().splitlines() == [f"{url}: OK (7 records, CRC-32 verified, 1 tensors over 1 storages "
                                                    f"of {32 << 20} bytes)"], what  # and nothing left on the disk
    diffed, what = run("20m", "diff", url, local)
    assert diffed.returncode == 0 and diffed.stdout.strip().splitlines() == ["checkpoints are equal (1 entries)"], what
    converted, what = run("20m", "convert", url, tmp_path / "out.pt")
    assert converted.returncode == 0 and converted.stdout.strip().splitlines() == [f"wrote {tmp_path / 'out.pt'}"], what
    assert (tmp_path / "out.pt").read_bytes() == local.read_bytes()
    # convert into S3, from S3 and from a local file: streamed into a multipart upload of three parts
    # (16 MiB each, the last one short), nothing written to the disk
    fs = s3_server.filesystem()
    for source, key in ((url, "copy.pt"), (local, "from-local.pt")):
        converted, what = run("20m", "convert", source, f"s3://{bucket}/{key}")
        assert converted.returncode == 0, what
        assert converted.stdout.strip().splitlines() == [f"wrote s3://{bucket}/{key}"], what
        assert fs.cat(f"s3://{bucket}/{key}") == local.read_bytes()

    failed, what = run("256k", "verify", url)
    assert failed.returncode == 3, what
    assert "writing the bytes of " + url + " into it failed (its disk full? " in failed.stderr, what
    assert "InternalError" not in failed.stderr and "\tat " not in failed.stderr, what
    assert failed.stdout.strip() == "", what  # no output, and nothing left on the small disk


def test_cli_convert_into_s3_that_fails_midway_keeps_the_old_object_and_leaves_no_upload(java, s3_server, tmp_path):
    """convert into s3:// uploads parts as the converter writes them; when it fails after some are sent (the
    second tensor's CRC-32 does not match), the upload is aborted: the object there before is unchanged and
    no multipart upload is left pending. A failure of the store (a missing bucket) is a storage error naming
    the URL, exit code 3, as for every s3:// command."""
    bucket = s3_server.new_bucket("convert-fails")
    fs = s3_server.filesystem()
    source = tmp_path / "two.pt"
    torch.save({"a": torch.arange(6 << 20, dtype=torch.float32), "b": torch.ones(6 << 20)}, source)  # 2 x 24 MiB
    bytes_ = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as z:
        header = z.getinfo("two/data/1").header_offset
    name_length, extra_length = struct.unpack_from("<HH", bytes_, header + 26)
    bytes_[header + 30 + name_length + extra_length + (5 << 20)] ^= 0x5A  # 5 MiB into the second tensor's data
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(bytes_)
    url = f"s3://{bucket}/last.pt"
    old = tmp_path / "old.pt"
    torch.save({"step": 1}, old)
    java.cli("convert", old, url)

    failed = java.cli("convert", corrupt, url, check=False)
    assert failed.returncode == 3, failed.stderr
    assert "CRC-32 mismatch" in failed.stderr and str(corrupt) in failed.stderr, failed.stderr
    assert fs.cat(url) == old.read_bytes()
    assert fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []) == []

    java.cli("convert", source, url)  # the intact file goes through, in parts
    assert fs.cat(url) == source.read_bytes()
    missing = java.cli("convert", source, "s3://no-such-bucket-here/x.pt", check=False)
    assert missing.returncode == 3, missing.stderr
    assert "s3://no-such-bucket-here/x.pt: no such bucket 'no-such-bucket-here'" in missing.stderr, missing.stderr
    assert "\tat " not in missing.stderr and "Exception" not in missing.stderr, missing.stderr


def test_cli_verify_of_s3_checkpoints_streams_their_bytes_and_finds_what_a_local_verify_finds(java, s3_server, tmp_path):
    """verify of an s3:// object or sharded prefix fetches its structure, then streams the bytes it checks from
    the store (never to disk) and gives what verify of the local copy gives: the summary when intact, and for
    one flipped byte in a tensor's data the same CRC-32 mismatch, naming the object."""
    import torch.distributed.checkpoint as dcp

    bucket = s3_server.new_bucket("verify-streamed")
    fs = s3_server.filesystem()
    single = tmp_path / "single.pt"
    torch.save({"w": torch.arange(1 << 20, dtype=torch.float32), "step": 3, "names": ["a", "b"]}, single)
    sharded = tmp_path / "sharded"
    dcp.save({"w": torch.arange(1 << 20, dtype=torch.float32), "v": torch.ones(3, 5), "step": 3}, checkpoint_id=sharded)

    def flipped(path):
        bytes_ = bytearray(path.read_bytes())
        bytes_[len(bytes_) // 2] ^= 0x5A  # the middle of the 4 MiB tensor
        out = path.with_name("flipped-" + path.name)
        out.write_bytes(bytes_)
        return out

    cases = [(single, f"s3://{bucket}/single.pt", lambda: fs.put_file(str(single), f"{bucket}/single.pt")),
             (sharded, f"s3://{bucket}/sharded", lambda: fs.put(str(sharded) + "/", f"{bucket}/sharded/", recursive=True))]
    for local, url, upload in cases:
        upload()
        expected = java.cli("verify", local).stdout.strip()
        got = java.cli("verify", url)
        assert got.stdout.strip() == expected.replace(str(local), url) if expected.startswith(str(local)) \
            else got.stdout.strip() == f"{url}: {expected}", (got.stdout, expected)
        # Every byte fetched about once: the staged structure (of a file its first and last 256 KiB) is read
        # from disk, the holes from the store (a read window may run on into the staged tail).
        read, size = map(int, re.search(r"read (\d+) of its (\d+) bytes, none written to disk", got.stderr).groups())
        assert size <= read < size + (384 << 10), got.stderr

    # One byte flipped in the tensor's data: exit code 1, the mismatch of the local verify, named by URL.
    bad_single = flipped(single)
    fs.put_file(str(bad_single), f"{bucket}/bad.pt")
    shard = sharded / "__0_0.distcp"
    bad_dir = tmp_path / "bad-sharded"
    bad_dir.mkdir()
    for f in sharded.iterdir():
        (bad_dir / f.name).write_bytes(f.read_bytes())
    (bad_dir / shard.name).write_bytes(flipped(shard).read_bytes())
    fs.put(str(bad_dir) + "/", f"{bucket}/bad-sharded/", recursive=True)
    for local, url in ((bad_single, f"s3://{bucket}/bad.pt"), (bad_dir, f"s3://{bucket}/bad-sharded")):
        here = java.cli("verify", local, check=False)
        there = java.cli("verify", url, check=False)
        assert here.returncode == 1 and there.returncode == 1, (here.stderr, there.stderr)
        assert "CRC-32 mismatch" in there.stderr, there.stderr
        assert there.stderr.strip() == here.stderr.strip().replace(str(local), url), (here.stderr, there.stderr)


def test_cli_diff_of_s3_checkpoints_is_the_diff_of_the_local_ones(java, s3_server, java_sharded, tmp_path):
    """diff takes s3:// objects and sharded prefixes (copied to disk first): the same report and exit
    code as for the local files."""
    bucket = s3_server.new_bucket("diff")
    fs = s3_server.filesystem()
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    torch.save({"w": torch.ones(3, 4), "step": 1}, a)
    torch.save({"w": torch.ones(3, 4) * 2, "step": 1, "extra": 5}, b)
    for path in (a, b):
        fs.put_file(str(path), f"{bucket}/{path.name}")
    for name in sorted(os.listdir(java_sharded)):
        fs.put_file(str(java_sharded / name), f"{bucket}/sharded/{name}")
    converted = tmp_path / "converted.pt"
    java.cli("convert", java_sharded, converted)
    fs.put_file(str(converted), f"{bucket}/converted.pt")

    remote = java.cli("diff", f"s3://{bucket}/a.ckpt", f"s3://{bucket}/b.ckpt", check=False)
    local = java.cli("diff", a, b, check=False)
    assert remote.returncode == local.returncode == 1
    assert remote.stdout == local.stdout
    same = java.cli("diff", f"s3://{bucket}/sharded/", f"s3://{bucket}/converted.pt")
    assert "checkpoints are equal" in same.stdout
    assert "checkpoints are equal" in java.cli("diff", f"s3://{bucket}/sharded", java_sharded).stdout
    missing = java.cli("diff", f"s3://{bucket}/nothing.ckpt", a, check=False)
    assert missing.returncode == 3 and f"s3://{bucket}/nothing.ckpt" in missing.stderr, missing.stderr


def test_cli_clean_aborts_the_stale_uploads_of_an_s3_checkpoint(java, s3_server):
    """What a save killed midway leaves in object storage is a pending multipart upload: clean aborts
    those of the object (or of the prefix's objects) begun more than --older-than ago (0: all), and no
    other. (S3Proxy reports every upload as begun at the time of the listing, so only 0 ages here.)"""
    bucket = s3_server.new_bucket("clean")
    fs = s3_server.filesystem()
    for key in ("run/last.ckpt", "run/step-5/__0_0.distcp", "other/last.ckpt"):
        fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)

    def pending():
        return sorted(u["Key"] for u in fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []))

    fresh = java.cli("clean", f"s3://{bucket}/run/last.ckpt")  # begun just now: a save may be running
    assert "nothing to clean" in fresh.stdout and len(pending()) == 3
    out = java.cli("clean", "--older-than", "0s", f"s3://{bucket}/run/last.ckpt").stdout
    assert f"aborted the upload of s3://{bucket}/run/last.ckpt" in out
    assert pending() == ["other/last.ckpt", "run/step-5/__0_0.distcp"]
    java.cli("clean", "--older-than", "0", f"s3://{bucket}/run/step-5/")
    assert pending() == ["other/last.ckpt"]
    bad = java.cli("clean", "--older-than", "soon", f"s3://{bucket}/other/last.ckpt", check=False)
    assert bad.returncode == 2 and "--older-than" in bad.stderr
