"""Shared helpers: run the Java side in a subprocess and describe values the way Java does."""
import json
import math
import os
import subprocess
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("FABRICCKPT_BUILD_DIR", ROOT / "build"))


def _classpath():
    deps = (BUILD / "classpath.txt").read_text().strip()
    return f"{BUILD / 'java' / 'test-classes'}:{BUILD / 'java' / 'classes'}:{deps}"


def _cli_classpath():
    """The command line (module cli) as bin/fabric-ckpt runs it."""
    deps = (BUILD / "cli" / "classpath.txt").read_text().strip()
    return f"{BUILD / 'cli' / 'classes'}:{deps}"


class Java:
    """Runs the Java side of the tests (io.fabricckpt.compat.CompatTool) and the CLI."""

    def run(self, main, *args, check=True, classpath=None):
        cmd = ["java", "-cp", classpath or _classpath(), main, *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[3:])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def tool(self, *args):
        return self.run("io.fabricckpt.compat.CompatTool", *args).stdout

    def cli(self, *args, check=True):
        return self.run("io.fabricckpt.cli.Main", *args, check=check, classpath=_cli_classpath())

    def describe(self, path):
        return normalise(json.loads(self.tool("describe", path)))

    def describe_location(self, location):
        """describe of a path or an s3:// URL (read through the library's CheckpointLocation.parse)."""
        return normalise(json.loads(self.tool("describe-location", location)))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """S3Proxy on loopback for the session; this process's environment (s3fs, and the Java children
    the tests start) points at it meanwhile."""
    from s3_server import S3Server
    server = S3Server(BUILD / "s3proxy" / "s3proxy.jar", tmp_path_factory.mktemp("s3proxy"))
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="session")
def java():
    if not (BUILD / "classpath.txt").exists():
        pytest.fail("build the project first: scripts/build.sh (bin/run-tests does)")
    return Java()


# Names of c10::ScalarType, which Java reports for tensor dtypes.
SCALAR_TYPE_NAMES = {
    torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16",
    torch.int64: "Long", torch.int32: "Int", torch.int16: "Short", torch.int8: "Char", torch.uint8: "Byte",
    torch.bool: "Bool", torch.complex64: "ComplexFloat", torch.complex128: "ComplexDouble",
    torch.uint16: "UInt16", torch.uint32: "UInt32", torch.uint64: "UInt64",
    torch.float8_e4m3fn: "Float8_e4m3fn", torch.float8_e5m2: "Float8_e5m2",
    torch.float8_e4m3fnuz: "Float8_e4m3fnuz", torch.float8_e5m2fnuz: "Float8_e5m2fnuz",
}


def _float(x):
    f = float(x)
    return "nan" if math.isnan(f) else f


def normalise(d):
    """Turns Java's JSON view into comparable values (numbers as floats, NaN as a marker)."""
    if isinstance(d, dict):
        out = {k: normalise(v) for k, v in d.items()}
        if d.get("t") == "float":
            out["v"] = _float(d["v"])
        if d.get("t") in ("tensor", "parameter"):
            out["values"] = [_float(x) for x in d["values"]]
        return out
    if isinstance(d, list):
        return [normalise(x) for x in d]
    return d


def _tensor(t, kind):
    flat = t.detach().reshape(-1)
    if flat.is_complex():
        flat = flat.real
    values = flat.to(torch.float64)[:4096].tolist()
    return {"t": kind, "dtype": SCALAR_TYPE_NAMES[t.dtype], "shape": list(t.shape),
            "requires_grad": bool(t.requires_grad), "values": [_float(v) for v in values]}


def describe(v):
    """Python's view of a value, in the shape of CompatTool's JSON."""
    if v is None:
        return {"t": "none"}
    if isinstance(v, bool):
        return {"t": "bool", "v": v}
    if isinstance(v, int):
        return {"t": "int", "v": str(v)}
    if isinstance(v, float):
        return {"t": "float", "v": _float(v)}
    if isinstance(v, str):
        return {"t": "str", "v": v}
    if isinstance(v, bytes):
        return {"t": "bytes", "hex": v.hex()}
    if isinstance(v, torch.nn.Parameter):
        return _tensor(v, "parameter")
    if isinstance(v, torch.Tensor):
        return _tensor(v, "tensor")
    if isinstance(v, torch.dtype):
        return {"t": "global", "module": "torch", "name": str(v).split(".", 1)[1]}
    if isinstance(v, dict):
        out = {"t": "odict" if isinstance(v, OrderedDict) else "dict",
               "items": [[describe(k), describe(x)] for k, x in v.items()]}
        if isinstance(v, OrderedDict) and vars(v):
            out["attrs"] = describe(dict(vars(v)))
        return out
    if isinstance(v, tuple):
        return {"t": "tuple", "items": [describe(x) for x in v]}
    if isinstance(v, list):
        return {"t": "list", "items": [describe(x) for x in v]}
    if isinstance(v, frozenset):
        return {"t": "frozenset", "items": [describe(x) for x in v]}
    if isinstance(v, set):
        return {"t": "set", "items": [describe(x) for x in v]}
    # Any other object: how pickle protocol 2 rebuilds a plain instance (cls.__new__ + state).
    cls = type(v)
    return {"t": "object", "type": {"t": "global", "module": cls.__module__, "name": cls.__qualname__},
            "args": {"t": "tuple", "items": []}, "state": describe(dict(vars(v)))}


def _bits(t):
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def assert_same(a, b, path="root"):
    """Deep equality for checkpoint trees: container types, key order, dtypes, shapes, values."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype}{tuple(a.shape)} != {b.dtype}{tuple(b.shape)}"
        assert a.requires_grad == b.requires_grad, f"{path}: requires_grad differs"
        assert torch.equal(_bits(a), _bits(b)), f"{path}: values differ"
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
        if isinstance(a, OrderedDict):
            assert_same(dict(vars(a)), dict(vars(b)), f"{path}.__dict__")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), f"{path}: {a} != {b}"
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        assert_same(dict(vars(a)), dict(vars(b)), f"{path}.__dict__")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
