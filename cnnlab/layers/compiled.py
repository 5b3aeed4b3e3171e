"""Compiled loops for the passes where NumPy walks through memory too many times (optional).

Winograd's transforms (``cnnlab/layers/conv.py``) are sums of a few terms for
every tile. NumPy computes them as whole-array additions, one pass over the
block of tiles per term; the loops below compute all terms of a tile while its
numbers are still in cache. On the benchmark machine (one core, 32 images, 32
channels on 32x32 maps) the input transform took 3.9 ms in NumPy and 2.0 ms
here. Layers with 3- or 5-wide kernels and few channels skip im2col and Winograd altogether:
``direct3`` and ``direct5`` convolve row by row (see their comment below).

They need numba (``pip install "cnnlab[fast]"``: wheels, no compiler on the
user's machine). Without it, or with ``CNNLAB_COMPILED=0`` in the environment,
the layers use the NumPy functions of ``conv.py``, which stay the readable
reference these loops are tested against. The first call of each loop compiles
it (about a second); numba keeps the machine code in its cache for later runs.

Each function takes whole arrays and a block of tiles, rows ``r0:r1`` and
columns ``c0:c1``, so every array the loops see is contiguous. The batch is
the innermost axis: each line below is a loop over ``k`` (the images) on
contiguous numbers.
"""
from __future__ import annotations

import os

import numpy as np

try:
    import numba
except ImportError:                      # optional: the NumPy reference in conv.py does the same work
    numba = None


def enabled() -> bool:
    """Whether the layers use the compiled loops: numba is installed and ``CNNLAB_COMPILED`` is not ``0``."""
    return numba is not None and os.environ.get("CNNLAB_COMPILED", "1") != "0"


def _jit(fn):
    return numba.njit(cache=True, boundscheck=False, nogil=True)(fn) if numba is not None else fn


def _jit_fma(fn):
    """``_jit`` allowing fused multiply-adds and reordered sums (not ``nnan``/``ninf``: NaN and infinity
    still propagate): the direct convolution's sums of products, vectorized. They round differently from
    NumPy's, as BLAS's do; the tests compare them with float64 references."""
    return numba.njit(cache=True, boundscheck=False, nogil=True,
                      fastmath={"contract", "reassoc"})(fn) if numba is not None else fn


# Winograd F(2x2, 3x3). The coefficients are those of winograd.F2_3's B^T and A^T, one row per line, and
# the terms are added in the order winograd.py's NumPy code adds them, so the forward transforms agree
# with it to the last bit. Tap a of tile t is pixel 2t + a: in the parity-split array
# (C, 2, 2, Hq, Wq, N), row parity a % 2 at row t + a // 2 (and the same for columns). The loops take one
# row of tiles at a time: tap b of the tiles c0:c1 of a row is one contiguous run of (c1 - c0) N numbers
# (columns c0 + b // 2 onwards of its parity), so every inner loop runs over a whole row of tiles and images.

@_jit
def _b3t(d0, d1, d2, d3, o0, o1, o2, o3):
    """``o = B^T d`` for four runs of numbers (rows of a tile, or its columns): F(2x2, 3x3)'s B^T, a row a line."""
    for k in range(o0.shape[0]):
        o0[k] = d0[k] - d2[k]
        o1[k] = d1[k] + d2[k]
        o2[k] = d2[k] - d1[k]
        o3[k] = d1[k] - d3[k]


@_jit
def winograd3_input(xq, r0, r1, c0, c1, v):
    """``V = B^T d B`` for tiles ``r0:r1, c0:c1`` of ``xq`` (C, 2, 2, Hq, Wq, N) into ``v`` (4, 4, C, r1-r0, c1-c0, N)."""
    nc, hq, wq, n = xq.shape[0], xq.shape[3], xq.shape[4], xq.shape[5]
    w = (c1 - c0) * n                                                       # a row of tiles, all images
    x = xq.reshape(nc, 2, 2, hq, wq * n)                                    # view: columns and images as one axis
    vr = v.reshape(4, 4, nc, r1 - r0, w)                                    # view: the same for v
    t = np.empty((4, 4, w), xq.dtype)                                       # a row of tiles after B^T along the rows
    for c in range(nc):
        for i in range(r1 - r0):
            for b in range(4):                                             # B^T along the rows, column b of the tiles
                lo = (c0 + b // 2) * n
                x0, x1 = x[c, 0, b % 2, r0 + i, lo:lo + w], x[c, 1, b % 2, r0 + i, lo:lo + w]
                x2, x3 = x[c, 0, b % 2, r0 + i + 1, lo:lo + w], x[c, 1, b % 2, r0 + i + 1, lo:lo + w]
                _b3t(x0, x1, x2, x3, t[0, b], t[1, b], t[2, b], t[3, b])
            for a in range(4):                                             # ... then along the columns
                _b3t(t[a, 0], t[a, 1], t[a, 2], t[a, 3], vr[a, 0, c, i], vr[a, 1, c, i], vr[a, 2, c, i], vr[a, 3, c, i])
    return v


@_jit
def _bias_relu(run, b, relu):
    """An output row's epilogue, ``run`` (positions, N): add the bias ``b``, then ``max(., 0)`` where ``relu``
    (a NaN stays NaN, as in ``np.maximum``)."""
    for j in range(run.shape[0]):
        for k in range(run.shape[1]):
            v = run[j, k] + b
            if relu and v < 0:
                run[j, k] = 0
            else:
                run[j, k] = v


@_jit
def winograd3_output(m, y, r0, r1, c0, c1, bias, relu):
    """``Y = A^T M A`` of tiles ``r0:r1, c0:c1``: ``m`` (4, 4, F, r1-r0, c1-c0, N) into ``y`` (F, 2 Ty, 2 Tx, N).

    With a ``bias`` (F,) (an empty array: none), each output row gets its filter's bias added, then
    ``max(., 0)`` where ``relu``: the epilogue of a convolution with BatchNorm folded in (``conv.py``).
    """
    nf, n = m.shape[2], m.shape[5]
    w = (c1 - c0) * n
    mr = m.reshape(4, 4, nf, r1 - r0, w)                                    # view: a row of tiles, all images
    z = np.empty((2, 4, w), m.dtype)                                        # a row of tiles after A^T along the rows
    for f in range(nf):
        for i in range(r1 - r0):
            for b in range(4):
                m0, m1, m2, m3 = mr[0, b, f, i], mr[1, b, f, i], mr[2, b, f, i], mr[3, b, f, i]
                z0, z1 = z[0, b], z[1, b]
                for k in range(w):
                    z0[k] = m0[k] + m1[k] + m2[k]
                    z1[k] = m1[k] - m2[k] - m3[k]
            for a in range(2):                                             # ... then along the columns, tile by tile
                for j in range(c1 - c0):
                    s0, s1 = z[a, 0, j * n:(j + 1) * n], z[a, 1, j * n:(j + 1) * n]
                    s2, s3 = z[a, 2, j * n:(j + 1) * n], z[a, 3, j * n:(j + 1) * n]
                    y0 = y[f, 2 * (r0 + i) + a, 2 * (c0 + j)]
                    y1 = y[f, 2 * (r0 + i) + a, 2 * (c0 + j) + 1]
                    for k in range(n):
                        y0[k] = s0[k] + s1[k] + s2[k]
                        y1[k] = s1[k] - s2[k] - s3[k]
                if bias.shape[0]:                                          # this output row while it is in cache
                    _bias_relu(y[f, 2 * (r0 + i) + a, 2 * c0:2 * c1], bias[f], relu)
    return y


@_jit
def winograd3_output_adjoint(dyq, r0, r1, c0, c1, dm):
    """``dM = A dY A^T`` of tiles ``r0:r1, c0:c1``: ``dyq`` (F, 2, 2, Ty, Tx, N) parity split into ``dm`` (4, 4, F, r1-r0, c1-c0, N)."""
    nf, ty, tx, n = dyq.shape[0], dyq.shape[3], dyq.shape[4], dyq.shape[5]
    w, lo = (c1 - c0) * n, c0 * n
    d = dyq.reshape(nf, 2, 2, ty, tx * n)                                   # view: a row of tiles, all images
    dmr = dm.reshape(4, 4, nf, r1 - r0, w)
    e = np.empty((4, 2, w), dyq.dtype)                                      # a row of tiles after A along the rows
    for f in range(nf):
        for i in range(r1 - r0):
            for q in range(2):
                d0, d1 = d[f, 0, q, r0 + i, lo:lo + w], d[f, 1, q, r0 + i, lo:lo + w]
                e0, e1, e2, e3 = e[0, q], e[1, q], e[2, q], e[3, q]
                for k in range(w):
                    e0[k] = d0[k]
                    e1[k] = d0[k] + d1[k]
                    e2[k] = d0[k] - d1[k]
                    e3[k] = -d1[k]
            for a in range(4):                                             # ... then along the columns
                s0, s1 = e[a, 0], e[a, 1]
                o0, o1, o2, o3 = dmr[a, 0, f, i], dmr[a, 1, f, i], dmr[a, 2, f, i], dmr[a, 3, f, i]
                for k in range(w):
                    o0[k] = s0[k]
                    o1[k] = s0[k] + s1[k]
                    o2[k] = s0[k] - s1[k]
                    o3[k] = -s1[k]
    return dm


@_jit
def winograd3_input_adjoint(dv, dxq, r0, r1, c0, c1):
    """Add ``B dV B^T`` of tiles ``r0:r1, c0:c1`` onto ``dxq`` (C, 2, 2, Hq, Wq, N) in place; ``dv`` (4, 4, C, r1-r0, c1-c0, N).

    Neighbouring tiles share pixels: the sums reach a pixel in another order than
    winograd.py's, so the two agree to rounding, not to the last bit.
    """
    nc, hq, wq, n = dxq.shape[0], dxq.shape[3], dxq.shape[4], dxq.shape[5]
    w, lo = (c1 - c0) * n, c0 * n
    dx = dxq.reshape(nc, 2, 2, hq, wq * n)                                  # view: a row of tiles, all images
    dvr = dv.reshape(4, 4, nc, r1 - r0, w)
    e = np.empty((4, 4, w), dxq.dtype)                                      # a row of tiles after B along the rows
    for c in range(nc):
        for i in range(r1 - r0):
            for b in range(4):
                v0, v1, v2, v3 = dvr[0, b, c, i], dvr[1, b, c, i], dvr[2, b, c, i], dvr[3, b, c, i]
                e0, e1, e2, e3 = e[0, b], e[1, b], e[2, b], e[3, b]
                for k in range(w):
                    e0[k] = v0[k]
                    e1[k] = v1[k] - v2[k] + v3[k]
                    e2[k] = v1[k] - v0[k] + v2[k]
                    e3[k] = -v3[k]
            for a in range(4):                                             # ... then along the columns, added in place
                s0, s1, s2, s3 = e[a, 0], e[a, 1], e[a, 2], e[a, 3]
                row = dx[c, a % 2, :, r0 + i + a // 2]                      # (2, Wq N): this row's two column parities
                # taps b and b + 2 of neighbouring tiles land on the same pixels: one loop per pair b // 2
                p0, p1 = row[0, lo:lo + w], row[1, lo:lo + w]               # taps b = 0, 1
                for k in range(w):
                    p0[k] += s0[k]
                    p1[k] += s1[k] - s2[k] + s3[k]
                p2, p3 = row[0, lo + n:lo + n + w], row[1, lo + n:lo + n + w]   # taps b = 2, 3
                for k in range(w):
                    p2[k] += s1[k] - s0[k] + s2[k]
                    p3[k] -= s3[k]
    return dxq


# Winograd F(2x2, 5x5): B^T (6x6) and A^T (2x6) of winograd.F2_5, one row per line, in the same order as
# above. The constants have the arrays' dtype (a Python number would turn float32 arithmetic into float64).

@_jit
def _b5t(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5):
    """``o = B^T d`` for six runs of numbers (rows of a tile, or its columns): F(2x2, 5x5)'s B^T, a row a line."""
    h, c15, c2, c25 = d0.dtype.type(0.5), d0.dtype.type(1.5), d0.dtype.type(2), d0.dtype.type(2.5)
    for k in range(o0.shape[0]):
        o0[k] = d0[k] + c15 * d1[k] - c2 * d2[k] - c15 * d3[k] + d4[k]
        o1[k] = -d1[k] - c25 * d2[k] - h * d3[k] + d4[k]
        o2[k] = d1[k] + h * d2[k] - c25 * d3[k] + d4[k]
        o3[k] = -h * d1[k] - d2[k] + h * d3[k] + d4[k]
        o4[k] = c2 * d1[k] - d2[k] - c2 * d3[k] + d4[k]
        o5[k] = d1[k] + c15 * d2[k] - c2 * d3[k] - c15 * d4[k] + d5[k]


@_jit
def winograd5_input(xq, r0, r1, c0, c1, v):
    """``V = B^T d B`` for tiles ``r0:r1, c0:c1`` of ``xq`` (C, 2, 2, Hq, Wq, N) into ``v`` (6, 6, C, r1-r0, c1-c0, N)."""
    nc, hq, wq, n = xq.shape[0], xq.shape[3], xq.shape[4], xq.shape[5]
    w = (c1 - c0) * n
    x = xq.reshape(nc, 2, 2, hq, wq * n)
    vr = v.reshape(6, 6, nc, r1 - r0, w)
    t = np.empty((6, 6, w), xq.dtype)
    for c in range(nc):
        for i in range(r1 - r0):
            for b in range(6):                                             # B^T along the rows, column b of the tiles
                lo = (c0 + b // 2) * n
                x0, x1 = x[c, 0, b % 2, r0 + i, lo:lo + w], x[c, 1, b % 2, r0 + i, lo:lo + w]
                x2, x3 = x[c, 0, b % 2, r0 + i + 1, lo:lo + w], x[c, 1, b % 2, r0 + i + 1, lo:lo + w]
                x4, x5 = x[c, 0, b % 2, r0 + i + 2, lo:lo + w], x[c, 1, b % 2, r0 + i + 2, lo:lo + w]
                _b5t(x0, x1, x2, x3, x4, x5, t[0, b], t[1, b], t[2, b], t[3, b], t[4, b], t[5, b])
            for a in range(6):                                             # ... then along the columns
                _b5t(t[a, 0], t[a, 1], t[a, 2], t[a, 3], t[a, 4], t[a, 5],
                     vr[a, 0, c, i], vr[a, 1, c, i], vr[a, 2, c, i], vr[a, 3, c, i], vr[a, 4, c, i], vr[a, 5, c, i])
    return v


@_jit
def winograd5_output(m, y, r0, r1, c0, c1, bias, relu):
    """``Y = A^T M A`` of tiles ``r0:r1, c0:c1``: ``m`` (6, 6, F, r1-r0, c1-c0, N) into ``y`` (F, 2 Ty, 2 Tx, N);
    ``bias`` and ``relu`` as in ``winograd3_output``."""
    nf, n = m.shape[2], m.shape[5]
    h, c2 = m.dtype.type(0.5), m.dtype.type(2)
    w = (c1 - c0) * n
    mr = m.reshape(6, 6, nf, r1 - r0, w)
    z = np.empty((2, 6, w), m.dtype)
    for f in range(nf):
        for i in range(r1 - r0):
            for b in range(6):
                m0, m1, m2 = mr[0, b, f, i], mr[1, b, f, i], mr[2, b, f, i]
                m3, m4, m5 = mr[3, b, f, i], mr[4, b, f, i], mr[5, b, f, i]
                z0, z1 = z[0, b], z[1, b]
                for k in range(w):
                    z0[k] = m0[k] + m1[k] + m2[k] + m3[k] + m4[k]
                    z1[k] = m1[k] - m2[k] + c2 * m3[k] - h * m4[k] + m5[k]
            for a in range(2):                                             # ... then along the columns, tile by tile
                for j in range(c1 - c0):
                    s0, s1 = z[a, 0, j * n:(j + 1) * n], z[a, 1, j * n:(j + 1) * n]
                    s2, s3 = z[a, 2, j * n:(j + 1) * n], z[a, 3, j * n:(j + 1) * n]
                    s4, s5 = z[a, 4, j * n:(j + 1) * n], z[a, 5, j * n:(j + 1) * n]
                    y0 = y[f, 2 * (r0 + i) + a, 2 * (c0 + j)]
                    y1 = y[f, 2 * (r0 + i) + a, 2 * (c0 + j) + 1]
                    for k in range(n):
                        y0[k] = s0[k] + s1[k] + s2[k] + s3[k] + s4[k]
                        y1[k] = s1[k] - s2[k] + c2 * s3[k] - h * s4[k] + s5[k]
                if bias.shape[0]:
                    _bias_relu(y[f, 2 * (r0 + i) + a, 2 * c0:2 * c1], bias[f], relu)
    return y


@_jit
def winograd5_output_adjoint(dyq, r0, r1, c0, c1, dm):
    """``dM = A dY A^T`` of tiles ``r0:r1, c0:c1``: ``dyq`` (F, 2, 2, Ty, Tx, N) parity split into ``dm`` (6, 6, F, r1-r0, c1-c0, N)."""
    nf, ty, tx, n = dyq.shape[0], dyq.shape[3], dyq.shape[4], dyq.shape[5]
    h, c2 = dyq.dtype.type(0.5), dyq.dtype.type(2)
    w, lo = (c1 - c0) * n, c0 * n
    d = dyq.reshape(nf, 2, 2, ty, tx * n)
    dmr = dm.reshape(6, 6, nf, r1 - r0, w)
    e = np.empty((6, 2, w), dyq.dtype)
    for f in range(nf):
        for i in range(r1 - r0):
            for q in range(2):
                d0, d1 = d[f, 0, q, r0 + i, lo:lo + w], d[f, 1, q, r0 + i, lo:lo + w]
                e0, e1, e2, e3, e4, e5 = e[0, q], e[1, q], e[2, q], e[3, q], e[4, q], e[5, q]
                for k in range(w):
                    e0[k] = d0[k]
                    e1[k] = d0[k] + d1[k]
                    e2[k] = d0[k] - d1[k]
                    e3[k] = d0[k] + c2 * d1[k]
                    e4[k] = d0[k] - h * d1[k]
                    e5[k] = d1[k]
            for a in range(6):                                             # ... then along the columns
                s0, s1 = e[a, 0], e[a, 1]
                o0, o1, o2 = dmr[a, 0, f, i], dmr[a, 1, f, i], dmr[a, 2, f, i]
                o3, o4, o5 = dmr[a, 3, f, i], dmr[a, 4, f, i], dmr[a, 5, f, i]
                for k in range(w):
                    o0[k] = s0[k]
                    o1[k] = s0[k] + s1[k]
                    o2[k] = s0[k] - s1[k]
                    o3[k] = s0[k] + c2 * s1[k]
                    o4[k] = s0[k] - h * s1[k]
                    o5[k] = s1[k]
    return dm


@_jit
def winograd5_input_adjoint(dv, dxq, r0, r1, c0, c1):
    """Add ``B dV B^T`` of tiles ``r0:r1, c0:c1`` onto ``dxq`` (C, 2, 2, Hq, Wq, N) in place; ``dv`` (6, 6, C, r1-r0, c1-c0, N).

    Agrees with winograd.py to rounding, not to the last bit (see ``winograd3_input_adjoint``).
    """
    nc, hq, wq, n = dxq.shape[0], dxq.shape[3], dxq.shape[4], dxq.shape[5]
    h, c15, c2, c25 = dxq.dtype.type(0.5), dxq.dtype.type(1.5), dxq.dtype.type(2), dxq.dtype.type(2.5)
    w, lo = (c1 - c0) * n, c0 * n
    dx = dxq.reshape(nc, 2, 2, hq, wq * n)
    dvr = dv.reshape(6, 6, nc, r1 - r0, w)
    e = np.empty((6, 6, w), dxq.dtype)
    for c in range(nc):
        for i in range(r1 - r0):
            for b in range(6):
                v0, v1, v2 = dvr[0, b, c, i], dvr[1, b, c, i], dvr[2, b, c, i]
                v3, v4, v5 = dvr[3, b, c, i], dvr[4, b, c, i], dvr[5, b, c, i]
                e0, e1, e2, e3, e4, e5 = e[0, b], e[1, b], e[2, b], e[3, b], e[4, b], e[5, b]
                for k in range(w):
                    e0[k] = v0[k]
                    e1[k] = c15 * v0[k] - v1[k] + v2[k] - h * v3[k] + c2 * v4[k] + v5[k]
                    e2[k] = -c2 * v0[k] - c25 * v1[k] + h * v2[k] - v3[k] - v4[k] + c15 * v5[k]
                    e3[k] = -c15 * v0[k] - h * v1[k] - c25 * v2[k] + h * v3[k] - c2 * v4[k] - c2 * v5[k]
                    e4[k] = v0[k] + v1[k] + v2[k] + v3[k] + v4[k] - c15 * v5[k]
                    e5[k] = v5[k]
            for a in range(6):                                             # ... then along the columns, added in place
                s0, s1, s2, s3, s4, s5 = e[a, 0], e[a, 1], e[a, 2], e[a, 3], e[a, 4], e[a, 5]
                row = dx[c, a % 2, :, r0 + i + a // 2]
                p0, p1 = row[0, lo:lo + w], row[1, lo:lo + w]               # taps b = 0, 1
                for k in range(w):
                    p0[k] += s0[k]
                    p1[k] += c15 * s0[k] - s1[k] + s2[k] - h * s3[k] + c2 * s4[k] + s5[k]
                p2, p3 = row[0, lo + n:lo + n + w], row[1, lo + n:lo + n + w]   # taps b = 2, 3
                for k in range(w):
                    p2[k] += -c2 * s0[k] - c25 * s1[k] + h * s2[k] - s3[k] - s4[k] + c15 * s5[k]
                    p3[k] += -c15 * s0[k] - h * s1[k] - c25 * s2[k] + h * s3[k] - c2 * s4[k] - c2 * s5[k]
                p4, p5 = row[0, lo + 2 * n:lo + 2 * n + w], row[1, lo + 2 * n:lo + 2 * n + w]   # taps b = 4, 5
                for k in range(w):
                    p4[k] += s0[k] + s1[k] + s2[k] + s3[k] + s4[k] - c15 * s5[k]
                    p5[k] += s5[k]
    return dxq


# The four loops of each transform, by kernel size: input, output, output adjoint, input adjoint.
WINOGRAD = {3: (winograd3_input, winograd3_output, winograd3_output_adjoint, winograd3_input_adjoint),
            5: (winograd5_input, winograd5_output, winograd5_output_adjoint, winograd5_input_adjoint)}


# BatchNorm followed by ReLU (cnnlab/layers/norm.py, BatchNorm.forward_relu): one pass for the statistics'
# two sums, one for the output; the backward pass recomputes x - mean and the ReLU's mask from the input
# instead of keeping them. Arrays are (C, M): one row per channel, contiguous. Sums are accumulated in
# float64; ``reassoc`` lets them run as vector sums (their order of addition is then the compiler's).

@(numba.njit(cache=True, nogil=True, fastmath={"reassoc"}) if numba is not None else (lambda f: f))
def batchnorm_stats(x):
    """Per-row mean and (biased) variance of ``x`` (C, M), two passes, in float64."""
    c, m = x.shape
    mean, var = np.empty(c), np.empty(c)
    for i in range(c):
        row = x[i]
        s = 0.0
        for k in range(m):
            s += row[k]
        mu = s / m
        q = 0.0
        for k in range(m):
            d = row[k] - mu
            q += d * d
        mean[i], var[i] = mu, q / m
    return mean, var


@_jit
def batchnorm_relu(x, mean, scale, shift, y, r=None):
    """``y = max((x - mean) * scale + shift [+ r], 0)`` row by row; ``mean``, ``scale``, ``shift`` in ``x``'s dtype;
    ``r`` (C, M) like ``x``, a residual branch added before the ReLU (``BatchNorm.forward_add_relu``), or None."""
    for i in range(x.shape[0]):
        row, out, mu, s, b = x[i], y[i], mean[i], scale[i], shift[i]
        for k in range(x.shape[1]):
            z = (row[k] - mu) * s + b
            if r is not None:                   # compiled once with r and once without: no test in the loop
                z += r[i, k]
            out[k] = z if z > 0 else 0
    return y


@(numba.njit(cache=True, nogil=True, fastmath={"reassoc"}) if numba is not None else (lambda f: f))
def batchnorm_relu_sums(x, dy, mean, scale, shift, y=None, g=None):
    """Per row: ``sum(g)`` and ``sum(g (x - mean))``, where ``g = dy`` where the output was positive, else 0.

    The output's sign is recomputed from ``x``, or with ``y`` read from it (``BatchNorm.forward_add_relu``'s
    output, which a residual branch changed); ``g``, when given, receives the masked gradient itself."""
    c, m = x.shape
    sum_g, sum_gxm = np.zeros(c), np.zeros(c)
    for i in range(c):
        row, d, mu, s, b = x[i], dy[i], mean[i], scale[i], shift[i]
        s1 = 0.0
        s2 = 0.0
        for k in range(m):
            xm = row[k] - mu
            if y is None:                       # compiled once per combination: no test in the loop
                on = xm * s + b > 0
            else:
                on = y[i, k] > 0
            if g is not None:
                g[i, k] = d[k] if on else 0
            if on:
                s1 += d[k]
                s2 += d[k] * xm
        sum_g[i], sum_gxm[i] = s1, s2
    return sum_g, sum_gxm


@_jit
def batchnorm_relu_input_grad(x, dy, mean, scale, shift, a, b, dx):
    """``dx = g scale - (x - mean) a - b`` row by row (``g`` as in ``batchnorm_relu_sums``)."""
    for i in range(x.shape[0]):
        row, d, out, mu, s, sh, ai, bi = x[i], dy[i], dx[i], mean[i], scale[i], shift[i], a[i], b[i]
        for k in range(x.shape[1]):
            xm = row[k] - mu
            g = d[k] if xm * s + sh > 0 else 0
            out[k] = g * s - xm * ai - bi
    return dx


# BatchNorm, then a residual branch added, then ReLU (a residual block's end, BatchNorm.forward_add_relu): one
# pass for the output (batchnorm_relu with r), one for the sums and the branch's gradient (batchnorm_relu_sums
# with y and g), one for the input gradient. The ReLU's mask is read from the output it wrote (the residual
# branch is not needed again).

@_jit
def batchnorm_input_grad(x, g, mean, scale, a, b, dx):
    """``dx = g scale - (x - mean) a - b`` row by row."""
    for i in range(x.shape[0]):
        row, gi, out, mu, s, ai, bi = x[i], g[i], dx[i], mean[i], scale[i], a[i], b[i]
        for k in range(x.shape[1]):
            out[k] = gi[k] * s - (row[k] - mu) * ai - bi
    return dx


# Max pooling (cnnlab/layers/pool.py, MaxPool2D): one pass forward, keeping which tap of each window won
# (one byte per output: the first maximum in row-major order, as the NumPy code picks it), one pass
# backward. Arrays are (C, H, W, N); taps that fall on padding are skipped.

@_jit
def max_pool(x, kh, kw, sh, sw, top, left, y, tap):
    """``y`` (C, Ho, Wo, N): the max of each window of ``x``; ``tap`` (uint8, like ``y``): the winning tap ``p * kw + q``."""
    c_, h, w, n = x.shape
    for c in range(c_):
        for i in range(y.shape[1]):
            for j in range(y.shape[2]):
                best, won = y[c, i, j], tap[c, i, j]
                first = True
                for p in range(kh):
                    r = i * sh + p - top
                    if r < 0 or r >= h:
                        continue
                    for q in range(kw):
                        s = j * sw + q - left
                        if s < 0 or s >= w:
                            continue
                        v, t = x[c, r, s], p * kw + q
                        if first:
                            for k in range(n):
                                best[k] = v[k]
                                won[k] = t
                            first = False
                        else:
                            for k in range(n):     # a NaN wins and stays, as in np.maximum
                                if v[k] > best[k] or (v[k] != v[k] and best[k] == best[k]):
                                    best[k] = v[k]
                                    won[k] = t
    return y


@_jit
def max_pool_backward(dy, tap, kh, kw, sh, sw, top, left, dx):
    """Add each output's gradient ``dy`` onto the input pixel that won its window; ``dx`` (C, H, W, N)."""
    c_, h, w, n = dx.shape
    for c in range(c_):
        for i in range(dy.shape[1]):
            for j in range(dy.shape[2]):
                d, won = dy[c, i, j], tap[c, i, j]
                for p in range(kh):
                    r = i * sh + p - top
                    if r < 0 or r >= h:
                        continue
                    for q in range(kw):
                        s = j * sw + q - left
                        if s < 0 or s >= w:
                            continue
                        out, t = dx[c, r, s], p * kw + q
                        for k in range(n):
                            if won[k] == t:
                                out[k] += d[k]
    return dx


# BatchNorm, ReLU and a max pool whose windows do not overlap (cnnlab/layers/norm.py,
# BatchNorm.forward_relu_pool): max and ReLU commute, so each window's maximum of the normalized values
# is found and clipped, and only the pooled output is written (with the winning tap, as ``max_pool``).
# Backward: the gradient reaches a pixel only where it won its window and the output was positive, so
# the statistics' sums run over the winners, and the input gradient is BatchNorm's term through the
# batch statistics everywhere plus the routed gradient at the winners. Arrays are (C, H, W, N).

@_jit
def batchnorm_relu_max_pool(x, mean, scale, shift, kh, kw, sh, sw, top, left, y, tap):
    """``y = max(0, max over each window of (x - mean) * scale + shift)``, per channel; ``tap``: the winning tap.

    A row of windows at a time, tap by tap; a value replaces the running maximum only when larger (or a
    NaN), so the first maximum in row-major order wins, as in ``max_pool``.
    """
    c_, h, w, n = x.shape
    ho, wo = y.shape[1], y.shape[2]
    for c in range(c_):
        mu, s, b = mean[c], scale[c], shift[c]
        for i in range(ho):
            for j in range(wo):
                for k in range(n):
                    y[c, i, j, k] = -np.inf
                    tap[c, i, j, k] = 0
            for p in range(kh):
                r = i * sh + p - top
                if r < 0 or r >= h:
                    continue
                for q in range(kw):
                    t = p * kw + q
                    for j in range(wo):
                        col = j * sw + q - left
                        if col < 0 or col >= w:
                            continue
                        for k in range(n):
                            z = (x[c, r, col, k] - mu) * s + b
                            best = y[c, i, j, k]
                            if z > best or (z != z and best == best):
                                y[c, i, j, k] = z
                                tap[c, i, j, k] = t
            for j in range(wo):                    # the ReLU, as batchnorm_relu applies it
                for k in range(n):
                    v = y[c, i, j, k]
                    y[c, i, j, k] = v if v > 0 else 0
    return y


@(numba.njit(cache=True, nogil=True, fastmath={"reassoc"}) if numba is not None else (lambda f: f))
def batchnorm_relu_max_pool_sums(x, dy, tap, mean, scale, shift, kh, kw, sh, sw, top, left):
    """Per channel: ``sum(g)`` and ``sum(g (x - mean))``, ``g`` the gradient each pixel gets from its window."""
    c_, h, w, n = x.shape
    zero = x.dtype.type(0)
    sum_g, sum_gxm = np.zeros(c_), np.zeros(c_)
    for c in range(c_):
        mu, s, b = mean[c], scale[c], shift[c]
        s1 = 0.0
        s2 = 0.0
        for i in range(dy.shape[1]):
            for p in range(kh):
                r = i * sh + p - top
                if r < 0 or r >= h:
                    continue
                for q in range(kw):
                    t = p * kw + q
                    for j in range(dy.shape[2]):
                        col = j * sw + q - left
                        if col < 0 or col >= w:
                            continue
                        for k in range(n):
                            xm = x[c, r, col, k] - mu
                            g = dy[c, i, j, k] if tap[c, i, j, k] == t and xm * s + b > 0 else zero
                            s1 += g
                            s2 += g * xm
        sum_g[c], sum_gxm[c] = s1, s2
    return sum_g, sum_gxm


@_jit
def batchnorm_relu_max_pool_input_grad(x, dy, tap, mean, scale, shift, a, b, kh, kw, sh, sw, top, left, dx):
    """``dx = g scale - (x - mean) a - b`` (``g`` as in the sums: 0 off the winners), channel by channel."""
    c_, h, w, n = x.shape
    zero = x.dtype.type(0)
    row_in = np.zeros(h, np.bool_)                 # pixels some window covers (the others get only BatchNorm's term)
    col_in = np.zeros(w, np.bool_)
    for i in range(dy.shape[1]):
        for p in range(kh):
            if 0 <= i * sh + p - top < h:
                row_in[i * sh + p - top] = True
    for j in range(dy.shape[2]):
        for q in range(kw):
            if 0 <= j * sw + q - left < w:
                col_in[j * sw + q - left] = True
    for c in range(c_):
        mu, s, sft, ac, bc = mean[c], scale[c], shift[c], a[c], b[c]
        for i in range(dy.shape[1]):               # each window's pixels: its gradient at the winner, 0 elsewhere
            for p in range(kh):
                r = i * sh + p - top
                if r < 0 or r >= h:
                    continue
                for q in range(kw):
                    t = p * kw + q
                    for j in range(dy.shape[2]):
                        col = j * sw + q - left
                        if col < 0 or col >= w:
                            continue
                        for k in range(n):
                            xm = x[c, r, col, k] - mu
                            g = dy[c, i, j, k] if tap[c, i, j, k] == t and xm * s + sft > 0 else zero
                            dx[c, r, col, k] = g * s - xm * ac - bc
        for r in range(h):                         # pixels no window covers
            for col in range(w):
                if row_in[r] and col_in[col]:
                    continue
                for k in range(n):
                    dx[c, r, col, k] = -((x[c, r, col, k] - mu) * ac) - bc    # = 0 scale - (x - mean) a - b
    return dx


# col2im (cnnlab/layers/conv.py): add every row of the patch-matrix gradient back onto the pixels it came
# from. NumPy adds one kernel tap at a time over the whole image (kh * kw passes over memory); here the
# taps of one output row are added while the input rows they touch are in cache.

@_jit
def col2im(dcols, dxp, row0, kh, kw, ho, wo, sh, sw, dh, dw):
    """Add ``dcols`` (C*kh*kw, Ho*Wo*N), rows ``(c, p, q)``, columns ``(i, j, n)``, onto ``dxp`` (C, Hp, Wp, N) from row ``row0``."""
    n = dxp.shape[3]
    for c in range(dxp.shape[0]):
        for i in range(ho):
            for p in range(kh):
                for q in range(kw):
                    row = dcols[(c * kh + p) * kw + q]
                    for j in range(wo):
                        out = dxp[c, row0 + i * sh + p * dh, j * sw + q * dw]
                        base = (i * wo + j) * n
                        for k in range(n):
                            out[k] += row[base + k]
    return dxp


# Direct convolution for layers with few channels and 3- or 5-wide kernels (conv.py's Conv2D._forward_direct).
# The batch is innermost, so for input row r the taps q of a kernel row read runs of the same row, shifted
# by q*N: each output row of a few filters at once is one loop over contiguous numbers that reads each
# input number once per kernel row and multiplies it by weights held in registers (5 taps x 2 filters,
# or 3 taps x 4 filters: about as many weights as the vector registers hold). im2col would first write
# the 9x or 25x larger patch matrix; with few channels its product is too thin for BLAS to make up for
# that, and Winograd's transforms cost more than they save. Rows of the input above and below the image
# (the padding) are skipped; the columns' padding is in x. The adjoint for the input gradient is the same
# loop on dy (conv.py); the kernel gradient sums products over the same runs, block by block.

DIRECT_BLOCK = 512         # outputs per row computed together: the filters' runs and the input's stay in L1


@_jit
def _relu(run):
    """``max(., 0)`` in place over a run of outputs (a NaN stays NaN, as in ``np.maximum``)."""
    for k in range(run.shape[0]):
        if run[k] < 0:
            run[k] = 0


@_jit_fma
def direct5(x, top, n, w, bias, relu, y):
    """``y[f, i, k] = bias[f] + sum_{c, p, q} w[f, c, p, q] x[c, i + p - top, k + q n]``, then ``max(., 0)``
    where ``relu``; rows ``i + p - top`` outside ``x`` count as zeros.

    ``x`` (C, H, Wx n): the input with its columns padded and the batch (``n`` images) innermost;
    ``w`` (F, C, kh, 5); ``bias`` (F,); ``y`` (F, Ho, Wo n) with ``Wx >= Wo + 4``.
    """
    nc, h = x.shape[0], x.shape[1]
    nf, kh = w.shape[0], w.shape[2]
    ho, length = y.shape[1], y.shape[2]
    spare = np.empty(length, y.dtype)                     # the partner of the last filter when F is odd
    for i in range(ho):
        for f in range(0, nf, 2):
            g = min(f + 1, nf - 1)
            for k0 in range(0, length, DIRECT_BLOCK):
                m = min(DIRECT_BLOCK, length - k0)
                ya = y[f, i, k0:k0 + m]
                yb = y[g, i, k0:k0 + m] if g > f else spare[k0:k0 + m]
                ya[:] = bias[f]
                yb[:] = bias[g]
                for c in range(nc):
                    for p in range(kh):
                        r = i + p - top
                        if r < 0 or r >= h:
                            continue
                        run = x[c, r, k0:]
                        x0, x1, x2, x3, x4 = run[:m], run[n:n + m], run[2 * n:2 * n + m], \
                            run[3 * n:3 * n + m], run[4 * n:4 * n + m]
                        a0, a1, a2, a3, a4 = w[f, c, p, 0], w[f, c, p, 1], w[f, c, p, 2], w[f, c, p, 3], w[f, c, p, 4]
                        b0, b1, b2, b3, b4 = w[g, c, p, 0], w[g, c, p, 1], w[g, c, p, 2], w[g, c, p, 3], w[g, c, p, 4]
                        for k in range(m):
                            v0, v1, v2, v3, v4 = x0[k], x1[k], x2[k], x3[k], x4[k]
                            ya[k] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3 + a4 * v4
                            yb[k] += b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3 + b4 * v4
                if relu:
                    _relu(ya)
                    _relu(yb)
    return y


@_jit_fma
def direct3(x, top, n, w, bias, relu, y):
    """``direct5`` for 3-wide kernels (``w`` (F, C, kh, 3), ``Wx >= Wo + 2``), four filters at a time."""
    nc, h = x.shape[0], x.shape[1]
    nf, kh = w.shape[0], w.shape[2]
    ho, length = y.shape[1], y.shape[2]
    spare = np.empty((3, length), y.dtype)                # the partners of the last filters when 4 does not divide F
    for i in range(ho):
        for k0 in range(0, length, DIRECT_BLOCK):         # the block's input runs (C x kh) stay in L2 for every filter
            m = min(DIRECT_BLOCK, length - k0)
            for f in range(0, nf, 4):
                g, h2, h3 = min(f + 1, nf - 1), min(f + 2, nf - 1), min(f + 3, nf - 1)
                ya = y[f, i, k0:k0 + m]
                yb = y[g, i, k0:k0 + m] if f + 1 < nf else spare[0, k0:k0 + m]
                yc = y[h2, i, k0:k0 + m] if f + 2 < nf else spare[1, k0:k0 + m]
                yd = y[h3, i, k0:k0 + m] if f + 3 < nf else spare[2, k0:k0 + m]
                ya[:] = bias[f]
                yb[:] = bias[g]
                yc[:] = bias[h2]
                yd[:] = bias[h3]
                for c in range(nc):
                    for p in range(kh):
                        r = i + p - top
                        if r < 0 or r >= h:
                            continue
                        run = x[c, r, k0:]
                        x0, x1, x2 = run[:m], run[n:n + m], run[2 * n:2 * n + m]
                        a0, a1, a2 = w[f, c, p, 0], w[f, c, p, 1], w[f, c, p, 2]
                        b0, b1, b2 = w[g, c, p, 0], w[g, c, p, 1], w[g, c, p, 2]
                        c0, c1, c2 = w[h2, c, p, 0], w[h2, c, p, 1], w[h2, c, p, 2]
                        d0, d1, d2 = w[h3, c, p, 0], w[h3, c, p, 1], w[h3, c, p, 2]
                        for k in range(m):
                            v0, v1, v2 = x0[k], x1[k], x2[k]
                            ya[k] += a0 * v0 + a1 * v1 + a2 * v2
                            yb[k] += b0 * v0 + b1 * v1 + b2 * v2
                            yc[k] += c0 * v0 + c1 * v1 + c2 * v2
                            yd[k] += d0 * v0 + d1 * v1 + d2 * v2
                if relu:
                    _relu(ya)
                    _relu(yb)
                    _relu(yc)
                    _relu(yd)
    return y


@_jit_fma
def direct(x, top, n, w, bias, relu, y):
    """``direct3`` or ``direct5``, by the kernel's width ``w.shape[3]``."""
    if w.shape[3] == 3:
        return direct3(x, top, n, w, bias, relu, y)
    return direct5(x, top, n, w, bias, relu, y)


@_jit_fma
def direct_max_pool(x, top, n, w, bias, relu, ph, pw, group, scratch, y):
    """``direct`` followed by a max pool of ``ph`` x ``pw`` windows that do not overlap (strides = window, no
    padding; rows and columns past the last whole window are dropped), at inference: ``y`` (F, Ho // ph, Wo // pw, n).

    One row of windows at a time, ``group`` filters at a time: ``direct`` writes their ``ph`` output rows to
    ``scratch`` (``group``, ``ph``, Wo n), which stays in cache, and only each window's maximum reaches ``y``,
    so the full output never goes to memory. A NaN wins its window, as in ``max_pool``.
    """
    nf = w.shape[0]
    for i in range(y.shape[1]):
        for f0 in range(0, nf, group):
            f1 = min(f0 + group, nf)
            rows = scratch[:f1 - f0]
            direct(x, top - i * ph, n, w[f0:f1], bias[f0:f1], relu, rows)     # output rows i*ph ... i*ph + ph - 1
            for f in range(f1 - f0):
                out = y[f0 + f, i]
                for j in range(y.shape[2]):
                    best = out[j]
                    for k in range(n):
                        best[k] = rows[f, 0, j * pw * n + k]
                    for p in range(ph):
                        for q in range(pw):
                            if p == 0 and q == 0:
                                continue
                            run = rows[f, p, (j * pw + q) * n:]
                            for k in range(n):
                                v = run[k]
                                if v > best[k] or v != v:
                                    best[k] = v
    return y


@_jit_fma
def direct5_kernel_grad(x, top, n, dy, dw):
    """``dw[f, c, p, q] = sum_{i, k} dy[f, i, k] x[c, i + p - top, k + q n]``: the kernel's gradient of ``direct5``
    (``dy`` (F, Ho, Wo n), ``dw`` (F, C, kh, 5)); ten sums at once, two filters by five taps."""
    nc, h = x.shape[0], x.shape[1]
    nf, kh = dw.shape[0], dw.shape[2]
    ho, length = dy.shape[1], dy.shape[2]
    dw[:] = 0
    zero = dw[0, 0, 0, 0]                                  # a zero of the arrays' type
    for f in range(0, nf, 2):
        g = min(f + 1, nf - 1)                            # F odd: the last filter's sums twice, written twice
        for c in range(nc):
            for p in range(kh):
                a0 = a1 = a2 = a3 = a4 = b0 = b1 = b2 = b3 = b4 = zero
                for i in range(ho):
                    r = i + p - top
                    if r < 0 or r >= h:
                        continue
                    row, da, db = x[c, r], dy[f, i], dy[g, i]
                    x0, x1, x2, x3, x4 = row[:length], row[n:n + length], row[2 * n:2 * n + length], \
                        row[3 * n:3 * n + length], row[4 * n:4 * n + length]
                    for k in range(length):
                        v0, v1, v2, v3, v4, ga, gb = x0[k], x1[k], x2[k], x3[k], x4[k], da[k], db[k]
                        a0 += ga * v0
                        a1 += ga * v1
                        a2 += ga * v2
                        a3 += ga * v3
                        a4 += ga * v4
                        b0 += gb * v0
                        b1 += gb * v1
                        b2 += gb * v2
                        b3 += gb * v3
                        b4 += gb * v4
                dw[f, c, p, 0], dw[f, c, p, 1], dw[f, c, p, 2], dw[f, c, p, 3], dw[f, c, p, 4] = a0, a1, a2, a3, a4
                dw[g, c, p, 0], dw[g, c, p, 1], dw[g, c, p, 2], dw[g, c, p, 3], dw[g, c, p, 4] = b0, b1, b2, b3, b4
    return dw


# The 3-wide kernel gradient, for layers of fewer than 32 channels: summing one (filter, channel, kernel row) at
# a time over the whole map, as direct5_kernel_grad does for its few channels, would read the input and dy
# from memory again for every such triple (3.9x slower on 16 channels at 32x32). Here each block of
# DIRECT_BLOCK outputs of one row is read once into cache, and every triple's partial sums over it are
# added to dw. (The same blocking made direct5_kernel_grad about 10% slower on LeNet-5's layers.)

@_jit_fma
def direct3_kernel_grad(x, top, n, dy, dw):
    """``direct5_kernel_grad`` for 3-wide kernels (``dw`` (F, C, kh, 3)): twelve sums at once, four filters by
    three taps."""
    nc, h = x.shape[0], x.shape[1]
    nf, kh = dw.shape[0], dw.shape[2]
    ho, length = dy.shape[1], dy.shape[2]
    dw[:] = 0
    zero = dw[0, 0, 0, 0]
    for i in range(ho):
        for k0 in range(0, length, DIRECT_BLOCK):
            m = min(DIRECT_BLOCK, length - k0)
            for f in range(0, nf, 4):
                g, h2, h3 = min(f + 1, nf - 1), min(f + 2, nf - 1), min(f + 3, nf - 1)   # past F: sums not added
                da, db, dc, dd = dy[f, i, k0:k0 + m], dy[g, i, k0:k0 + m], dy[h2, i, k0:k0 + m], dy[h3, i, k0:k0 + m]
                for c in range(nc):
                    for p in range(kh):
                        r = i + p - top
                        if r < 0 or r >= h:
                            continue
                        run = x[c, r, k0:]
                        x0, x1, x2 = run[:m], run[n:n + m], run[2 * n:2 * n + m]
                        a0 = a1 = a2 = b0 = b1 = b2 = c0 = c1 = c2 = d0 = d1 = d2 = zero
                        for k in range(m):
                            v0, v1, v2 = x0[k], x1[k], x2[k]
                            ga, gb, gc, gd = da[k], db[k], dc[k], dd[k]
                            a0 += ga * v0
                            a1 += ga * v1
                            a2 += ga * v2
                            b0 += gb * v0
                            b1 += gb * v1
                            b2 += gb * v2
                            c0 += gc * v0
                            c1 += gc * v1
                            c2 += gc * v2
                            d0 += gd * v0
                            d1 += gd * v1
                            d2 += gd * v2
                        dw[f, c, p, 0] += a0
                        dw[f, c, p, 1] += a1
                        dw[f, c, p, 2] += a2
                        if f + 1 < nf:
                            dw[g, c, p, 0] += b0
                            dw[g, c, p, 1] += b1
                            dw[g, c, p, 2] += b2
                        if f + 2 < nf:
                            dw[h2, c, p, 0] += c0
                            dw[h2, c, p, 1] += c1
                            dw[h2, c, p, 2] += c2
                        if f + 3 < nf:
                            dw[h3, c, p, 0] += d0
                            dw[h3, c, p, 1] += d1
                            dw[h3, c, p, 2] += d2
    return dw


@_jit_fma
def direct_kernel_grad(x, top, n, dy, dw):
    """``direct3_kernel_grad`` or ``direct5_kernel_grad``, by the kernel's width ``dw.shape[3]``."""
    if dw.shape[3] == 3:
        return direct3_kernel_grad(x, top, n, dy, dw)
    return direct5_kernel_grad(x, top, n, dy, dw)
