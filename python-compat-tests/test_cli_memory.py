"""The CLI converts a sharded directory that two torch.distributed.checkpoint ranks wrote (every tensor in
two chunks) tensor by tensor: its peak RSS stays below its own baseline + 64 MiB + the largest tensor
while the directory is larger than that bound, and the file is the library's convert byte for byte;
the same into an s3:// object, and verify and convert of them in object storage; and the same converts
to safetensors."""
import os
import re
import socket
import subprocess

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from conftest import _cli_classpath

TENSORS, ROWS, COLUMNS = 24, 4096, 1024  # float32: 16 MiB a tensor, 384 MiB in all
TENSOR_BYTES = ROWS * COLUMNS * 4


def _tensor(i):
    return torch.arange(ROWS * COLUMNS, dtype=torch.float32).reshape(ROWS, COLUMNS) + i


def _save_rank(rank, out, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    mesh = init_device_mesh("cpu", (2,))
    state = {"model": {f"t{i}": distribute_tensor(_tensor(i), mesh, [Shard(0)]) for i in range(TENSORS)}}
    dcp.save(state, checkpoint_id=out)
    if rank == 0:
        torch.save({"step": 3}, os.path.join(out, "meta.pt"))
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss(*args):
    """Runs the CLI under /usr/bin/time; returns (its result, its peak RSS in bytes)."""
    cmd = ["/usr/bin/time", "-f", "peak_kb=%M", "java", "-cp", _cli_classpath(), "io.fabricckpt.cli.Main", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    peak = re.search(r"peak_kb=(\d+)", proc.stderr)
    assert peak, proc.stderr
    return proc, int(peak.group(1)) * 1024


def test_convert_of_a_sharded_directory_is_bounded_by_its_largest_tensor(java, s3_server, tmp_path):
    directory = tmp_path / "sharded"
    mp.spawn(_save_rank, args=(str(directory), _free_port()), nprocs=2)
    size = sum(f.stat().st_size for f in directory.iterdir())

    small = tmp_path / "small.pt"
    torch.save({"w": torch.ones(4)}, small)
    proc, baseline = _peak_rss("verify", small)
    assert proc.returncode == 0, proc.stderr
    bound = baseline + (64 << 20) + TENSOR_BYTES
    assert size > bound, f"the directory ({size} bytes) must be larger than the bound ({bound})"

    out = tmp_path / "consolidated.pt"
    proc, peak = _peak_rss("convert", directory, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"convert of a {size >> 20} MiB 2-rank directory: peak RSS {peak >> 20} MiB "
          f"(bound {bound >> 20} MiB, baseline {baseline >> 20} MiB)")
    assert peak < bound, f"convert peaked at {peak} bytes, above {bound}"

    (tmp_path / "reference").mkdir()
    java.tool("convert", directory, tmp_path / "reference" / "consolidated.pt")
    assert out.read_bytes() == (tmp_path / "reference" / "consolidated.pt").read_bytes()
    loaded = torch.load(out, weights_only=True)
    assert loaded["step"] == 3
    for i in (0, TENSORS - 1):
        assert torch.equal(loaded["model"][f"t{i}"], _tensor(i))

    # Into object storage: the same bytes, in the same bound over the CLI's own baseline with the S3
    # client loaded (a tiny convert to S3), parts in flight included; libtorch is not loaded to do it.
    bucket = s3_server.new_bucket("convert-bounded")
    proc, s3_baseline = _peak_rss("convert", small, f"s3://{bucket}/small.pt")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc, s3_peak = _peak_rss("convert", directory, f"s3://{bucket}/run/consolidated.pt")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s3_bound = s3_baseline + (64 << 20) + TENSOR_BYTES
    print(f"convert of it to s3://: peak RSS {s3_peak >> 20} MiB (bound {s3_bound >> 20} MiB)")
    assert s3_peak < s3_bound, f"convert to S3 peaked at {s3_peak} bytes, above {s3_bound}"
    assert s3_server.filesystem().cat(f"s3://{bucket}/run/consolidated.pt") == out.read_bytes()

    # verify of both in object storage reads their tensors' bytes from the store into memory, through read
    # windows of concurrency x part size bytes (64 MiB) in all: that much over the same bound, where a copy
    # to disk first (written through a mapping, whose pages count) or a whole object in memory exceeds it.
    s3_server.filesystem().put(str(directory) + "/", f"{bucket}/run/sharded/", recursive=True)
    read_bound = s3_bound + (64 << 20)
    assert size > read_bound
    for url in (f"s3://{bucket}/run/consolidated.pt", f"s3://{bucket}/run/sharded"):
        proc, verify_peak = _peak_rss("verify", url)
        assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr
        print(f"verify of {url}: peak RSS {verify_peak >> 20} MiB (bound {read_bound >> 20} MiB)")
        assert verify_peak < read_bound, f"verify of {url} peaked at {verify_peak} bytes, above {read_bound}"
    # ... and so does convert of the prefix in S3, its bytes those of the local convert
    from_s3 = tmp_path / "from-s3" / "consolidated.pt"
    proc, convert_peak = _peak_rss("convert", f"s3://{bucket}/run/sharded", from_s3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"convert of s3://{bucket}/run/sharded: peak RSS {convert_peak >> 20} MiB (bound {read_bound >> 20} MiB)")
    assert convert_peak < read_bound, f"convert from S3 peaked at {convert_peak} bytes, above {read_bound}"
    assert from_s3.read_bytes() == out.read_bytes()
    # ... and from S3 into S3: the read windows and the parts in flight (64 MiB each) over the same bound,
    # the parts sent as the converter writes them (no copy of the output on disk or in memory)
    proc, both_peak = _peak_rss("convert", f"s3://{bucket}/run/sharded", f"s3://{bucket}/run/again/consolidated.pt")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"convert of s3://{bucket}/run/sharded into S3: peak RSS {both_peak >> 20} MiB (bound {read_bound >> 20} MiB)")
    assert both_peak < read_bound, f"convert from S3 into S3 peaked at {both_peak} bytes, above {read_bound}"
    assert s3_server.filesystem().cat(f"s3://{bucket}/run/again/consolidated.pt") == out.read_bytes()

    # To safetensors (the directory without its meta.pt, whose int safetensors cannot hold): the same
    # bound, tensor by tensor, locally and from S3 into S3, the bytes those of the library's convert.
    os.remove(directory / "meta.pt")
    s3_server.filesystem().rm_file(f"{bucket}/run/sharded/meta.pt")
    st = tmp_path / "consolidated.safetensors"
    proc, st_peak = _peak_rss("convert", directory, st)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"convert of it to safetensors: peak RSS {st_peak >> 20} MiB (bound {bound >> 20} MiB)")
    assert st_peak < bound, f"convert to safetensors peaked at {st_peak} bytes, above {bound}"
    java.tool("convert", directory, tmp_path / "reference" / "consolidated.safetensors")
    assert st.read_bytes() == (tmp_path / "reference" / "consolidated.safetensors").read_bytes()
    proc, st_both_peak = _peak_rss("convert", f"s3://{bucket}/run/sharded", f"s3://{bucket}/run/st/model.safetensors")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"convert of s3://{bucket}/run/sharded to safetensors in S3: peak RSS {st_both_peak >> 20} MiB "
          f"(bound {read_bound >> 20} MiB)")
    assert st_both_peak < read_bound, f"convert to safetensors in S3 peaked at {st_both_peak} bytes, above {read_bound}"
    assert s3_server.filesystem().cat(f"s3://{bucket}/run/st/model.safetensors") == st.read_bytes()
