r"""Locally connected layer: a convolution whose weights are *not* shared.

``LocallyConnected2D`` has exactly the connectivity of ``Conv2D`` -- output
pixel ``(i, j)`` only sees the ``kh x kw x C`` patch under it -- but every
output position has its own weights. For input ``x`` of shape ``(N, H, W, C)``::

    y[n, i, j, f] = b[i, j, f] + sum_k patch(x, i, j)[n, k] * w[i, j, k, f]

with ``patch(x, i, j)`` the flattened ``(p, q, c)`` window of the padded input
(the same ordering as a ``Conv2D`` kernel's first three axes), kernel of shape
``(H_out, W_out, kh*kw*C, F)`` and bias ``(H_out, W_out, F)``. A ``Conv2D`` is
the special case where all ``H_out * W_out`` copies are tied together, so the
layer has ``H_out * W_out`` times as many weights for the same computation.
Comparing the two isolates what weight sharing buys.

Forward: im2col (from ``conv.py``) gives every patch; grouping the patches by position
``l = i * W_out + j`` turns the layer into ``H_out * W_out`` small matrix
products, done as one batched ``matmul``: ``(L, N, K) @ (L, K, F)``.
Backward: ``dW_l = cols_l^T @ dy_l`` and ``dcols_l = dy_l @ W_l^T``, the
latter added back onto the pixels each patch came from (``conv.col2im``).
"""
from __future__ import annotations

import numpy as np

from .. import initializers
from ..checks import check_pair, check_positive_int
from .base import Layer
from .conv import col2im, im2col
from .geometry import from_chwn, pad_hw, resolve_padding, to_chwn, validate_padding, window_geometry


class LocallyConnected2D(Layer):
    """2-D locally connected layer: ``Conv2D`` connectivity with a separate weight set per output position.

    Args:
        filters: number of output feature maps ``F``.
        kernel_size: ``k`` or ``(kh, kw)``.
        strides: ``s`` or ``(sh, sw)``.
        padding: ``"valid"``, ``"same"``, ``p`` or ``(ph, pw)`` (as ``Conv2D``).
        dilation: ``d`` or ``(dh, dw)``.
        use_bias: add a learned bias per output position and filter.
        kernel_initializer: ``"he_uniform"`` (default), ``"glorot_uniform"``, ...

    Shapes: input ``(N, H, W, C)`` (fixed H and W: the weights belong to positions),
    kernel ``(H_out, W_out, kh*kw*C, F)``, bias ``(H_out, W_out, F)``,
    output ``(N, H_out, W_out, F)``.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation=1, use_bias=True,
                 kernel_initializer="he_uniform", name=None):
        super().__init__(name)
        kind = "LocallyConnected2D"
        self.filters = check_positive_int("filters", filters, kind)
        self.kernel_size = check_pair("kernel_size", kernel_size, kind)
        self.strides = check_pair("strides", strides, kind)
        self.dilation = check_pair("dilation", dilation, kind)
        self.padding = validate_padding(padding, kind)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)

    def _pads(self, hw):
        return resolve_padding(self.padding, hw, self.kernel_size, self.strides, self.dilation, self.label)

    def compute_output_shape(self, input_shape):
        self.require_image(input_shape)
        h, w, _ = input_shape
        _, (ho, wo) = window_geometry((h, w), self.kernel_size, self.strides, self.padding, self.dilation, self.label)
        return (ho, wo, self.filters)

    def param_shapes(self, input_shape):
        kh, kw = self.kernel_size
        ho, wo, f = self.compute_output_shape(input_shape)
        shape = {"kernel": (ho, wo, kh * kw * input_shape[2], f)}
        return {**shape, "bias": (ho, wo, f)} if self.use_bias else shape

    def build_params(self, input_shape):
        shapes = self.param_shapes(input_shape)
        ho, wo, k, f = shapes["kernel"]
        kh, kw = self.kernel_size
        self.params["kernel"] = self.kernel_initializer(shapes["kernel"], k, kh * kw * f, self.rng).astype(self.dtype)
        if self.use_bias:
            self.params["bias"] = np.zeros(shapes["bias"], self.dtype)

    def forward(self, x, training=False):
        x = self._prepare(x)
        n = x.shape[0]
        ho, wo, f = self.output_shape
        pads = self._pads(x.shape[1:3])
        xp = pad_hw(to_chwn(x), pads)                                             # (C, Hp, Wp, N)
        kh, kw = self.kernel_size
        c, L = xp.shape[0], ho * wo
        cols = im2col(xp, self.kernel_size, (ho, wo), self.strides, self.dilation)   # (C*kh*kw, L*N), rows (c, p, q)
        # -> (L, N, K) with K in the kernel's (p, q, c) order: one copy, patches grouped by position
        cols_l = np.ascontiguousarray(cols.reshape(c, kh, kw, L, n).transpose(3, 4, 1, 2, 0)).reshape(L, n, -1)
        k = cols_l.shape[2]
        y = np.matmul(cols_l, self.params["kernel"].reshape(ho * wo, k, f))      # (L, N, F)
        y = y.transpose(1, 0, 2).reshape(n, ho, wo, f)
        if self.use_bias:
            y = y + self.params["bias"]
        self._cache = (cols_l, xp.shape, pads)
        return np.ascontiguousarray(y)

    def backward(self, dy):
        cols_l, padded_shape, pads = self._cache                                  # padded_shape: (C, Hp, Wp, N)
        n = padded_shape[3]
        ho, wo, f = self.output_shape
        k = cols_l.shape[2]
        dy = np.asarray(dy, dtype=self.dtype)
        dy_l = dy.reshape(n, ho * wo, f).transpose(1, 0, 2)                       # (L, N, F)
        self.grads["kernel"][...] = np.matmul(cols_l.transpose(0, 2, 1), dy_l).reshape(ho, wo, k, f)
        if self.use_bias:
            self.grads["bias"][...] = dy.sum(axis=0)
        if not self.needs_input_grad:
            return None
        w_l = self.params["kernel"].reshape(ho * wo, k, f)
        dcols = np.matmul(dy_l, w_l.transpose(0, 2, 1))                           # (L, N, K), K in (p, q, c) order
        kh, kw = self.kernel_size
        c = padded_shape[0]
        dcols = dcols.reshape(ho * wo, n, kh, kw, c).transpose(4, 2, 3, 0, 1).reshape(c * kh * kw, -1)  # im2col's layout
        dxp = col2im(dcols, np.zeros(padded_shape, self.dtype), self.kernel_size, (ho, wo), self.strides,
                     self.dilation)
        t, b, l, r = pads
        return from_chwn(dxp[:, t:padded_shape[1] - b, l:padded_shape[2] - r])

    def macs(self):
        ho, wo, f = self.output_shape
        kh, kw = self.kernel_size
        return ho * wo * f * kh * kw * self.input_shape[2]

    def get_config(self):
        return {"filters": self.filters, "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "dilation": list(self.dilation), "use_bias": self.use_bias,
                "kernel_initializer": self.kernel_initializer.name}


def untie(conv, input_shape=None) -> LocallyConnected2D:
    """A ``LocallyConnected2D`` computing exactly what the (ungrouped) ``Conv2D`` ``conv`` computes.

    Every position receives its own copy of the shared kernel and bias, so
    the outputs are equal; training the copy then lets them drift apart.
    """
    if getattr(conv, "groups", 1) != 1:
        raise ValueError(f"untie: {conv.label} has groups={conv.groups}; only ungrouped convolutions can be untied")
    shape = input_shape if input_shape is not None else conv.input_shape
    if shape is None:
        raise ValueError(f"untie: {conv.label} is not built; pass input_shape=(H, W, C)")
    local = LocallyConnected2D(conv.filters, conv.kernel_size, conv.strides, conv.padding, conv.dilation,
                               use_bias=conv.use_bias, name=None)
    local.build(shape, dtype=conv.dtype)
    ho, wo, f = local.output_shape
    local.params["kernel"][...] = conv.params["kernel"].reshape(1, 1, -1, f)
    if conv.use_bias:
        local.params["bias"][...] = conv.params["bias"]
    return local
