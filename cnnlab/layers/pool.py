"""Sub-sampling: shrink feature maps by taking a subset, the average or the max of each window.

All window layers share one mechanism: for each of the ``kh * kw`` taps of the
window, ``window_slice`` gives a strided view of the input holding that tap for
every output position. Max pooling keeps a running maximum and remembers which
tap won (ties go to the first tap, as in PyTorch); average pooling sums the
taps. The backward passes add the output gradient back through the same views.
Like the convolution, the pools compute on the (C, H, W, N) array behind
the batch (``to_chwn``), where every tap's view is made of runs of ``N``
contiguous numbers; ``H`` and ``W`` are axes 1 and 2 in both layouts.

Output size: ``H_out = floor((H + pad - pool_h) / s_h) + 1``; ``padding="same"``
gives ``ceil(H / s)``. Strides default to the pool size (non-overlapping windows).
"""
from __future__ import annotations

import functools

import numpy as np

from . import compiled
from ..checks import check_pair
from .base import Layer
from .geometry import from_chwn, pad_hw, to_chwn, validate_padding, window_geometry, window_slice


class Pool2D(Layer):
    """Base of the window poolings (max, average): ``pool_size``, ``strides`` and ``padding`` as a convolution's."""

    any_spatial_size = True
    reduction = None                        # what a window becomes: "max" or "mean" (a fused step asks, see
                                            # Conv2D.pools_while_writing)

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None):
        super().__init__(name)
        kind = type(self).__name__
        self.pool_size = check_pair("pool_size", pool_size, kind)
        self.strides = self.pool_size if strides is None else check_pair("strides", strides, kind)
        self.padding = validate_padding(padding, kind)
        if isinstance(self.padding, tuple) and any(p > k // 2 for p, k in zip(self.padding, self.pool_size)):
            raise ValueError(f"{kind}: padding must be at most half the pool size {self.pool_size}, received {padding!r}")

    def compute_output_shape(self, input_shape):
        self.require_image(input_shape)
        h, w, c = input_shape
        _, (ho, wo) = self._geometry_of((h, w))
        return (ho, wo, c)

    def _geometry_of(self, hw):
        """``(pads, (H_out, W_out))`` on an input of ``hw = (H, W)`` (``geometry.window_geometry``)."""
        return window_geometry(hw, self.pool_size, self.strides, self.padding, (1, 1), self.label)

    def _geometry(self, x):
        return self._geometry_of(x.shape[1:3])

    def tiles(self, hw) -> bool:
        """Whether the windows tile an input of ``hw = (H, W)``: strides equal to the window and no padding, so
        each input pixel lies in exactly one window (or in the rows and columns left over at the end)."""
        return tuple(self.strides) == tuple(self.pool_size) and not any(self._geometry_of(hw)[0])

    def _taps(self, out_hw):
        """Yield ``(tap_index, slice)`` for every tap of the window."""
        kh, kw = self.pool_size
        for p in range(kh):
            for q in range(kw):
                yield p * kw + q, window_slice(p, q, out_hw, self.strides, (1, 1))

    def get_config(self):
        return {"pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding)}


class MaxPool2D(Pool2D):
    """Max over each ``pool_size`` window: keeps the strongest response of a feature.

    The max of a rectangle is the max over its rows of the max within each
    row, so the window is reduced in two cheap passes: first across the
    ``kw`` columns, then across the ``kh`` rows. Backward routes each output
    gradient to the first row holding the maximum, then within that row to
    the first column holding it: the first maximum in row-major order, as in
    PyTorch. With the compiled loops (``compiled.py``, numba) both passes are
    one loop over the windows, which keeps only the winning tap of each window.
    """

    reduction = "max"

    def forward(self, x, training=False):
        x = self._prepare(x)
        pads, (ho, wo) = self._geometry(x)
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        if compiled.enabled() and kh * kw <= 255:                             # one pass (compiled.py)
            xc = to_chwn(x)                                                   # (C, H, W, N)
            y = np.empty((xc.shape[0], ho, wo, xc.shape[3]), self.dtype)
            tap = np.empty(y.shape, np.uint8)                                 # which tap of each window won
            compiled.max_pool(xc, kh, kw, sh, sw, pads[0], pads[2], y, tap)
            self._cache = ("compiled", xc.shape, tap, pads)
            return from_chwn(y)
        xp = pad_hw(to_chwn(x), pads, value=-np.inf)                          # (C, Hp, Wp, N)
        cols = [xp[:, :, q:q + sw * (wo - 1) + 1:sw] for q in range(kw)]      # tap q of every window: (C, Hp, Wo, N)
        row_max = functools.reduce(np.maximum, cols)
        rows = [row_max[:, p:p + sh * (ho - 1) + 1:sh] for p in range(kh)]   # row p of every window: (C, Ho, Wo, N)
        y = functools.reduce(np.maximum, rows)
        self._cache = ("numpy", xp, row_max, y, pads)
        return from_chwn(y)

    def backward(self, dy):
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        if self._cache[0] == "compiled":
            _, shape, tap, pads = self._cache
            dx = np.zeros(shape, self.dtype)
            compiled.max_pool_backward(to_chwn(np.asarray(dy, dtype=self.dtype)), tap, kh, kw, sh, sw, pads[0], pads[2], dx)
            return from_chwn(dx)
        _, xp, row_max, y, pads = self._cache
        ho, wo = y.shape[1:3]
        dy = to_chwn(np.asarray(dy, dtype=self.dtype))
        d_row_max = _route_to_first_max(dy, [row_max[:, p:p + sh * (ho - 1) + 1:sh] for p in range(kh)], y,
                                        row_max.shape, lambda p: np.s_[:, p:p + sh * (ho - 1) + 1:sh],
                                        tiles=kh == sh and kh * ho == row_max.shape[1])
        dxp = _route_to_first_max(d_row_max, [xp[:, :, q:q + sw * (wo - 1) + 1:sw] for q in range(kw)], row_max,
                                  xp.shape, lambda q: np.s_[:, :, q:q + sw * (wo - 1) + 1:sw],
                                  tiles=kw == sw and kw * wo == xp.shape[2])
        t, b, l, r = pads
        return from_chwn(dxp[:, t:xp.shape[1] - b, l:xp.shape[2] - r])


def _route_to_first_max(dy, taps, best, shape, where, tiles):
    """Send ``dy`` to the first of ``taps`` that equals ``best``; return the gradient of shape ``shape``.

    ``tiles``: the taps cover the result exactly once (windows side by side,
    nothing left over), so each share is written straight into its place
    instead of being added onto zeros.
    """
    dx = np.empty(shape, dy.dtype) if tiles else np.zeros(shape, dy.dtype)
    remaining = dy
    for k, tap in enumerate(taps):
        if k == len(taps) - 1:                         # whatever is left belongs to the last tap
            if tiles:
                dx[where(k)] = remaining
            else:
                dx[where(k)] += remaining
            break
        if tiles:
            share = np.multiply(remaining, tap == best, out=dx[where(k)])   # the gradient this tap wins
        else:
            share = remaining * (tap == best)
            dx[where(k)] += share
        remaining = remaining - share                  # later taps only get what is left (ties go first)
    return dx


class AvgPool2D(Pool2D):
    """Mean over each window. Padded pixels are not counted (Keras ``"same"`` semantics)."""

    reduction = "mean"

    def forward(self, x, training=False):
        x = self._prepare(x)
        pads, out_hw = self._geometry(x)
        xp = pad_hw(to_chwn(x), pads)                                         # (C, Hp, Wp, N)
        y = np.zeros((x.shape[3],) + out_hw + (x.shape[0],), self.dtype)
        for _, sl in self._taps(out_hw):
            y += xp[sl]
        # How many real (unpadded) pixels each window covers: pool a map of ones.
        ones = pad_hw(np.ones((1,) + x.shape[1:3] + (1,), self.dtype), pads)
        count = sum(ones[sl] for _, sl in self._taps(out_hw))
        y /= count
        self._cache = (count, xp.shape, pads, out_hw)
        return from_chwn(y)

    def backward(self, dy):
        count, padded_shape, pads, out_hw = self._cache
        share = to_chwn(np.asarray(dy, dtype=self.dtype)) / count            # each pixel of a window gets an equal share
        dxp = np.zeros(padded_shape, self.dtype)
        for _, sl in self._taps(out_hw):
            dxp[sl] += share
        t, b, l, r = pads
        return from_chwn(dxp[:, t:padded_shape[1] - b, l:padded_shape[2] - r])


class Subsample(Layer):
    """Keep every ``stride``-th pixel along H and W: sub-sampling as a subset of the pixels."""

    any_spatial_size = True

    def __init__(self, stride=2, name=None):
        super().__init__(name)
        self.stride = check_pair("stride", stride, "Subsample")

    def compute_output_shape(self, input_shape):
        self.require_image(input_shape)
        h, w, c = input_shape
        return (-(-h // self.stride[0]), -(-w // self.stride[1]), c)

    def forward(self, x, training=False):
        x = self._prepare(x)
        self._shape = x.shape
        return x[:, ::self.stride[0], ::self.stride[1]].copy()

    def backward(self, dy):
        dx = np.zeros(self._shape, self.dtype)
        dx[:, ::self.stride[0], ::self.stride[1]] = dy
        return dx

    def get_config(self):
        return {"stride": list(self.stride)}


class GlobalAvgPool2D(Layer):
    """Average each feature map to one number: (N, H, W, C) -> (N, C)."""

    any_spatial_size = True

    def compute_output_shape(self, input_shape):
        self.require_image(input_shape)
        return (input_shape[2],)

    def forward(self, x, training=False):
        x = self._prepare(x)
        self._shape = x.shape
        return x.mean(axis=(1, 2))

    def backward(self, dy):
        n, h, w, c = self._shape
        return np.broadcast_to((dy / (h * w))[:, None, None, :], self._shape).astype(self.dtype)

