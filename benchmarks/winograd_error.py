"""Float32 error of Winograd F(2x2, 3x3) against F(4x4, 3x3) on the zoo's 3x3 layer shapes: is F(4x4) allowed?

    python benchmarks/winograd_error.py [--batch 8] [--seeds 3]

Issue 26's rule: a new algorithm is kept only if its largest relative error
against a float64 reference, over the zoo's layer shapes and random inputs,
stays within 2x of today's F(2x2, 3x3). Both transforms run here in the same
NumPy code (tiles of m x m outputs from (m + 2) x (m + 2) inputs, every step in
float32, the transformed kernel rounded to float32 once, as the layer does);
the reference is the direct convolution in float64 of the same float32
numbers. The error of a layer is ``max |y32 - y64| / max |y64|``; the engine's
own F(2x2, 3x3) (``Conv2D`` with the compiled loops) is measured beside them,
so the NumPy F(2x2) can be seen to stand for it. Inputs: He-initialized
kernels, images of standard normal numbers and of their ReLU (non-negative, as
after a ReLU).

The F(4x4, 3x3) matrices are Cook-Toom's for the points given (Lavin and Gray
2016 use 0, +-1, +-2 and infinity; Barabasz et al. 2018 study other points):
A^T and G from the points, B^T solved from the condition that the tile
computes the correlation exactly (checked in float64).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from cnnlab import layers as L  # noqa: E402
from cnnlab.layers.conv import conv2d_naive  # noqa: E402
from cnnlab.layers.winograd import F2_3  # noqa: E402

# (input channels, filters, map side) of every 3x3 convolution in the zoo (stride 1, "same" padding)
SHAPES = [(32, 64, 14), (64, 64, 14),                                   # mnist_accurate
          (3, 32, 32), (32, 32, 32), (32, 64, 16), (64, 64, 16), (64, 128, 8), (128, 128, 8),   # cifar_small
          (3, 16, 32), (16, 16, 32), (32, 32, 16), (64, 64, 8)]           # resnet8 / resnet20


def cook_toom(points, m, r=3):
    """``(bt, g, at)`` of F(m, r) for ``points`` (m + r - 2 finite points, infinity added)."""
    n = m + r - 1
    p = np.asarray(points, float)
    assert len(p) == n - 1
    at = np.zeros((m, n))
    at[:, :-1] = p[None, :] ** np.arange(m)[:, None]
    at[-1, -1] = 1
    f = np.array([np.prod([pj - pl for pl in p if pl != pj]) for pj in p])
    g = np.zeros((n, r))
    g[:-1] = p[:, None] ** np.arange(r)[None, :] / f[:, None]
    g[-1, -1] = 1
    # B^T: sum_j at[i, j] g[j, k] bt[j, t] = [t == i + k] for every output i, tap k and input t
    mat = np.einsum("ij,jk->ikj", at, g).reshape(m * r, n)
    bt = np.zeros((n, n))
    for t in range(n):
        rhs = np.array([[float(t == i + k) for k in range(r)] for i in range(m)]).reshape(-1)
        bt[:, t] = np.linalg.lstsq(mat, rhs, rcond=None)[0]
    assert np.abs(mat @ bt - np.array([[[float(t == i + k) for t in range(n)] for k in range(r)]
                                       for i in range(m)]).reshape(m * r, n)).max() < 1e-9
    return bt, g, at


def winograd32(x, kernel, bt, g, at):
    """'same' 3x3 convolution of ``x`` (N, H, W, C) with ``kernel`` (3, 3, C, F) by F(m x m, 3x3), in float32."""
    n, h, w, c = x.shape
    m, t = at.shape[0], bt.shape[0]
    ty, tx = -(-h // m), -(-w // m)
    xp = np.zeros((n, ty * m + 2, tx * m + 2, c), np.float32)
    xp[:, 1:h + 1, 1:w + 1] = x
    idx_y = (np.arange(ty) * m)[:, None] + np.arange(t)[None, :]              # (ty, t)
    idx_x = (np.arange(tx) * m)[:, None] + np.arange(t)[None, :]
    d = xp[:, idx_y][:, :, :, idx_x]                                          # (N, ty, t, tx, t, C)
    bt32, at32 = bt.astype(np.float32), at.astype(np.float32)
    v = np.einsum("ai,nyixjc,bj->abnyxc", bt32, d, bt32, optimize=True).astype(np.float32)
    u = np.einsum("ak,klcf,bl->abcf", g, kernel.astype(np.float64), g).astype(np.float32)
    mm = np.einsum("abnyxc,abcf->abnyxf", v, u, optimize=True).astype(np.float32)
    y = np.einsum("ia,abnyxf,jb->nyixjf", at32, mm, at32, optimize=True).astype(np.float32)
    return y.reshape(n, ty * m, tx * m, -1)[:, :h, :w]


def engine32(x, kernel):
    """The layer's own float32 forward pass (Winograd F(2x2, 3x3) forced)."""
    conv = L.Conv2D(kernel.shape[3], 3, padding="same", use_bias=False)
    conv.build(x.shape[1:], rng=np.random.default_rng(0))
    conv._algorithm = lambda channels: "winograd"
    conv.params["kernel"][...] = kernel
    return conv.forward(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    variants = {"F(2x2)": (F2_3.bt, F2_3.g, F2_3.at), "F(4x4) 0,+-1,+-2": cook_toom([0, 1, -1, 2, -2], 4),
                "F(4x4) 0,+-1,+-1/2": cook_toom([0, 1, -1, 0.5, -0.5], 4)}
    print(machine())
    print(f"max |y32 - y64| / max |y64| over {args.seeds} seeds x (normal, ReLU'd normal) inputs, batch {args.batch}")
    print("| channels -> filters, map | engine F(2x2) | " + " | ".join(variants) + " | F(4x4) / F(2x2) |")
    print("| --- | ---: | " + " | ".join("---:" for _ in variants) + " | ---: |")
    worst = {k: 0.0 for k in ["engine"] + list(variants)}
    for c, f, hw in SHAPES:
        err = {k: 0.0 for k in worst}
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            kernel = (rng.uniform(-1, 1, (3, 3, c, f)) * np.sqrt(6 / (9 * c))).astype(np.float32)   # He uniform
            for relu in (False, True):
                x = rng.standard_normal((args.batch, hw, hw, c)).astype(np.float32)
                if relu:
                    x = np.maximum(x, 0)
                ref = conv2d_naive(x.astype(np.float64), kernel.astype(np.float64), pads=(1, 1, 1, 1))
                scale = np.abs(ref).max()
                err["engine"] = max(err["engine"], np.abs(engine32(x, kernel) - ref).max() / scale)
                for k, (bt, g, at) in variants.items():
                    err[k] = max(err[k], np.abs(winograd32(x, kernel, bt, g, at) - ref).max() / scale)
        for k in worst:
            worst[k] = max(worst[k], err[k])
        f4 = err["F(4x4) 0,+-1,+-2"] / err["F(2x2)"]
        print(f"| {c} -> {f}, {hw}x{hw} | " + " | ".join(f"{err[k]:.2e}" for k in err) + f" | {f4:.1f}x |",
              flush=True)
    print("| largest | " + " | ".join(f"{worst[k]:.2e}" for k in worst) +
          f" | {worst['F(4x4) 0,+-1,+-2'] / worst['F(2x2)']:.1f}x |")


if __name__ == "__main__":
    main()
