"""Conv2D's three algorithms on the zoo's layer shapes: direct, Winograd and im2col, one core, alternating.

    python benchmarks/bench_conv.py [--batch 32] [--steps 30] [--only 3]
    python benchmarks/bench_conv.py --models resnet20 resnet8 [--instead winograd] [--batch 32] [--infer-batch 128]

For each layer shape (input channels, filters, map size, 5x5 or 3x3 kernel),
one ``Conv2D`` per algorithm that can run it (``Conv2D._algorithm`` forced:
``direct``, ``winograd`` and ``im2col`` for every stride-1 3x3 and 5x5 shape) does a training forward pass and a backward pass (with the input
gradient, except for a first layer of one channel) on the same batch. The
layers take turns pass by pass; times are CPU time of this process with one
BLAS thread, medians. The input and the gradient arrive in the (C, H, W, N)
memory order the layers hand each other, as in a network. Needs numba (the
direct and Winograd 5x5 paths are compiled loops).

With ``--models``, whole zoo models instead: two copies of each, one with
Conv2D's own choice of algorithm, one with every layer that chooses ``direct``
for a 3-wide kernel forced to ``--instead``; training steps (forward, loss,
backward) and inference passes (``Stack.infer``, as ``predict`` runs it)
alternate between the copies, one core, CPU time, medians. A layer timed
alone reads its input from memory; in a network the previous layer has just
written it, so the whole model is the comparison that decides.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cnnlab  # noqa: E402
from cnnlab import layers as L  # noqa: E402
from cnnlab import stack as S  # noqa: E402
from cnnlab.layers import compiled  # noqa: E402
from cnnlab.layers.geometry import from_chwn  # noqa: E402
from common import alternate, load_images, machine  # noqa: E402

# (input channels, filters, height = width, kernel, padding): the zoo's convolutions and a few between
SHAPES = [(1, 6, 28, 5, "same"), (6, 16, 14, 5, "valid"), (1, 32, 28, 5, "same"), (3, 32, 32, 5, "same"),
          (8, 16, 14, 5, "same"), (12, 32, 14, 5, "same"), (16, 32, 14, 5, "same"), (32, 64, 14, 5, "valid"),
          (3, 16, 32, 3, "same"), (3, 32, 32, 3, "same"), (16, 16, 32, 3, "same"), (32, 32, 32, 3, "same"),
          (32, 32, 16, 3, "same"), (32, 64, 14, 3, "same"), (40, 40, 16, 3, "same"), (48, 48, 16, 3, "same"),
          (64, 64, 14, 3, "same"), (64, 64, 8, 3, "same")]


def algorithms(k):
    return ["direct", "winograd", "im2col"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--only", default="", help="run only shapes whose kernel is K, e.g. 3")
    ap.add_argument("--models", nargs="*", help="whole zoo models: Conv2D's choice against --instead")
    ap.add_argument("--instead", default="winograd", help="the algorithm forced on the layers that choose direct")
    ap.add_argument("--infer-batch", type=int, default=128)
    args = ap.parse_args()
    if not compiled.enabled():
        raise SystemExit("bench_conv.py needs numba (pip install \"cnnlab[fast]\")")
    threadpool_limits(1)
    rng = np.random.default_rng(0)
    print(machine())
    if args.models:
        return whole_models(args)
    print(f"one core, {args.batch} images; CPU ms per pass, forward / backward, medians of {args.steps} alternating")
    print("| channels -> filters, map, kernel | " + " | ".join(["direct", "winograd", "im2col"]) + " |")
    print("| --- | ---: | ---: | ---: |")
    for c, f, h, k, padding in SHAPES:
        if args.only and str(k) != args.only:
            continue
        x = from_chwn(rng.standard_normal((c, h, h, args.batch)).astype(np.float32))   # as layers hand it on
        layers = {}
        for name in algorithms(k):
            layer = L.Conv2D(f, k, padding=padding)
            layer._algorithm = lambda channels, name=name: name
            layer.build(x.shape[1:], rng=np.random.default_rng(1))
            layer.needs_input_grad = c > 1
            y = layer.forward(x, training=True)
            dy = from_chwn(np.ascontiguousarray(rng.standard_normal(y.shape).astype(np.float32).transpose(3, 1, 2, 0)))
            layers[name] = (layer, dy)
            layer.backward(dy)                                          # warm-up (and numba's compilation)
        times = {name: [] for name in layers}
        for _ in range(args.steps):
            for name, (layer, dy) in layers.items():
                t0 = time.process_time()
                layer.forward(x, training=True)
                t1 = time.process_time()
                layer.backward(dy)
                times[name].append((t1 - t0, time.process_time() - t1))
        cells = []
        for name in ["direct", "winograd", "im2col"]:
            if name in times:
                fwd, bwd = np.median(times[name], axis=0) * 1e3
                cells.append(f"{fwd:.2f} / {bwd:.2f}")
            else:
                cells.append("-")
        print(f"| {c} -> {f}, {h}x{h}, {k}x{k} {padding} | " + " | ".join(cells) + " |", flush=True)


def whole_models(args):
    print(f"one core; CPU ms per step, medians of {args.steps} alternating steps; 'forced': the 3-wide layers "
          f"that choose direct run {args.instead}")
    print(f"| model | layers forced | training, {args.batch} images: own / forced | ratio | "
          f"inference, {args.infer_batch}: own / forced | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.models:
        build = cnnlab.models.get(name)
        own, forced = build(), build()
        kind = "cifar10" if own.input_shape[-1] == 3 else "mnist"
        x, y, _ = load_images(kind, max(args.batch, args.infer_batch))
        moved = 0
        for layer in forced.layers:
            if isinstance(layer, L.Conv2D) and layer.kernel_size[1] == 3 and \
                    layer._algorithm(layer.input_shape[-1]) == "direct":
                layer._algorithm = lambda channels: args.instead
                moved += 1
        for m in (own, forced):
            m.stack.mark_input_gradients()
        xb, yb, xi = x[:args.batch], y[:args.batch], x[:args.infer_batch]
        ta, tb = alternate(lambda: S.train_step(own.stack, own.loss, xb, yb),
                           lambda: S.train_step(forced.stack, forced.loss, xb, yb), args.steps)
        ia, ib = alternate(lambda: own.stack.infer(xi), lambda: forced.stack.infer(xi), args.steps)
        print(f"| {name} | {moved} | {np.median(ta) * 1e3:.1f} / {np.median(tb) * 1e3:.1f} | "
              f"{np.median(tb / ta):.2f}x | {np.median(ia) * 1e3:.1f} / {np.median(ib) * 1e3:.1f} | "
              f"{np.median(ib / ia):.2f}x |", flush=True)


if __name__ == "__main__":
    main()
