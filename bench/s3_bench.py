#!/usr/bin/env python3
"""Python side of `fabric-ckpt bench-s3`: Lightning's fabric.save/fabric.load of an s3:// URL (fsspec +
s3fs: the whole file buffered in memory, then s3fs's pipe sends it, as one PUT below 100 MiB, else as a
multipart upload of 50 MiB parts, 10 at once (s3fs 2026.9); a load reads it whole into memory), to the
S3 server the environment names (AWS_ENDPOINT_URL, credentials), on the same state as bench.py, after
a warm-up round. Prints one tab-separated line per operation, as bench.py does, with the CPU seconds a run
took on average of this process and of the server (the process --server-pid names; -1 without it):

    op <TAB> cache <TAB> seconds,seconds,... <TAB> extra peak RSS in bytes (max over the runs) <TAB> CPU s <TAB> server CPU s

Run on its own:  python bench/s3_bench.py --bytes 268435456 --url s3://bucket/python.ckpt [--reps 3] [--prime] [--server-pid PID]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import MiB, build_state, measure  # noqa: E402 (the same state and measurement as bench.py)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prime", action="store_true", help="touch 2x size + 256 MiB of memory before each run")
    ap.add_argument("--server-pid", type=int, help="the S3 server's process, whose CPU seconds are shown too")
    args = ap.parse_args()
    bench.PRIME_BYTES = 2 * args.bytes + 256 * MiB if args.prime else 0  # as bench.py --prime

    import lightning.fabric as lf

    torch.set_num_threads(os.cpu_count() or 1)
    fabric = lf.Fabric(accelerator="cpu", devices=1)
    state = build_state(args.bytes)
    results = []

    def run(op, fn):
        used = [0.0, 0.0]  # CPU seconds inside the timed calls (not priming): this process, the server

        def timed():
            cpu, server = own_cpu(), server_cpu(args.server_pid)
            result = fn()
            used[0] += own_cpu() - cpu
            used[1] += server_cpu(args.server_pid) - server
            return result

        runs = [measure(timed) for _ in range(args.reps)]
        server = used[1] / args.reps if args.server_pid is not None else -1
        results.append((op, "-", [s for s, _ in runs], max(e for _, e in runs), used[0] / args.reps, server))

    measure(lambda: fabric.save(args.url, state))  # warm-up: imports, connections, first-touch memory
    measure(lambda: fabric.load(args.url))
    run("fabric.save to S3", lambda: fabric.save(args.url, state))
    run("fabric.load from S3", lambda: fabric.load(args.url))
    for op, cache, seconds, extra, cpu, server in results:
        print(f"{op}\t{cache}\t{','.join(f'{s:.6f}' for s in seconds)}\t{extra}\t{cpu:.3f}\t{server:.3f}", flush=True)


def own_cpu():
    t = os.times()
    return t.user + t.system


def server_cpu(pid):
    """CPU seconds the process `pid` has used (utime + stime of /proc/PID/stat), -1 when unknown."""
    if pid is None:
        return -1
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return -1


if __name__ == "__main__":
    main()
