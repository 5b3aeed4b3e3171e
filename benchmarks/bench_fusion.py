"""What the stack's fused steps buy: each zoo model with and without them, one core, alternating step by step.

    python benchmarks/bench_fusion.py [--models mnist_fast cifar_small] [--batch 32] [--infer-batch 128] [--steps 20]

Two copies of a model run in one process with one BLAS thread: one with every
fused step of ``cnnlab.stack.FUSIONS``, one without the step named by
``--without`` (default: BatchNorm -> ReLU -> MaxPool in training). Training
steps (forward, loss, backward) alternate between the two; so do inference
passes, with and without the step, and ``Stack.infer`` (BatchNorm folded into
the layer before it) against ``Stack.forward`` (BatchNorm as its own step). Times are CPU time of this
process, medians; the ratio is the slower variant over the faster one, step by
step (> 1: the fused steps are faster).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cnnlab  # noqa: E402
from cnnlab import stack as S  # noqa: E402
from common import alternate, load_images, machine  # noqa: E402


def without(model, step_name):
    """Give ``model``'s stack the plans it would have without the fused step called ``step_name``."""
    saved = list(S.FUSIONS)
    S.FUSIONS[:] = [f for f in saved if f[1].__name__ != step_name]
    try:
        model.stack._plans.clear()
        model.stack.plan(frozenset())
        model.stack.plan(frozenset(), inference=True)
    finally:
        S.FUSIONS[:] = saved


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mnist_fast", "mnist_accurate", "cifar_small", "resnet20"])
    ap.add_argument("--batch", type=int, default=32, help="training images per step (one core's shard)")
    ap.add_argument("--infer-batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--without", default="BatchNormReLUMaxPool", help="the fused training step to compare against")
    args = ap.parse_args()
    print(machine())
    print(f"one core; CPU ms per step, medians of {args.steps} alternating steps")
    print("| model | training with / without " + args.without + " | ratio | inference (Stack.infer) with / without | "
          "ratio | inference folded / unfolded | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with threadpool_limits(1):
        for name in args.models:
            build = cnnlab.models.get(name)
            kind = "cifar10" if build().input_shape[-1] == 3 else "mnist"
            x, y, _ = load_images(kind, max(args.batch, args.infer_batch))
            fused, plain = build(), build()
            without(plain, args.without)
            for m in (fused, plain):
                m.stack.mark_input_gradients()
            xb, yb = x[:args.batch], y[:args.batch]
            ta, tb = alternate(lambda: S.train_step(fused.stack, fused.loss, xb, yb),
                               lambda: S.train_step(plain.stack, plain.loss, xb, yb), args.steps)
            xi = x[:args.infer_batch]
            wa, wb = alternate(lambda: fused.stack.infer(xi), lambda: plain.stack.infer(xi), args.steps)
            ia, ib = alternate(lambda: fused.stack.infer(xi), lambda: fused.stack.forward(xi), args.steps)
            print(f"| {name} | {np.median(ta) * 1e3:.2f} / {np.median(tb) * 1e3:.2f} | {np.median(tb / ta):.3f}x "
                  f"| {np.median(wa) * 1e3:.2f} / {np.median(wb) * 1e3:.2f} | {np.median(wb / wa):.3f}x "
                  f"| {np.median(ia) * 1e3:.2f} / {np.median(ib) * 1e3:.2f} | {np.median(ib / ia):.3f}x |")


if __name__ == "__main__":
    main()
