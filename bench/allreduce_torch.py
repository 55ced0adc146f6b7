#!/usr/bin/env python3
"""The peer of `upcycle bench allreduce`: torch.distributed's all_reduce (Gloo, sum, float32) from
Python, the collective PyTorch's DistributedDataParallel issues for its buckets, timed the same way:
per size and iteration a barrier, then one timed all_reduce; the median over the iterations on rank 0.

    /usr/bin/python3 bench/allreduce_torch.py [--nproc 2] [--sizes-mb 0.25,1,4,16,64] [--iterations 20] [--json]

Uses Debian's python3-torch (1.13, Gloo built in); the ranks talk over 127.0.0.1.
"""
import argparse
import json
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, port, sizes, warmup, iterations, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    rows = []
    for mb in sizes:
        n = max(1, int(mb * 1048576 / 4))
        t = torch.ones(n)
        secs = []
        for i in range(warmup + iterations):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            s = time.perf_counter() - t0
            if i >= warmup:
                secs.append(s)
        sec = statistics.median(secs)
        algo = n * 4 / sec / 1e9
        rows.append({"mb": n * 4 / 1048576, "seconds": sec, "algo_gb_per_s": algo,
                     "bus_gb_per_s": algo * 2 * (world - 1) / world})
    if rank == 0:
        queue.put(rows)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--sizes-mb", default="0.25,1,4,16,64")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    sizes = [float(x) for x in a.sizes_mb.split(",")]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, a.nproc, port, sizes, a.warmup, a.iterations, queue))
             for r in range(a.nproc)]
    for p in procs:
        p.start()
    rows = queue.get()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"rank exited with {p.exitcode}")
    out = {"world": a.nproc, "backend": "gloo", "torch": torch.__version__, "rows": rows}
    if a.json:
        print(json.dumps(out))
    else:
        for r in rows:
            print(f"{r['mb']:10.2f} MB {1e3 * r['seconds']:10.3f} ms {r['algo_gb_per_s']:8.2f} GB/s")


if __name__ == "__main__":
    main()
