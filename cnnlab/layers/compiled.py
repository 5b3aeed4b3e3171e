"""Compiled loops for the passes where NumPy walks through memory too many times (optional).

Winograd's transforms (``cnnlab/layers/conv.py``) are sums of a few terms for
every tile. NumPy computes them as whole-array additions, one pass over the
block of tiles per term; the loops below compute all terms of a tile while its
numbers are still in cache. On the benchmark machine (one core, 32 images, 32
channels on 32x32 maps) the input transform took 3.9 ms in NumPy and 2.0 ms
here.

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


# Winograd F(2x2, 3x3). The coefficients are those of conv.py's WINOGRAD_BT and WINOGRAD_AT, one row per
# line, and the terms are added in the order conv.py's NumPy code adds them, so the forward transforms
# agree with it to the last bit. Tap a of tile t is pixel 2t + a: in the parity-split array
# (C, 2, 2, Hq, Wq, N), row parity a % 2 at row t + a // 2 (and the same for columns).

@_jit
def winograd_input(xq, r0, r1, c0, c1, v):
    """``V = B^T d B`` for tiles ``r0:r1, c0:c1`` of ``xq`` (C, 2, 2, Hq, Wq, N) into ``v`` (4, 4, C, r1-r0, c1-c0, N)."""
    n = xq.shape[5]
    t = np.empty((4, 4, n), xq.dtype)                                       # one tile after B^T along the rows
    for c in range(xq.shape[0]):
        for i in range(r1 - r0):
            for j in range(c1 - c0):
                for b in range(4):                                         # B^T along the rows, column b of the tile
                    x0 = xq[c, 0, b % 2, r0 + i, c0 + j + b // 2]
                    x1 = xq[c, 1, b % 2, r0 + i, c0 + j + b // 2]
                    x2 = xq[c, 0, b % 2, r0 + i + 1, c0 + j + b // 2]
                    x3 = xq[c, 1, b % 2, r0 + i + 1, c0 + j + b // 2]
                    t0, t1, t2, t3 = t[0, b], t[1, b], t[2, b], t[3, b]
                    for k in range(n):
                        t0[k] = x0[k] - x2[k]
                        t1[k] = x1[k] + x2[k]
                        t2[k] = x2[k] - x1[k]
                        t3[k] = x1[k] - x3[k]
                for a in range(4):                                         # ... then along the columns
                    s0, s1, s2, s3 = t[a, 0], t[a, 1], t[a, 2], t[a, 3]
                    o0, o1, o2, o3 = v[a, 0, c, i, j], v[a, 1, c, i, j], v[a, 2, c, i, j], v[a, 3, c, i, j]
                    for k in range(n):
                        o0[k] = s0[k] - s2[k]
                        o1[k] = s1[k] + s2[k]
                        o2[k] = s2[k] - s1[k]
                        o3[k] = s1[k] - s3[k]
    return v


@_jit
def winograd_output(m, y, r0, r1, c0, c1):
    """``Y = A^T M A`` of tiles ``r0:r1, c0:c1``: ``m`` (4, 4, F, r1-r0, c1-c0, N) into ``y`` (F, 2 Ty, 2 Tx, N)."""
    n = m.shape[5]
    z = np.empty((2, 4, n), m.dtype)                                        # one tile after A^T along the rows
    for f in range(m.shape[2]):
        for i in range(r1 - r0):
            for j in range(c1 - c0):
                for b in range(4):
                    m0, m1, m2, m3 = m[0, b, f, i, j], m[1, b, f, i, j], m[2, b, f, i, j], m[3, b, f, i, j]
                    z0, z1 = z[0, b], z[1, b]
                    for k in range(n):
                        z0[k] = m0[k] + m1[k] + m2[k]
                        z1[k] = m1[k] - m2[k] - m3[k]
                for a in range(2):                                         # ... then along the columns
                    s0, s1, s2, s3 = z[a, 0], z[a, 1], z[a, 2], z[a, 3]
                    y0 = y[f, 2 * (r0 + i) + a, 2 * (c0 + j)]
                    y1 = y[f, 2 * (r0 + i) + a, 2 * (c0 + j) + 1]
                    for k in range(n):
                        y0[k] = s0[k] + s1[k] + s2[k]
                        y1[k] = s1[k] - s2[k] - s3[k]
    return y


@_jit
def winograd_output_adjoint(dyq, r0, r1, c0, c1, dm):
    """``dM = A dY A^T`` of tiles ``r0:r1, c0:c1``: ``dyq`` (F, 2, 2, Ty, Tx, N) parity split into ``dm`` (4, 4, F, r1-r0, c1-c0, N)."""
    n = dyq.shape[5]
    e = np.empty((4, 2, n), dyq.dtype)                                      # one tile after A along the rows
    for f in range(dyq.shape[0]):
        for i in range(r1 - r0):
            for j in range(c1 - c0):
                for q in range(2):
                    d0, d1 = dyq[f, 0, q, r0 + i, c0 + j], dyq[f, 1, q, r0 + i, c0 + j]
                    e0, e1, e2, e3 = e[0, q], e[1, q], e[2, q], e[3, q]
                    for k in range(n):
                        e0[k] = d0[k]
                        e1[k] = d0[k] + d1[k]
                        e2[k] = d0[k] - d1[k]
                        e3[k] = -d1[k]
                for a in range(4):                                         # ... then along the columns
                    s0, s1 = e[a, 0], e[a, 1]
                    o0, o1, o2, o3 = dm[a, 0, f, i, j], dm[a, 1, f, i, j], dm[a, 2, f, i, j], dm[a, 3, f, i, j]
                    for k in range(n):
                        o0[k] = s0[k]
                        o1[k] = s0[k] + s1[k]
                        o2[k] = s0[k] - s1[k]
                        o3[k] = -s1[k]
    return dm


@_jit
def winograd_input_adjoint(dv, dxq, r0, r1, c0, c1):
    """Add ``B dV B^T`` of tiles ``r0:r1, c0:c1`` onto ``dxq`` (C, 2, 2, Hq, Wq, N) in place; ``dv`` (4, 4, C, r1-r0, c1-c0, N).

    Neighbouring tiles share pixels: the sums reach a pixel in another order than
    conv.py's, so the two agree to rounding, not to the last bit.
    """
    n = dxq.shape[5]
    e = np.empty((4, 4, n), dxq.dtype)                                      # one tile after B along the rows
    for c in range(dxq.shape[0]):
        for i in range(r1 - r0):
            for j in range(c1 - c0):
                for b in range(4):
                    v0, v1, v2, v3 = dv[0, b, c, i, j], dv[1, b, c, i, j], dv[2, b, c, i, j], dv[3, b, c, i, j]
                    e0, e1, e2, e3 = e[0, b], e[1, b], e[2, b], e[3, b]
                    for k in range(n):
                        e0[k] = v0[k]
                        e1[k] = v1[k] - v2[k] + v3[k]
                        e2[k] = v1[k] - v0[k] + v2[k]
                        e3[k] = -v3[k]
                for a in range(4):                                         # ... then along the columns, added in place
                    s0, s1, s2, s3 = e[a, 0], e[a, 1], e[a, 2], e[a, 3]
                    row = r0 + i + a // 2
                    p0 = dxq[c, a % 2, 0, row, c0 + j]                      # taps b = 0, 1, 2, 3 of this row
                    p1 = dxq[c, a % 2, 1, row, c0 + j]
                    p2 = dxq[c, a % 2, 0, row, c0 + j + 1]
                    p3 = dxq[c, a % 2, 1, row, c0 + j + 1]
                    for k in range(n):
                        p0[k] += s0[k]
                        p1[k] += s1[k] - s2[k] + s3[k]
                        p2[k] += s1[k] - s0[k] + s2[k]
                        p3[k] -= s3[k]
    return dxq


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
def batchnorm_relu(x, mean, scale, shift, y):
    """``y = max((x - mean) * scale + shift, 0)`` row by row; ``mean``, ``scale``, ``shift`` in ``x``'s dtype."""
    for i in range(x.shape[0]):
        row, out, mu, s, b = x[i], y[i], mean[i], scale[i], shift[i]
        for k in range(x.shape[1]):
            z = (row[k] - mu) * s + b
            out[k] = z if z > 0 else 0
    return y


@(numba.njit(cache=True, nogil=True, fastmath={"reassoc"}) if numba is not None else (lambda f: f))
def batchnorm_relu_sums(x, dy, mean, scale, shift):
    """Per row: ``sum(g)`` and ``sum(g (x - mean))``, where ``g = dy`` where the output was positive, else 0."""
    c, m = x.shape
    sum_g, sum_gxm = np.zeros(c), np.zeros(c)
    for i in range(c):
        row, d, mu, s, b = x[i], dy[i], mean[i], scale[i], shift[i]
        s1 = 0.0
        s2 = 0.0
        for k in range(m):
            xm = row[k] - mu
            if xm * s + b > 0:
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
