#!/usr/bin/env python3
"""Python side of `fabric-ckpt bench-sharded`: Lightning's ModelParallelStrategy (FSDP2 fully_shard on CPU,
gloo) with a stack of Linear(2048, 2048) layers, timing per repetition (after one warm-up) a sharded
fabric.save, a fabric.load of it, and a full save (save_distributed_checkpoint=False). Each time runs from
a barrier to a barrier, so it is the slowest rank's. Saves are made durable (os.fsync of what each rank
wrote and its folder) inside the timing, as the Java ranks fsync by default. Rank 0 prints for the Java driver (cli/ShardedBench.java):

    time <op>=seconds,seconds,...

Run on its own:  python bench/sharded_bench.py --layers 32 --reps 3 --ranks 2 --dir /tmp/x
"""
import argparse
import glob
import os
import time
import warnings

import lightning as L
import torch
from lightning.fabric.strategies import ModelParallelStrategy
from torch.distributed.fsdp import fully_shard


class Stack(torch.nn.Module):
    def __init__(self, layers):
        super().__init__()
        for i in range(layers):
            setattr(self, f"l{i}", torch.nn.Linear(2048, 2048))


def parallelize(model, mesh):
    for layer in model.children():
        fully_shard(layer, mesh=mesh["data_parallel"])
    fully_shard(model, mesh=mesh["data_parallel"])
    return model


def fsync_paths(paths):
    """Durable as the Java side (which fsyncs by default): each file, then the folders holding them."""
    folders = set()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        folders.add(os.path.dirname(os.path.abspath(path)))
    for folder in folders:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def main(fabric, args):
    model = fabric.setup_module(Stack(args.layers))
    state = {"model": model, "step": 1}
    timings = {"sharded save": [], "sharded load": [], "full save": []}

    def timed(op, rep, fn):
        fabric.barrier()
        t0 = time.perf_counter()
        fn()
        fabric.barrier()
        if rep > 0:
            timings[op].append(time.perf_counter() - t0)

    sharded, full = f"{args.dir}/sharded", f"{args.dir}/full.ckpt"
    rank = fabric.global_rank

    def sharded_save():
        fabric.save(sharded, state)
        mine = glob.glob(f"{sharded}/__{rank}_*.distcp")
        if rank == 0:
            mine += [p for p in (f"{sharded}/.metadata", f"{sharded}/meta.pt") if os.path.exists(p)]
        fsync_paths(mine)

    def full_save():
        fabric.save(full, state)
        if rank == 0:
            fsync_paths([full])

    for rep in range(args.reps + 1):  # rep 0 warms up
        fabric.strategy._save_distributed_checkpoint = True
        timed("sharded save", rep, sharded_save)
        timed("sharded load", rep, lambda: fabric.load(sharded, {"model": model}))
        fabric.strategy._save_distributed_checkpoint = False
        timed("full save", rep, full_save)
    if fabric.global_rank == 0:
        for op, t in timings.items():
            print(f"time {op}=" + ",".join(f"{x:.6f}" for x in t), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    strategy = ModelParallelStrategy(parallelize, data_parallel_size=args.ranks, tensor_parallel_size=1)
    fabric = L.Fabric(accelerator="cpu", devices=args.ranks, strategy=strategy)
    fabric.launch(main, args)
