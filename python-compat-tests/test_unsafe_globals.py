"""Globals outside torch's weights_only allowlist (issue 9, item 5): Java lists the same ones as
torch.serialization.get_unsafe_globals_in_checkpoint, refuses to write them back unless told to,
and refuses them on request as torch.load(weights_only=True) does. No payload here is ever run:
the files are only scanned, never loaded with weights_only=False.
"""
import argparse
import os
import re
from pathlib import Path

import pytest
import torch
from torch import _weights_only_unpickler

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "cpp" / "src" / "format" / "safe_globals.cpp"


class Payload:
    """Pickles as a call of os.system, as a hostile checkpoint would (never unpickled here)."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


class EvalPayload:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def table(name):
    text = TABLE.read_text()
    body = re.search(name + r"\[\] = \{(.*?)\n\};", text, re.S).group(1)
    return re.findall(r'"([^"]*)"', body)


def test_the_cpp_allowlist_is_torchs():
    assert table("kWeightsOnlyAllowed") == sorted(_weights_only_unpickler._get_allowed_globals())
    from torch._utils import IMPORT_MAPPING, NAME_MAPPING
    names = table("kNameMapping")
    assert {(names[i], names[i + 1]): (names[i + 2], names[i + 3]) for i in range(0, len(names), 4)} == NAME_MAPPING
    modules = table("kImportMapping")
    assert dict(zip(modules[::2], modules[1::2])) == IMPORT_MAPPING


CASES = {
    "namespace": {"hparams": argparse.Namespace(lr=0.1, name="x"), "w": torch.ones(2)},
    "system": {"callbacks": [Payload()], "w": torch.ones(2)},
    "eval": {"x": EvalPayload()},
    "values": {"fs": frozenset({1}), "empty": b"", "slice": slice(1, 2), "ok": {1, 2}, "d": torch.float16},
    "safe": {"w": torch.ones(2, dtype=torch.bfloat16), "p": torch.nn.Parameter(torch.zeros(3)), "b": b"x"},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_java_lists_what_torch_lists(java, tmp_path, name):
    path = tmp_path / f"{name}.pt"
    torch.save(CASES[name], path)
    expected = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    listed = java.tool("unsafe-globals", path).split()
    assert set(listed) == expected
    assert len(listed) == len(expected)
    assert (name == "safe") == (not expected)
    # verify reports them; the weights_only read refuses exactly when torch does.
    summary = java.cli("verify", path).stdout
    assert ("WARNING" in summary) == bool(expected), summary
    proc = java.run("io.fabricckpt.compat.CompatTool", "read-weights-only", path, check=False)
    try:
        torch.load(path, weights_only=True)
        torch_refuses = False
    except Exception:
        torch_refuses = True
    assert (proc.returncode != 0) == torch_refuses == bool(expected), proc.stderr
    if expected:
        for g in expected:
            assert g in proc.stderr


def test_legacy_files_are_scanned(java, tmp_path):
    # torch's own function refuses legacy files; Java scans every pickle of them.
    legacy = tmp_path / "legacy.pt"
    torch.save(CASES["system"], legacy, _use_new_zipfile_serialization=False)
    assert java.tool("unsafe-globals", legacy).split() == ["posix.system"]


def test_unsafe_globals_are_not_written_back_without_opt_in(java, tmp_path):
    src = tmp_path / "system.pt"
    torch.save(CASES["system"], src)
    out = tmp_path / "copy.pt"
    proc = java.run("io.fabricckpt.compat.CompatTool", "roundtrip", src, out, check=False)
    assert proc.returncode != 0
    assert "posix.system at ['callbacks'][0]" in proc.stderr
    assert not out.exists()
    java.tool("roundtrip", src, out, "archive", "--allow-unsafe-globals")
    # Written back unchanged (and still refused by weights_only loads: the opt-in did not hide it).
    assert set(torch.serialization.get_unsafe_globals_in_checkpoint(out)) == {"posix.system"}
    with pytest.raises(Exception):
        torch.load(out, weights_only=True)
