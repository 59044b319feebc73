#!/usr/bin/env python3
"""Python side of `fabric-ckpt bench`: times Lightning's fabric.save/fabric.load,
torch.save/torch.load (eager and mmap) and safetensors.torch.save_file/load_file (of the state's
model, the flat tensors the Java side's safetensors rows write), saves also durable (os.fsync of the file and its
folder, as the Java side's fsync), after a warm-up round, on a state of mixed tensors, and prints one
tab-separated line per operation for the Java driver (cli/BenchCommand.java):

    op <TAB> cache <TAB> seconds,seconds,... <TAB> extra peak RSS in bytes (max over the runs)

"extra peak RSS" is the process's peak resident memory during the operation minus its
resident memory before it (Linux: /proc/self/clear_refs resets the peak, VmHWM reads it).

Run on its own:  python bench/bench.py --bytes 268435456 --dir /tmp/x [--reps 3] [--cold]
"""
import argparse
import os
import time
from collections import OrderedDict

import torch

MiB = 1 << 20
# The state both sides build: tensors of these sizes and dtypes, in turn, until the total is reached
# (keep in step with BenchCommand.SPEC).
SPEC = [
    (32 * MiB, torch.float32),
    (8 * MiB, torch.bfloat16),
    (8 * MiB, torch.float32),
    (2 * MiB, torch.int64),
    (512 * 1024, torch.float32),
    (64 * 1024, torch.float16),
    (4096, torch.float32),
    (4096, torch.int64),
]


def build_state(total):
    model = OrderedDict()
    left, i = total, 0
    while left > 0:
        size, dtype = SPEC[i % len(SPEC)]
        size = min(size, left)
        elements = max(1, size // torch.empty((), dtype=dtype).element_size())
        if dtype.is_floating_point:
            t = torch.rand(elements).to(dtype)
        else:
            t = (torch.rand(elements) * 1000).to(dtype)
        model[f"layer{i}.weight"] = t
        left -= t.nbytes
        i += 1
    return {"model": model, "step": 1000, "lr": 1e-3, "name": "bench"}


def status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        return True
    except OSError:
        return False


PRIME_BYTES = 0


def prime():
    """Touch and free memory right before a timed run (see BenchCommand.prime)."""
    if PRIME_BYTES:
        t = torch.empty(PRIME_BYTES, dtype=torch.uint8)
        t.fill_(1)
        del t


def fsync_file(path):
    """Makes a written file durable as the Java side's fsync does: the file, then its directory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def measure(fn, before=None):
    """(seconds, extra peak RSS bytes) of one call; `before` runs first, untimed."""
    if before:
        before()
    prime()
    rss = status_bytes("VmRSS")
    reset_peak()
    t = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t
    extra = max(0, status_bytes("VmHWM") - rss)
    del result
    return seconds, extra


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="also time loads after dropping the page cache")
    ap.add_argument("--prime", action="store_true", help="touch 2x size + 256 MiB of memory before each run")
    args = ap.parse_args()
    global PRIME_BYTES
    PRIME_BYTES = 2 * args.bytes + 256 * MiB if args.prime else 0

    import lightning.fabric as lf

    torch.set_num_threads(os.cpu_count() or 1)
    fabric = lf.Fabric(accelerator="cpu", devices=1)
    os.makedirs(args.dir, exist_ok=True)
    path = os.path.join(args.dir, "python.ckpt")
    state = build_state(args.bytes)

    def fresh():  # no earlier dirty data in the way, no old target
        if os.path.exists(path):
            os.remove(path)
        os.sync()

    results = []

    def run(op, cache, fn, before=None):
        runs = [measure(fn, before) for _ in range(args.reps)]
        results.append((op, cache, [s for s, _ in runs], max(e for _, e in runs)))

    def durable(save):
        def call():
            save()
            fsync_file(path)
        return call

    # Warm-up round, untimed: imports, first-touch memory, each path once.
    measure(lambda: fabric.save(path, state), fresh)
    measure(lambda: fabric.load(path))
    measure(lambda: torch.load(path, weights_only=True, mmap=True))
    run("fabric.save", "-", lambda: fabric.save(path, state), fresh)
    run("fabric.save (fsync)", "-", durable(lambda: fabric.save(path, state)), fresh)
    run("torch.save", "-", lambda: torch.save(state, path), fresh)
    run("torch.save (fsync)", "-", durable(lambda: torch.save(state, path)), fresh)
    torch.save(state, path)
    os.sync()
    torch.load(path, weights_only=True)  # cached from here on
    run("fabric.load", "cached", lambda: fabric.load(path))
    run("torch.load", "cached", lambda: torch.load(path, weights_only=True))
    run("torch.load(mmap=True)", "cached", lambda: torch.load(path, weights_only=True, mmap=True))
    if args.cold and drop_caches():
        run("fabric.load", "cold", lambda: fabric.load(path), drop_caches)
        run("torch.load", "cold", lambda: torch.load(path, weights_only=True), drop_caches)
        run("torch.load(mmap=True)", "cold", lambda: torch.load(path, weights_only=True, mmap=True), drop_caches)
    os.remove(path)

    from safetensors.torch import load_file, save_file

    st_path = os.path.join(args.dir, "python.safetensors")
    tensors = dict(state["model"])

    def st_fresh():
        if os.path.exists(st_path):
            os.remove(st_path)
        os.sync()

    def st_durable():
        save_file(tensors, st_path)
        fsync_file(st_path)

    measure(lambda: save_file(tensors, st_path), st_fresh)
    measure(lambda: load_file(st_path))
    run("safetensors save_file", "-", lambda: save_file(tensors, st_path), st_fresh)
    run("safetensors save_file (fsync)", "-", st_durable, st_fresh)
    save_file(tensors, st_path)
    os.sync()
    load_file(st_path)  # cached from here on
    run("safetensors load_file", "cached", lambda: load_file(st_path))
    if args.cold and drop_caches():
        run("safetensors load_file", "cold", lambda: load_file(st_path), drop_caches)
    os.remove(st_path)

    for op, cache, seconds, extra in results:
        print(f"{op}\t{cache}\t{','.join(f'{s:.6f}' for s in seconds)}\t{extra}", flush=True)


if __name__ == "__main__":
    main()
