"""Per-layer profile of one training step of a zoo model (LeNet-5 by default): where the time goes.

    python benchmarks/profile_step.py [--model lenet5] [--batch-size 64] [--threads 1] [--repeats 50] [--clock cpu] [--inference]

Times each layer's forward and backward, the loss and the optimizer step
separately, over many steps, and prints the median (and minimum) milliseconds.
``--clock cpu`` times this thread's CPU time instead of the wall clock: with
``--threads 1`` on a busy machine it leaves out the time spent waiting for a core.
Fused steps (a ReLU followed by max pooling, ...) are timed as one step, the
way training (or with ``--inference``, ``predict``) runs them (``cnnlab.stack``).
"""
import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import cnnlab
from common import machine


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet5", help="a zoo model: " + ", ".join(cnnlab.models.ZOO))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: cnnlab's choice)")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--inference", action="store_true",
                    help="time the inference pass (Stack.infer, as predict runs it) instead of a training step")
    args = ap.parse_args()
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    model = cnnlab.models.get(args.model)()
    opt = cnnlab.optim.SGD(lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size,) + model.input_shape, dtype=np.float32)
    y = rng.integers(0, 10, args.batch_size)
    # what training runs (ReLU + max-pool as one step...), or with --inference what predict runs (Stack.infer:
    # BatchNorm folded into the layer before it, a direct convolution pooling in its own loop)
    steps = [runner for runner, *_ in model.stack.plan(inference=args.inference).steps]
    label = {id(s): "+".join(layer.name for layer in vars(s).values() if layer is not None) if not hasattr(s, "name") else s.name
             for s in steps}                                         # a fused step: its layers joined by +
    names = [label[id(s)] for s in steps]
    times = {k: [] for k in [f"fwd {n}" for n in names] + ["loss"] + [f"bwd {n}" for n in reversed(names)] + ["optimizer", "step total"]}
    recording = [False]

    def timed(key, fn):
        """``fn`` that adds its duration to ``times[key]`` while recording."""
        def run(*a, **k):
            t = clock()
            out = fn(*a, **k)
            if recording[0]:
                times[key].append(clock() - t)
            return out
        return run

    # The stack runs these same step objects (its plan is made once): time each step's passes where it runs,
    # so graphs (resnet20's branches) go through the stack's own forward and backward.
    for s in steps:
        s.forward, s.backward = timed(f"fwd {label[id(s)]}", s.forward), timed(f"bwd {label[id(s)]}", s.backward)

    def step(record):
        recording[0] = record
        t_start = clock()
        if args.inference:
            model.stack.infer(x)
        else:
            h = model.stack.forward(x, training=True)
            t = clock()
            model.loss.forward(h, y)
            g = model.loss.backward()
            if record:
                times["loss"].append(clock() - t)
            model.stack.backward(g)
            t = clock()
            opt.step(model.parameters())
            if record:
                times["optimizer"].append(clock() - t)
        if record:
            times["step total"].append(clock() - t_start)

    limits = threadpool_limits(args.threads) if args.threads else None
    for _ in range(5):
        step(False)
    for _ in range(args.repeats):
        step(True)
    if limits:
        limits.unregister()
    what = "inference forward pass" if args.inference else "training step"
    print(f"{model.name} {what}, batch {args.batch_size}: median (min) milliseconds; {machine()}")
    for k, v in times.items():
        if v:
            print(f"  {k:28s} {np.median(v) * 1e3:7.3f}  ({np.min(v) * 1e3:.3f})")


if __name__ == "__main__":
    main()
