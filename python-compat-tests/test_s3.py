"""s3:// checkpoints against a real S3 server (S3Proxy, started by the s3_server fixture), with real
Lightning reading and writing through fsspec/s3fs: the objects Java writes are the bytes of the local
file and Lightning loads them; what Lightning writes, Java loads and writes back as the same object."""
import io

import lightning as L
import torch

from conftest import assert_same, describe, normalise
from test_java_writes import expected_sample


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
