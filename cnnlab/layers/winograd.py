r"""Winograd's minimal filtering F(2x2, 3x3) and F(2x2, 5x5) (Lavin and Gray 2016) for stride-1 convolutions.

``Conv2D`` (conv.py) runs it for layers with many channels; this module holds the
transforms. The ``winograd_*`` functions are the NumPy reference, one whole-array
operation per term; the ``*_block`` functions are what the layer calls, and use the
compiled loops of ``compiled.py`` when numba is installed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import compiled


# A 2x2 block of outputs of an r x r convolution from its n x n input tile d (n = r + 1):
#     Y = A^T [ (G g G^T) * (B^T d B) ] A          (* element by element)
# n^2 multiplications instead of 4 r^2: 16 instead of 36 for 3x3, 36 instead of 100 for 5x5. Over all
# tiles and channels the n^2 products are n^2 matrix products (F, C) @ (C, tiles*N): 2.25x (3x3) and 2.78x
# (5x5) fewer multiply-adds than im2col's, and the transformed input is n^2 / 4 numbers per input pixel
# (4 or 9) instead of r^2 (9 or 25). The matrices come from evaluating the polynomials at the points
# 0, 1, -1 (and 2, -1/2 for 5x5) and infinity. For 3x3, B and A hold only 0 and +-1; for 5x5 they hold
# halves and the float32 rounding error is larger (tests/test_conv_reference.py bounds both). The points
# 2, -1/2 gave about half the error of 2, -2 (and a denser B).
@dataclass(frozen=True)
class Transform:
    """The matrices of Winograd's F(2x2, r x r): ``bt`` = B^T (n, n), ``g`` = G (n, r), ``at`` = A^T (2, n)."""
    bt: np.ndarray
    g: np.ndarray
    at: np.ndarray

    @property
    def n(self):
        """The input tile's side, r + 1."""
        return self.bt.shape[0]

    @property
    def r(self):
        """The kernel's side."""
        return self.n - 1

    @property
    def halo(self):
        """Tile rows beyond the last tile that its input reaches (tiles start every 2 pixels): r // 2."""
        return self.n // 2 - 1


F2_3 = Transform(bt=np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float),
                 g=np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
                 at=np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float))
F2_5 = Transform(bt=np.array([[1, 1.5, -2, -1.5, 1, 0], [0, -1, -2.5, -0.5, 1, 0], [0, 1, 0.5, -2.5, 1, 0],
                              [0, -0.5, -1, 0.5, 1, 0], [0, 2, -1, -2, 1, 0], [0, 1, 1.5, -2, -1.5, 1]]),
                 g=np.array([[p ** k / f for k in range(5)] for p, f in                 # f: prod of (p - other points)
                             [(0, 1), (1, -3), (-1, 3), (2, 15), (-0.5, -15 / 16)]] + [[0, 0, 0, 0, 1]]),
                 at=np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -0.5, 1]]))
TRANSFORMS = {3: F2_3, 5: F2_5}           # by kernel size


def _combine(mat, terms, out):
    """``out[i] = sum_j mat[i, j] * terms[j]``: the first non-zero term times its coefficient, then the others added in order.

    Coefficients +-1 are additions and subtractions (the same numbers as multiplying by them, one pass fewer).
    """
    for i, row in enumerate(mat):
        nz = [(float(c), t) for c, t in zip(row, terms) if c]     # Python numbers: arithmetic in the arrays' dtype
        (c0, t0), rest = nz[0], nz[1:]
        if rest and abs(c0) == abs(rest[0][0]) == 1:              # c0 t0 + c1 t1 in one pass (and a negation)
            (c1, t1), rest = rest[0], rest[1:]
            (np.add if c1 == c0 else np.subtract)(t0, t1, out=out[i])
            if c0 < 0:
                np.negative(out[i], out=out[i])
        elif c0 == 1:
            np.copyto(out[i], t0)
        elif c0 == -1:
            np.negative(t0, out=out[i])
        else:
            np.multiply(t0, c0, out=out[i])
        for c, t in rest:
            if abs(c) == 1:
                (np.add if c > 0 else np.subtract)(out[i], t, out=out[i])
            else:
                out[i] += c * t


def winograd_tiles(ho, wo):
    """Tiles ``(Ty, Tx)`` of 2x2 outputs that cover an ``ho x wo`` output (the last ones overhang when odd)."""
    return -(-ho // 2), -(-wo // 2)


# Tiles start at even pixels, so tap a of a tile is pixel 2t + a: row a of every tile is one contiguous block
# of the image's even (a = 0, 2) or odd (a = 1, 3) rows. The transforms therefore work on the image split by
# the parity of row and column, (C, 2, 2, H/2, W/2, N): every tap a run of (W/2) N contiguous numbers instead
# of runs of N with gaps, which NumPy walks about 4x faster.
def _parity_parts(h, w, top, left):
    """Index pairs ``(into the split array, into the image)`` for the four parities of rows and columns.

    Pixel ``(r, c)`` of an (C, h, w, N) image placed ``top`` rows and ``left`` columns into a larger
    grid lands at ``[:, (r+top) % 2, (c+left) % 2, (r+top) // 2, (c+left) // 2]`` of the split array.
    """
    for pa in (0, 1):
        h0 = (pa - top) % 2                                   # first image row of this parity
        rows, i0 = slice(h0, h, 2), (h0 + top) // 2
        nh = len(range(h0, h, 2))
        for pb in (0, 1):
            w0 = (pb - left) % 2
            cols, j0 = slice(w0, w, 2), (w0 + left) // 2
            nw = len(range(w0, w, 2))
            yield (slice(None), pa, pb, slice(i0, i0 + nh), slice(j0, j0 + nw)), (slice(None), rows, cols)


def parity_split(x, top, left, hq, wq):
    """``x`` (C, H, W, N) zero-padded by ``top``, ``left`` (and up to 2 hq, 2 wq), split by parity: (C, 2, 2, hq, wq, N)."""
    q = np.zeros((x.shape[0], 2, 2, hq, wq, x.shape[3]), x.dtype)
    for dst, src in _parity_parts(x.shape[1], x.shape[2], top, left):
        q[dst] = x[src]
    return q


def parity_merge(q, top, left, h, w):
    """The adjoint of ``parity_split``: the (C, h, w, N) image read back out of ``q``."""
    x = np.empty((q.shape[0], h, w, q.shape[5]), q.dtype)
    for dst, src in _parity_parts(h, w, top, left):
        x[src] = q[dst]
    return x


def winograd_input(tf, xq, tiles):
    """``V = B^T d B`` for every n x n tile of the padded input ``xq`` (parity split, (C, 2, 2, Ty+halo, Tx+halo, N)).

    Returns (n^2, C, Ty*Tx*N). Tile ``(ty, tx)`` starts at pixel ``(2ty, 2tx)``; neighbouring tiles overlap by n - 2 pixels.
    """
    c, n, k = xq.shape[0], xq.shape[5], tf.n
    ty, tx = tiles
    t = np.empty((k, c, 2, ty, xq.shape[4], n), xq.dtype)
    _combine(tf.bt, [xq[:, a % 2, :, a // 2:a // 2 + ty] for a in range(k)], t)       # B^T along the rows
    v = np.empty((k, k, c, ty, tx, n), xq.dtype)
    for i in range(k):
        _combine(tf.bt, [t[i][:, b % 2, :, b // 2:b // 2 + tx] for b in range(k)], v[i])   # ... the columns
    return v.reshape(k * k, c, ty * tx * n)                                 # a view: (tap (a, b), C, tiles and images)


def winograd_input_adjoint(tf, dv, dxq, tiles):
    """The adjoint of ``winograd_input``: add ``B dV B^T`` of every tile onto ``dxq`` (parity split) in place."""
    c, n, k = dxq.shape[0], dxq.shape[5], tf.n
    ty, tx = tiles
    dv = dv.reshape(k, k, c, ty, tx, n)
    e = np.empty_like(dv)
    _combine(tf.bt.T, list(dv), e)                                          # B along the rows
    s = np.empty_like(e[0, 0])
    for a in range(k):
        for b, row in enumerate(tf.bt.T):                                   # ... then the columns, added in place
            _combine([row], e[a], [s])
            tap = dxq[:, a % 2, b % 2, a // 2:a // 2 + ty, b // 2:b // 2 + tx]
            tap += s
    return dxq


def winograd_kernel(tf, kernel):
    """``U = G g G^T`` of an (r, r, C, F) kernel, as n^2 matrices (n^2, F, C)."""
    r, _, c, f = kernel.shape
    gk = tf.g @ kernel.reshape(r, r * c * f)                                # G along the rows: (n, r C F), in float64
    u = (tf.g @ gk.reshape(tf.n, r, c * f)).astype(kernel.dtype)           # ... then the columns: (n, n, C F)
    return u.reshape(tf.n ** 2, c, f).transpose(0, 2, 1)


def winograd_kernel_adjoint(tf, du):
    """The kernel gradient (r, r, C, F) from ``dU`` (n^2, F, C): ``G^T dU G``."""
    f, c = du.shape[1:]
    r = tf.r
    d = du.transpose(0, 2, 1).reshape(tf.n, tf.n, c * f)                    # (n, n, C F)
    gd = tf.g.T @ d                                                         # G^T along the columns: (n, r, C F)
    return (tf.g.T @ gd.reshape(tf.n, r * c * f)).reshape(r, r, c, f)      # ... then the rows


def winograd_output(tf, m, y, tiles):
    """``Y = A^T M A`` of every tile, written into ``y`` (F, 2Ty, 2Tx, N); ``m`` is (n^2, F, Ty*Tx*N)."""
    f, n, k = y.shape[0], y.shape[3], tf.n
    ty, tx = tiles
    m = m.reshape(k, k, f, ty, tx, n)
    z = np.empty((2, k, f, ty, tx, n), m.dtype)
    _combine(tf.at, list(m), z)                                             # A^T along the rows
    for i in range(2):
        _combine(tf.at, list(z[i]), [y[:, i::2, j::2] for j in range(2)])   # ... then the columns
    return y


def winograd_output_adjoint(tf, dyq, tiles):
    """The adjoint of ``winograd_output``: ``dM = A dY A^T`` (n^2, F, Ty*Tx*N) from ``dyq`` (parity split, (F, 2, 2, Ty, Tx, N))."""
    f, n, k = dyq.shape[0], dyq.shape[5], tf.n
    ty, tx = tiles
    e = np.empty((k, f, 2, ty, tx, n), dyq.dtype)
    _combine(tf.at.T, [dyq[:, i] for i in range(2)], e)                     # A along the rows
    dm = np.empty((k, k, f, ty, tx, n), dyq.dtype)
    for a in range(k):
        _combine(tf.at.T, [e[a][:, j] for j in range(2)], dm[a])           # ... then the columns
    return dm.reshape(k * k, f, ty * tx * n)


# The layer runs the transforms block by block of tiles (rows r0:r1, columns c0:c1) through these four,
# which use the compiled loops of ``compiled.py`` when numba is installed and the NumPy functions above
# otherwise. Each takes and returns whole arrays: (n^2, C or F, tiles*N) for V and M, parity-split images.
def winograd_input_block(tf, xq, r0, r1, c0, c1):
    """``V`` (n^2, C, tiles*N) of tiles ``r0:r1, c0:c1`` of ``xq`` (C, 2, 2, Hq, Wq, N)."""
    block, k = (r1 - r0, c1 - c0), tf.n
    if not compiled.enabled():                                              # tile rows r0:r1 read rows r0:r1+halo
        return winograd_input(tf, xq[:, :, :, r0:r1 + tf.halo, c0:c1 + tf.halo], block)
    v = np.empty((k, k, xq.shape[0], *block, xq.shape[5]), xq.dtype)
    return compiled.WINOGRAD[tf.r][0](xq, r0, r1, c0, c1, v).reshape(k * k, xq.shape[0], -1)


def winograd_output_block(tf, m, y, r0, r1, c0, c1, bias=None, relu=False):
    """Write ``A^T M A`` of tiles ``r0:r1, c0:c1`` (``m``: (n^2, F, tiles*N)) into ``y`` (F, 2Ty, 2Tx, N).

    With a ``bias`` (F,), add it to each filter's outputs, then ``max(., 0)`` where ``relu``.
    """
    block, k = (r1 - r0, c1 - c0), tf.n
    if not compiled.enabled():
        out = winograd_output(tf, m, y[:, 2 * r0:2 * r1, 2 * c0:2 * c1], block)
        if bias is not None:
            out += bias[:, None, None, None]
            if relu:
                np.maximum(out, 0, out=out)
        return y
    bias = np.zeros(0, y.dtype) if bias is None else bias
    return compiled.WINOGRAD[tf.r][1](m.reshape(k, k, y.shape[0], *block, y.shape[3]), y, r0, r1, c0, c1, bias, relu)


def winograd_output_adjoint_block(tf, dyq, r0, r1, c0, c1):
    """``dM`` (n^2, F, tiles*N) of tiles ``r0:r1, c0:c1`` from ``dyq`` (F, 2, 2, Ty, Tx, N)."""
    block, k = (r1 - r0, c1 - c0), tf.n
    if not compiled.enabled():
        return winograd_output_adjoint(tf, dyq[:, :, :, r0:r1, c0:c1], block)
    dm = np.empty((k, k, dyq.shape[0], *block, dyq.shape[5]), dyq.dtype)
    return compiled.WINOGRAD[tf.r][2](dyq, r0, r1, c0, c1, dm).reshape(k * k, dyq.shape[0], -1)


def winograd_input_adjoint_block(tf, dv, dxq, r0, r1, c0, c1):
    """Add ``B dV B^T`` of tiles ``r0:r1, c0:c1`` (``dv``: (n^2, C, tiles*N)) onto ``dxq`` (C, 2, 2, Hq, Wq, N)."""
    block, k = (r1 - r0, c1 - c0), tf.n
    if not compiled.enabled():
        return winograd_input_adjoint(tf, dv, dxq[:, :, :, r0:r1 + tf.halo, c0:c1 + tf.halo], block)
    return compiled.WINOGRAD[tf.r][3](dv.reshape(k, k, dxq.shape[0], *block, dxq.shape[5]), dxq, r0, r1, c0, c1)
