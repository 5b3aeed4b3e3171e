r"""Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray 2016) for stride-1 3x3 convolutions.

``Conv2D`` (conv.py) runs it for layers with many channels; this module holds the
transforms. The ``winograd_*`` functions are the NumPy reference, one whole-array
operation per term; the ``*_block`` functions are what the layer calls, and use the
compiled loops of ``compiled.py`` when numba is installed.
"""
from __future__ import annotations

import numpy as np

from . import compiled


# A 2x2 block of outputs of a 3x3 convolution from its 4x4 input tile d:
#     Y = A^T [ (G g G^T) * (B^T d B) ] A          (* element by element)
# 16 multiplications instead of 36. Over all tiles and channels the 16 products
# are 16 matrix products (F, C) @ (C, tiles*N), 2.25x fewer multiply-adds than
# im2col's, and the transformed input is 4 numbers per input pixel instead of 9.
# B and A hold only 0 and +-1 (additions); G holds 1/2, applied to the kernel only.
WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])


def _combine(mat, terms, out):
    """``out[i] = sum_j mat[i, j] * terms[j]`` for coefficients in {0, 1, -1}: one add or subtract per term."""
    for i, row in enumerate(mat):
        nz = [(c, t) for c, t in zip(row, terms) if c]
        (s0, t0), rest = nz[0], nz[1:]
        if not rest:
            (np.copyto if s0 > 0 else lambda o, t: np.negative(t, out=o))(out[i], t0)
            continue
        (s1, t1), rest = rest[0], rest[1:]
        if s0 > 0:
            (np.add if s1 > 0 else np.subtract)(t0, t1, out=out[i])
        elif s1 > 0:
            np.subtract(t1, t0, out=out[i])
        else:
            np.negative(np.add(t0, t1, out=out[i]), out=out[i])
        for c, t in rest:
            (np.add if c > 0 else np.subtract)(out[i], t, out=out[i])


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


def winograd_input(xq, tiles):
    """``V = B^T d B`` for every 4x4 tile of the padded input ``xq`` (parity split, (C, 2, 2, Ty+1, Tx+1, N)).

    Returns (16, C, Ty*Tx*N). Tile ``(ty, tx)`` starts at pixel ``(2ty, 2tx)``; tiles overlap by two pixels.
    """
    c, n = xq.shape[0], xq.shape[5]
    ty, tx = tiles
    t = np.empty((4, c, 2, ty, xq.shape[4], n), xq.dtype)
    _combine(WINOGRAD_BT, [xq[:, a % 2, :, a // 2:a // 2 + ty] for a in range(4)], t)     # B^T along the rows
    v = np.empty((4, 4, c, ty, tx, n), xq.dtype)
    for i in range(4):
        _combine(WINOGRAD_BT, [t[i][:, b % 2, :, b // 2:b // 2 + tx] for b in range(4)], v[i])   # ... the columns
    return v.reshape(16, c, ty * tx * n)                                    # a view: (tap (a, b), C, tiles and images)


def winograd_input_adjoint(dv, dxq, tiles):
    """The adjoint of ``winograd_input``: add ``B dV B^T`` of every tile onto ``dxq`` (parity split) in place."""
    c, n = dxq.shape[0], dxq.shape[5]
    ty, tx = tiles
    dv = dv.reshape(4, 4, c, ty, tx, n)
    e = np.empty_like(dv)
    _combine(WINOGRAD_BT.T, list(dv), e)                                     # B along the rows
    for a in range(4):
        for b, row in enumerate(WINOGRAD_BT.T):                              # ... then the columns, added in place
            tap = dxq[:, a % 2, b % 2, a // 2:a // 2 + ty, b // 2:b // 2 + tx]
            for coef, term in zip(row, e[a]):
                if coef:
                    (np.add if coef > 0 else np.subtract)(tap, term, out=tap)
    return dxq


def winograd_kernel(kernel):
    """``U = G g G^T`` of a (3, 3, C, F) kernel, as 16 matrices (16, F, C)."""
    u = np.einsum("ap,pqcf,bq->abcf", WINOGRAD_G, kernel, WINOGRAD_G).astype(kernel.dtype)
    return u.reshape(16, kernel.shape[2], kernel.shape[3]).transpose(0, 2, 1)


def winograd_kernel_adjoint(du):
    """The kernel gradient (3, 3, C, F) from ``dU`` (16, F, C): ``G^T dU G``."""
    f, c = du.shape[1:]
    return np.einsum("ap,abcf,bq->pqcf", WINOGRAD_G, du.transpose(0, 2, 1).reshape(4, 4, c, f), WINOGRAD_G)


def winograd_output(m, y, tiles):
    """``Y = A^T M A`` of every tile, written into ``y`` (F, 2Ty, 2Tx, N); ``m`` is (16, F, Ty*Tx*N)."""
    f, n = y.shape[0], y.shape[3]
    ty, tx = tiles
    m = m.reshape(4, 4, f, ty, tx, n)
    z = np.empty((2, 4, f, ty, tx, n), m.dtype)
    _combine(WINOGRAD_AT, list(m), z)                                        # A^T along the rows
    for i in range(2):
        _combine(WINOGRAD_AT, list(z[i]), [y[:, i::2, j::2] for j in range(2)])   # ... then the columns
    return y


def winograd_output_adjoint(dyq, tiles):
    """The adjoint of ``winograd_output``: ``dM = A dY A^T`` (16, F, Ty*Tx*N) from ``dyq`` (parity split, (F, 2, 2, Ty, Tx, N))."""
    f, n = dyq.shape[0], dyq.shape[5]
    ty, tx = tiles
    e = np.empty((4, f, 2, ty, tx, n), dyq.dtype)
    _combine(WINOGRAD_AT.T, [dyq[:, i] for i in range(2)], e)                # A along the rows
    dm = np.empty((4, 4, f, ty, tx, n), dyq.dtype)
    for a in range(4):
        _combine(WINOGRAD_AT.T, [e[a][:, j] for j in range(2)], dm[a])      # ... then the columns
    return dm.reshape(16, f, ty * tx * n)


# The layer runs the transforms block by block of tiles (rows r0:r1, columns c0:c1) through these four,
# which use the compiled loops of ``compiled.py`` when numba is installed and the NumPy functions above
# otherwise. Each takes and returns whole arrays: (16, C or F, tiles*N) for V and M, parity-split images.
def winograd_input_block(xq, r0, r1, c0, c1):
    """``V`` (16, C, tiles*N) of tiles ``r0:r1, c0:c1`` of ``xq`` (C, 2, 2, Hq, Wq, N)."""
    block = (r1 - r0, c1 - c0)
    if not compiled.enabled():
        return winograd_input(xq[:, :, :, r0:r1 + 1, c0:c1 + 1], block)    # tile rows r0:r1 read rows r0:r1+1
    v = np.empty((4, 4, xq.shape[0], *block, xq.shape[5]), xq.dtype)
    return compiled.winograd_input(xq, r0, r1, c0, c1, v).reshape(16, xq.shape[0], -1)


def winograd_output_block(m, y, r0, r1, c0, c1):
    """Write ``A^T M A`` of tiles ``r0:r1, c0:c1`` (``m``: (16, F, tiles*N)) into ``y`` (F, 2Ty, 2Tx, N)."""
    block = (r1 - r0, c1 - c0)
    if not compiled.enabled():
        return winograd_output(m, y[:, 2 * r0:2 * r1, 2 * c0:2 * c1], block)
    return compiled.winograd_output(m.reshape(4, 4, y.shape[0], *block, y.shape[3]), y, r0, r1, c0, c1)


def winograd_output_adjoint_block(dyq, r0, r1, c0, c1):
    """``dM`` (16, F, tiles*N) of tiles ``r0:r1, c0:c1`` from ``dyq`` (F, 2, 2, Ty, Tx, N)."""
    block = (r1 - r0, c1 - c0)
    if not compiled.enabled():
        return winograd_output_adjoint(dyq[:, :, :, r0:r1, c0:c1], block)
    dm = np.empty((4, 4, dyq.shape[0], *block, dyq.shape[5]), dyq.dtype)
    return compiled.winograd_output_adjoint(dyq, r0, r1, c0, c1, dm).reshape(16, dyq.shape[0], -1)


def winograd_input_adjoint_block(dv, dxq, r0, r1, c0, c1):
    """Add ``B dV B^T`` of tiles ``r0:r1, c0:c1`` (``dv``: (16, C, tiles*N)) onto ``dxq`` (C, 2, 2, Hq, Wq, N)."""
    block = (r1 - r0, c1 - c0)
    if not compiled.enabled():
        return winograd_input_adjoint(dv, dxq[:, :, :, r0:r1 + 1, c0:c1 + 1], block)
    return compiled.winograd_input_adjoint(dv.reshape(4, 4, dxq.shape[0], *block, dxq.shape[5]), dxq, r0, r1, c0, c1)
