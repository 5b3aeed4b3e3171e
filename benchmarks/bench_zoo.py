"""Every zoo model on the CPU: cnnlab against the same network in PyTorch, training, inference and memory.

    python benchmarks/bench_zoo.py [--models lenet5 mnist_fast cifar_small] [--repeats 3]
                                   [--batch-sizes 64 128] [--infer-batch 256] [--scale 1.0] [--quick]
                                   [--one-core] [--no-memory] [--json FILE]

For each model, each run starts a fresh process for one library (PyTorch
limited to 2 threads with ``torch.set_num_threads(2)``; cnnlab with its
default, one shard of each batch per core), which loads the images, warms up,
then times one epoch of training at every batch size (SGD with momentum,
shuffled batches, the same images) and inference at batch 256, and reports
images per second. Runs alternate between the libraries (which one goes first
alternates too); the table gives the median of the runs, their spread
(lowest-highest) and the ratio of the medians, cnnlab / PyTorch (> 1: cnnlab
is faster, or for memory: cnnlab uses more), and cnnlab's median against
PyTorch's fastest run (its smallest peak for memory): PyTorch's inference runs
at one of two speeds per process on some models, and only its faster one counts.

Memory is measured in runs of its own, which load the same images and do the
same work on a quarter of them (a step's buffers are the same at every step, so
the peak comes early and stays): reading a process's memory
from outside takes kernel time on the same cores and holds the process's
memory-map lock while it walks the page tables, so the timed runs are left
alone (in one comparison, sampling every 50 ms made LeNet-5's training at batch
128 13-14% slower in both libraries). The peak is taken two ways: ``PSS``, the
proportional set size of the process and its worker processes summed, sampled
every 50 ms (memory that a forked worker shares with its parent is counted
once, split between them); and ``maxrss``, ``ru_maxrss`` of the process plus
that of its largest finished child (exact peaks, but a forked worker's copy of
its parent's pages is counted twice). Both include the interpreter, the
imported libraries and the training images. ``--scale`` multiplies the number
of images (the defaults take 10-30 s per run on 2 cores); ``--quick`` is one
run of each at a quarter of the images.

``--one-core`` compares the engines on one core: PyTorch with one thread,
cnnlab with one process and one BLAS thread, and speeds in images per second
of the process's CPU time. On a machine busy with other work, where a 2-thread
run mostly measures the waiting for cores (PyTorch's threads spin while they
wait), this still measures the work each engine does.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Training images per epoch and inference images, per model: about 10 s of training per batch size on 2 cores.
IMAGES = {"lenet5": (30000, 20000), "mnist_fast": (8000, 8000), "mnist_accurate": (5000, 6000),
          "cifar_small": (2048, 3072), "resnet8": (6144, 8192), "resnet20": (2048, 3072)}
WARMUP_BATCHES = 3                       # batches run before each timed epoch (and before the timed inference)
MEMORY_SHARE = 4                         # a memory run times 1/4 of the images: 0.4 s or more per phase, 8+ samples


# ---------------------------------------------------------------------------
# One run: a fresh process, one library, one model
# ---------------------------------------------------------------------------
def run_one(side, name, images, infer_images, batch_sizes, infer_batch, one_core=False, memory=False):
    """Time ``name`` in library ``side``; return a dict of images/s and this process's memory figures.

    A ``memory`` run loads the same images but runs each phase on ``1 / MEMORY_SHARE`` of them.
    """
    import cnnlab
    from common import (TWINS, check_twin, load_images, time_cnnlab_infer, time_cnnlab_train, time_torch_infer,
                        time_torch_train, to_torch)
    twin, kind = TWINS[name]
    x, y, source = load_images(kind, max(images, infer_images))
    if memory:
        images = max(max(batch_sizes), images // MEMORY_SHARE)
        infer_images = max(infer_batch, infer_images // MEMORY_SHARE)
    build = cnnlab.models.get(name)
    shape = x.shape[1:]
    result = {"source": source, "baseline_pss_mb": pss_mb(os.getpid())}
    clock = time.process_time if one_core else time.perf_counter
    if side == "torch":
        import torch
        torch.set_num_threads(1 if one_core else 2)
        check_twin(name, build(input_shape=shape), twin(torch))
        xt, yt = to_torch(torch, x, y)
        del x, y
        for bs in batch_sizes:
            time_torch_train(torch, twin(torch), xt[:WARMUP_BATCHES * bs], yt[:WARMUP_BATCHES * bs], bs, clock)
            result[f"train {bs}"] = time_torch_train(torch, twin(torch), xt[:images], yt[:images], bs, clock)
        net = twin(torch)
        time_torch_infer(torch, net, xt[:WARMUP_BATCHES * infer_batch], infer_batch, clock)
        result["infer"] = time_torch_infer(torch, net, xt[:infer_images], infer_batch, clock)
        result["version"] = f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    else:
        workers = 1 if one_core else None
        if one_core:
            from threadpoolctl import threadpool_limits
            threadpool_limits(1)
        for bs in batch_sizes:
            time_cnnlab_train(build(input_shape=shape), x[:WARMUP_BATCHES * bs], y[:WARMUP_BATCHES * bs], bs,
                              workers, clock)
            result[f"train {bs}"] = time_cnnlab_train(build(input_shape=shape), x[:images], y[:images], bs,
                                                      workers, clock)
        model = build(input_shape=shape)
        time_cnnlab_infer(model, x[:WARMUP_BATCHES * infer_batch], infer_batch, workers, clock)
        result["infer"] = time_cnnlab_infer(model, x[:infer_images], infer_batch, workers, clock)
        result["version"] = f"cnnlab {cnnlab.__version__}" + (", 1 process" if one_core else "")
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["maxrss_mb"] = kb / 1024
    return result


# ---------------------------------------------------------------------------
# Memory seen from outside: proportional set size of a process and its descendants
# ---------------------------------------------------------------------------
def pss_mb(pid):
    """PSS of ``pid`` in MB (0 if it has gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0.0


def descendants(pid):
    """``pid`` and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def counts(name, args):
    """Training and inference images of one run of ``name``: ``IMAGES`` times ``--scale``, at least one batch."""
    train, infer = IMAGES[name]
    return max(max(args.batch_sizes), int(train * args.scale)), max(args.infer_batch, int(infer * args.scale))


def spawn(side, name, args, memory=False):
    """Run one measurement in a fresh process; return its result dict.

    A ``memory`` run is sampled from outside every 50 ms for its peak PSS (``pss_mb``); a timed run is not.
    """
    images, infer_images = counts(name, args)
    spec = json.dumps([side, name, images, infer_images, args.batch_sizes, args.infer_batch, args.one_core, memory])
    proc = subprocess.Popen([sys.executable, __file__, "--run", spec], stdout=subprocess.PIPE, text=True)
    peak, done = [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], sum(pss_mb(p) for p in descendants(proc.pid)))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True) if memory else None
    if sampler:
        sampler.start()
    out, _ = proc.communicate()
    done.set()
    if sampler:
        sampler.join()
    if proc.returncode != 0:
        sys.exit(f"bench_zoo: the {side} run of {name} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["pss_mb"] = peak[0]
    return result


def measure(side, name, args):
    """One timed run and one memory run of ``name`` in ``side``: speeds from the first, memory from the second
    (with ``--no-memory``: the timed run's own ``maxrss``, PSS not measured)."""
    result = spawn(side, name, args)
    if args.no_memory:
        return result
    mem = spawn(side, name, args, memory=True)
    result.update(pss_mb=mem["pss_mb"], maxrss_mb=mem["maxrss_mb"])
    return result


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------
def summarize(name, runs, batch_sizes):
    """Rows ``(model, what, cnnlab median, spread, PyTorch median, spread, ratio)``."""
    keys = [(f"train {bs}", f"train, batch {bs}", "img/s") for bs in batch_sizes] + [("infer", "inference", "img/s")]
    if runs["cnnlab"][0]["pss_mb"]:
        keys += [("pss_mb", "peak memory, PSS", "MB"), ("maxrss_mb", "peak memory, maxrss", "MB")]
    rows = []
    for key, label, unit in keys:
        ours = [r[key] for r in runs["cnnlab"]]
        theirs = [r[key] for r in runs["torch"]]
        a, b = float(np.median(ours)), float(np.median(theirs))
        best = max(theirs) if unit == "img/s" else min(theirs)                # PyTorch's fastest (or smallest) run
        rows.append({"model": name, "what": label, "unit": unit, "cnnlab": a, "cnnlab_runs": ours,
                     "torch": b, "torch_runs": theirs, "ratio": a / b if b else float("nan"),
                     "ratio_best": a / best if best else float("nan")})
    return rows


def fmt(v):
    return f"{v:,.0f}"


def print_table(rows, infer_batch):
    print("| model | | cnnlab | (runs) | PyTorch | (runs) | ratio | against PyTorch's best run |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        what = r["what"].replace("inference", f"inference, batch {infer_batch}") + f" ({r['unit']})"
        spread = lambda vs: f"{fmt(min(vs))}-{fmt(max(vs))}" if len(vs) > 1 else ""
        print(f"| {r['model']} | {what} | {fmt(r['cnnlab'])} | {spread(r['cnnlab_runs'])} | {fmt(r['torch'])} | "
              f"{spread(r['torch_runs'])} | **{r['ratio']:.2f}x** | {r['ratio_best']:.2f}x |")


def main():
    from common import TWINS, machine
    import cnnlab
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[m for m in cnnlab.models.ZOO if m in TWINS],
                    help=f"zoo models with a PyTorch twin: {', '.join(TWINS)} (default: all of them)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each library per model")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128], help="training batch sizes")
    ap.add_argument("--infer-batch", type=int, default=256)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the number of images of every run")
    ap.add_argument("--quick", action="store_true", help="one run of each library, a quarter of the images")
    ap.add_argument("--one-core", action="store_true",
                    help="both engines on one core, images per second of CPU time (for a busy machine)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory runs (speeds only, in half the time)")
    ap.add_argument("--json", help="also write every run's figures to this file")
    ap.add_argument("--run", help=argparse.SUPPRESS)          # internal: one measurement, in a fresh process
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run_one(*json.loads(args.run))))
        return
    unknown = [m for m in args.models if m not in TWINS]
    if unknown:
        ap.error(f"no PyTorch twin for {', '.join(unknown)} (have: {', '.join(TWINS)})")
    if args.quick:
        args.repeats, args.scale = 1, args.scale / 4
    runs = {m: {"cnnlab": [], "torch": []} for m in args.models}
    t0 = time.perf_counter()
    for r in range(args.repeats):
        for m in args.models:
            for side in (("cnnlab", "torch") if r % 2 == 0 else ("torch", "cnnlab")):
                runs[m][side].append(measure(side, m, args))
                res = runs[m][side][-1]
                print(f"  run {r + 1}/{args.repeats} {m:12s} {side:6s} " +
                      " ".join(f"{k} {res[k]:,.0f}" for k in res if k.startswith("train") or k == "infer") +
                      f" img/s, PSS {res['pss_mb']:.0f} MB, maxrss {res['maxrss_mb']:.0f} MB", flush=True)
    first = runs[args.models[0]]
    per = "images per second of CPU time" if args.one_core else "images per second"
    print(f"\n{first['cnnlab'][0]['version']} against {first['torch'][0]['version']}; {per}; "
          f"median of {args.repeats} alternating runs, each a fresh process ({time.perf_counter() - t0:.0f} s in all)")
    for m in args.models:
        print(f"  {m}: %d training / %d inference " % counts(m, args) +
              f"{runs[m]['cnnlab'][0]['source']}")
    print(machine())
    rows = [row for m in args.models for row in summarize(m, runs[m], args.batch_sizes)]
    print_table(rows, args.infer_batch)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
