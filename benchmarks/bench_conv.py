"""Conv2D's three algorithms on the zoo's layer shapes: direct, Winograd and im2col, one core, alternating.

    python benchmarks/bench_conv.py [--batch 32] [--steps 30]

For each layer shape (input channels, filters, map size, 5x5 or 3x3 kernel),
one ``Conv2D`` per algorithm that can run it (``Conv2D._algorithm`` forced:
``direct`` for 5-wide kernels, ``winograd`` for stride-1 3x3 and 5x5, ``im2col``
always) does a training forward pass and a backward pass (with the input
gradient, except for a first layer of one channel) on the same batch. The
layers take turns pass by pass; times are CPU time of this process with one
BLAS thread, medians. The gradient arrives in the (F, H, W, N) memory order
the layer after a convolution hands back, as in a network. Needs numba (the
direct and Winograd 5x5 paths are compiled loops).
"""
import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from cnnlab import layers as L
from cnnlab.layers import compiled
from cnnlab.layers.geometry import from_chwn
from common import machine

# (input channels, filters, height = width, kernel, padding): the zoo's convolutions and a few between
SHAPES = [(1, 6, 28, 5, "same"), (6, 16, 14, 5, "valid"), (1, 32, 28, 5, "same"), (3, 32, 32, 5, "same"),
          (8, 16, 14, 5, "same"), (12, 32, 14, 5, "same"), (16, 32, 14, 5, "same"), (32, 64, 14, 5, "valid"),
          (3, 32, 32, 3, "same"), (32, 32, 32, 3, "same")]


def algorithms(k):
    return ["direct", "winograd", "im2col"] if k == 5 else ["winograd", "im2col"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    if not compiled.enabled():
        raise SystemExit("bench_conv.py needs numba (pip install \"cnnlab[fast]\")")
    threadpool_limits(1)
    rng = np.random.default_rng(0)
    print(machine())
    print(f"one core, {args.batch} images; CPU ms per pass, forward / backward, medians of {args.steps} alternating")
    print("| channels -> filters, map, kernel | " + " | ".join(["direct", "winograd", "im2col"]) + " |")
    print("| --- | ---: | ---: | ---: |")
    for c, f, h, k, padding in SHAPES:
        x = rng.standard_normal((args.batch, h, h, c)).astype(np.float32)
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


if __name__ == "__main__":
    main()
