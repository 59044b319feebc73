"""Ranks on two hosts: each JVM rank runs in a Linux network namespace of its own, joined to the
other by a veth pair (distinct IPs, as two machines), with the rendezvous through MASTER_ADDR and
Gloo bound to the namespace's interface (GLOO_SOCKET_IFNAME), as on a real cluster. The test creates
and removes the namespaces itself; the traffic never leaves them. Needs root (CI runs as root)."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import _classpath

NAMESPACES = ("fckpt-host0", "fckpt-host1")
INTERFACES = ("fckpt-veth0", "fckpt-veth1")
ADDRESSES = ("10.77.0.1", "10.77.0.2")
WORKER = "io.fabricckpt.dist.FsdpWorker"


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _remove_hosts():
    for ns in NAMESPACES:
        _ip("netns", "delete", ns, check=False)  # deleting a namespace removes its veth end, and the pair


@pytest.fixture(scope="module")
def hosts():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    _remove_hosts()
    for ns in NAMESPACES:
        _ip("netns", "add", ns)
    _ip("link", "add", INTERFACES[0], "type", "veth", "peer", "name", INTERFACES[1])
    for ns, interface, address in zip(NAMESPACES, INTERFACES, ADDRESSES):
        _ip("link", "set", interface, "netns", ns)
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", interface)
        _ip("-n", ns, "link", "set", interface, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
    yield
    _remove_hosts()


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(rank, port, timeout_s, *args):
    env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR=ADDRESSES[0], MASTER_PORT=str(port),
               GLOO_SOCKET_IFNAME=INTERFACES[rank], FABRICCKPT_DIST_TIMEOUT=str(timeout_s))
    cmd = ["ip", "netns", "exec", NAMESPACES[rank], "java", "-cp", _classpath(), WORKER, *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run_on_both_hosts(*args, timeout_s=60):
    port = _free_port()
    procs = [_start(rank, port, timeout_s, *args) for rank in (0, 1)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} on {NAMESPACES[rank]} failed:\n{out}"
        assert f"master {ADDRESSES[0]}:{port}" in out, out  # the rendezvous went through the other host's address
    return outputs


def test_sharded_and_full_checkpoints_across_two_hosts(hosts, tmp_path, java):
    sharded = tmp_path / "sharded"
    full = tmp_path / "full.ckpt"
    _run_on_both_hosts("save-sharded", sharded)
    _run_on_both_hosts("save-full", full)
    reloaded = tmp_path / "reloaded.ckpt"
    outputs = _run_on_both_hosts("load", sharded, reloaded)
    assert all("step=5" in out for out in outputs), outputs
    # The sharded save, loaded on two hosts and gathered again, equals the full save of the same state.
    expected = torch.load(full, weights_only=True)
    got = torch.load(reloaded, weights_only=True)
    assert expected["model"].keys() == got["model"].keys()
    for key in expected["model"]:
        assert torch.equal(expected["model"][key], got["model"][key]), key
    assert "OK" in java.cli("verify", sharded).stdout


def test_a_link_that_goes_down_mid_save_fails_every_rank_and_keeps_the_checkpoint(hosts, tmp_path, java):
    directory = tmp_path / "ckpt"
    _run_on_both_hosts("save-sharded", directory)
    before = java.cli("verify", directory).stdout

    flag = tmp_path / "go"
    port = _free_port()
    timeout_s = 5
    procs = [_start(rank, port, timeout_s, "wait-then-save", directory, flag) for rank in (0, 1)]
    # Both ranks joined over the link: cut it, then let them save.
    lines = [[], []]
    deadline = time.monotonic() + 60
    for rank, proc in enumerate(procs):
        while "waiting" not in lines[rank]:
            line = proc.stdout.readline()
            assert line, f"rank {rank} ended before joining:\n{''.join(lines[rank])}"
            lines[rank].append(line.strip())
            assert time.monotonic() < deadline, "the ranks did not join"
    _ip("-n", NAMESPACES[0], "link", "set", INTERFACES[0], "down")
    cut = time.monotonic()
    flag.write_text("go")
    outputs, elapsed = [], []
    for proc in procs:
        outputs.append(proc.communicate(timeout=120)[0])
        elapsed.append(time.monotonic() - cut)
    _ip("-n", NAMESPACES[0], "link", "set", INTERFACES[0], "up")
    for rank, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode != 0, f"rank {rank} did not fail:\n{out}"
        error = next((l for l in out.splitlines() if l.startswith("error: ")), "")
        assert f"rank {rank} of 2" in error and str(directory) in error, out
        assert "timed out after 5 s" in error or "another rank is gone" in error, error
        assert elapsed[rank] < timeout_s + 30, f"rank {rank} took {elapsed[rank]:.1f} s to fail"
        print(f"rank {rank} on {NAMESPACES[rank]} failed {elapsed[rank]:.1f} s after the cut: {error}")
    # Rank 1 waits on rank 0, the root of the save's first collective: its error names that peer.
    assert "from rank 0" in outputs[1] or "to rank 0" in outputs[1], outputs[1]
    # The previous checkpoint is whole, and nothing was left beside it.
    assert java.cli("verify", directory).stdout == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ckpt.")] == []
