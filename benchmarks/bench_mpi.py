"""Distributed training on MPI over loopback: what one Allreduce costs, and 2 ranks against 2 worker processes.

    python benchmarks/bench_mpi.py                 # about 3 minutes on 2 cores
    python benchmarks/bench_mpi.py --repeats 5

1. For every zoo model, with 2 and 4 ranks (``mpiexec -n N``, the one installed with this Python): the bytes of
   the step's flat buffer (gradients, BatchNorm shard statistics, loss, correct count), the median
   time of one ``Allreduce`` of it, the median time of a whole training step (each rank computes 64/N images,
   then the Allreduce), and the Allreduce's share of the step. With more ranks than cores the ranks take
   turns on a core, so the 4-rank step is slower than it would be on 4 cores; the Allreduce share is the figure.
2. ``mnist_fast``, batch 64, 20 steps of training on synthetic images: 2 ranks x 1 process against 1 rank x 2
   worker processes (``cnnlab.parallel``), alternating, median of ``--repeats`` each: the ratio is the cost of
   MPI's communication over the shared-memory block the worker processes use.
Also reports the compute time per image of each model (one process, batch 64), the input of the scaling table
in docs/distributed.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import cnnlab  # noqa: E402
from cnnlab import distributed  # noqa: E402
from cnnlab.parallel import DataParallel  # noqa: E402
from common import machine  # noqa: E402

BATCH = 64


def synthetic(model, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n,) + model.input_shape).astype(np.float32), rng.integers(0, model.num_classes, n)


def rank_allreduce(repeats):
    """Under mpiexec: time the Allreduce and the step of every zoo model; rank 0 prints JSON."""
    comm = distributed.world()
    out = {}
    for name, make in cnnlab.models.ZOO.items():
        model = make()
        x, y = synthetic(model, BATCH)
        engine = distributed.DistributedParallel(model, comm)
        reduce_times, step_times = [], []
        for i in range(repeats + 2):
            comm.barrier()
            t = time.perf_counter()
            comm.allreduce(engine.buffer)
            reduce_times.append(time.perf_counter() - t)
            comm.barrier()
            t = time.perf_counter()
            engine.train_batch(x, y)
            step_times.append(time.perf_counter() - t)
        out[name] = {"bytes": int(engine.buffer.nbytes), "allreduce_s": statistics.median(reduce_times[2:]),
                     "step_s": statistics.median(step_times[2:])}
    if comm.is_root:
        print(json.dumps(out))


def rank_fit(steps):
    """Under mpiexec or alone: train mnist_fast for ``steps`` steps; print the seconds (rank 0)."""
    model = cnnlab.models.mnist_fast()
    x, y = synthetic(model, BATCH * steps)
    t = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, workers=2)
    seconds = time.perf_counter() - t
    if distributed.is_root():
        print(json.dumps({"seconds": seconds}))


def launch(ranks, *args):
    cmd = ([distributed.find_mpiexec(), "-n", str(ranks)] if ranks else []) + [sys.executable, __file__, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compute_per_image(repeats):
    """Seconds per image of a training step in one process (no worker processes), batch 64."""
    out = {}
    for name, make in cnnlab.models.ZOO.items():
        model = make()
        x, y = synthetic(model, BATCH)
        times = []
        with DataParallel(model, workers=1, max_batch=BATCH) as dp:
            for _ in range(repeats + 2):
                t = time.perf_counter()
                dp.train_step(x, y)
                times.append(time.perf_counter() - t)
        out[name] = statistics.median(times[2:]) / BATCH
    return out


# Training compute time per image on one core, measured on this 2-core machine when it was quiet (README:
# LeNet-5 20,800 images/s at batch 64; mnist_fast 17 epochs of 60,000 augmented images in 484 s; cifar_small
# about 370 images/s), halved per core: the input of the scaling estimate.
QUIET_SECONDS_PER_IMAGE = {"lenet5": 2 / 20_800, "mnist_fast": 2 * 484 / (17 * 60_000), "cifar_small": 2 / 370}
LATENCY_S = 25e-6                   # per message over TCP


def allreduce_seconds(nbytes, ranks, bits_per_s):
    """Each rank sends (and receives) 2(N-1)/N of the buffer, as in a ring Allreduce; the messages go in
    2 log2(N) rounds (reduce-scatter then allgather by recursive halving and doubling, MPICH's choice for
    buffers of this size; a plain ring would take 2(N - 1) rounds, 0.5 ms more at 8 ranks, 12 ms at 256)."""
    return 2 * (ranks - 1) / ranks * nbytes * 8 / bits_per_s + 2 * np.log2(ranks) * LATENCY_S


def scaling_table(buffer_bytes, per_image=QUIET_SECONDS_PER_IMAGE):
    """Markdown: step time and efficiency (compute / (compute + Allreduce)) for 8, 64, 256 ranks at 10 and
    100 Gbit/s, with 64 images per rank (global batch 64 N) and with a fixed global batch of 2,048."""
    lines = ["| model | buffer | ranks | global batch | compute/step | Allreduce 10G | eff. 10G | Allreduce 100G "
             "| eff. 100G |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, t in per_image.items():
        nbytes = buffer_bytes[name]
        for batch_of in ("64 per rank", "2048"):
            for n in (8, 64, 256):
                batch = 64 * n if batch_of == "64 per rank" else 2048
                compute = batch / n * t
                cells = []
                for bw in (10e9, 100e9):
                    a = allreduce_seconds(nbytes, n, bw)
                    cells += [f"{1e3 * a:.2f} ms", f"{100 * compute / (compute + a):.0f}%"]
                lines.append(f"| {name} | {nbytes / 1e6:.2f} MB | {n} | {batch:,} | {1e3 * compute:.1f} ms | "
                             + " | ".join(cells) + " |")
    return "\n".join(lines)


def buffer_bytes():
    """Bytes of each zoo model's step buffer (float32: gradients, BatchNorm statistics, loss, correct count)."""
    out = {}
    for name, make in cnnlab.models.ZOO.items():
        model = make()
        stats = sum(int(np.prod(s)) for layer in model.layers for s in layer.shard_statistics_shapes().values())
        out[name] = 4 * (model.num_params + stats + 2)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rank-allreduce", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rank-fit", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--table", action="store_true", help="print only the scaling estimate (no MPI needed)")
    args = p.parse_args()
    if args.table:
        return print(scaling_table(buffer_bytes()))
    if args.rank_allreduce:
        return rank_allreduce(max(10, 5 * args.repeats))
    if args.rank_fit:
        return rank_fit(args.steps)

    print(machine())
    per_image = compute_per_image(10)
    print("compute time per image, one process, training at batch 64:")
    for name, s in per_image.items():
        print(f"  {name:12s} {1e3 * s:.3f} ms")
    print("\nAllreduce of the step's flat buffer over loopback (median), and its share of a training step at batch 64:")
    print(f"  {'model':12s} {'buffer':>10s}  {'ranks':>5s}  {'allreduce':>10s}  {'step':>9s}  {'share':>6s}")
    for ranks in (2, 4):
        for name, r in launch(ranks, "--rank-allreduce", "--repeats", str(args.repeats)).items():
            print(f"  {name:12s} {r['bytes'] / 1e6:8.2f} MB  {ranks:5d}  {1e3 * r['allreduce_s']:8.3f} ms  "
                  f"{1e3 * r['step_s']:7.2f} ms  {100 * r['allreduce_s'] / r['step_s']:5.1f}%")

    print(f"\nmnist_fast, {args.steps} steps of batch 64: 2 ranks x 1 process against 1 rank x 2 worker processes")
    mpi, local = [], []
    for _ in range(args.repeats):
        mpi.append(launch(2, "--rank-fit", "--steps", str(args.steps))["seconds"])
        local.append(launch(0, "--rank-fit", "--steps", str(args.steps))["seconds"])
    print(f"  2 ranks x 1:   {statistics.median(mpi):.3f} s  (runs {', '.join(f'{t:.3f}' for t in mpi)})")
    print(f"  1 rank x 2:    {statistics.median(local):.3f} s  (runs {', '.join(f'{t:.3f}' for t in local)})")
    print(f"  ratio (MPI / worker processes): {statistics.median(mpi) / statistics.median(local):.3f}")


if __name__ == "__main__":
    main()
