r"""2-D convolution: one small neuron replicated over every position of the image.

A convolution layer is a single hidden neuron with a ``kh x kw x C`` weight
patch (plus a bias) that looks at every patch of the input; all the copies
share the same weights. Each of the ``filters`` neurons produces one *feature
map*. For input ``x`` of shape ``(N, H, W, C)`` and kernel ``w`` of shape
``(kh, kw, C // groups, F)``::

    y[n, i, j, f] = b[f] + sum_{p, q, c} x_pad[n, i*s_h + p*d_h, j*s_w + q*d_w, g(f)*C_g + c] * w[p, q, c, f]

with strides ``s``, dilation ``d`` and ``g(f) = f // (F // groups)`` the group
of filter ``f``. The output size along each axis is::

    H_out = floor((H + pad_top + pad_bottom - d_h * (kh - 1) - 1) / s_h) + 1

Fast path (``Conv2D``): copy every patch into one row of a matrix (im2col),
then a single matrix product with the shared weights does all positions and
all filters at once. The backward pass is two more products: ``dW = cols^T @ dy``
and ``dcols = dy @ W^T``, whose rows are added back onto the pixels they came
from (col2im). ``conv2d_naive`` is the same formula as plain loops; it
stays here as the readable reference the fast path is tested against.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import initializers
from .base import Layer, check_pair, check_positive_int


# ---------------------------------------------------------------------------
# Geometry shared by convolution and pooling
# ---------------------------------------------------------------------------
def resolve_padding(padding, size, kernel, strides, dilation, layer="Conv2D"):
    """Return ``(top, bottom, left, right)`` for ``"valid"``, ``"same"``, ``p`` or ``(ph, pw)``.

    ``"same"`` follows Keras/TensorFlow: the output has ``ceil(H / s)`` rows,
    and an odd amount of total padding puts the extra row at the bottom.
    """
    (h, w), (kh, kw), (sh, sw), (dh, dw) = size, kernel, strides, dilation
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        pads = []
        for n, k, s, d in ((h, kh, sh, dh), (w, kw, sw, dw)):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    ph, pw = validate_padding(padding, layer)
    return (ph, ph, pw, pw)


def validate_padding(padding, layer):
    """Check a padding argument at construction; return ``(ph, pw)`` for explicit padding."""
    if padding in ("valid", "same"):
        return padding
    vals = padding if isinstance(padding, (tuple, list)) else (padding, padding)
    if len(vals) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in vals):
        raise ValueError(
            f"{layer}: padding must be 'valid', 'same', a non-negative int or a pair (ph, pw), received {padding!r}"
        )
    return (int(vals[0]), int(vals[1]))


def output_size(n, k, s, pad_total, d, layer, axis):
    """``floor((n + pad_total - d*(k-1) - 1) / s) + 1``, with a clear error when the kernel does not fit."""
    span = d * (k - 1) + 1
    if n + pad_total < span:
        raise ValueError(
            f"{layer}: kernel spans {span} pixels along {axis} but the padded input has only "
            f"{n + pad_total} (input {n} + padding {pad_total})"
        )
    return (n + pad_total - span) // s + 1


def pad_hw(x, pads, value=0.0):
    """Pad the H and W axes of (N, H, W, C) by ``(top, bottom, left, right)``."""
    t, b, l, r = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def window_slice(i, j, out_hw, strides, dilation):
    """Index of the input pixels that kernel tap ``(i, j)`` touches for every output position."""
    (ho, wo), (sh, sw), (dh, dw) = out_hw, strides, dilation
    return (slice(None), slice(i * dh, i * dh + sh * (ho - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (wo - 1) + 1, sw))


# ---------------------------------------------------------------------------
# The readable reference
# ---------------------------------------------------------------------------
def conv2d_naive(x, kernel, bias=None, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Convolution as loops over output pixels, filters and taps: the formula, verbatim."""
    n, h, w, c = x.shape
    kh, kw, cg, f = kernel.shape
    fg = f // groups
    xp = pad_hw(x, pads)
    ho = (h + pads[0] + pads[1] - dilation[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (w + pads[2] + pads[3] - dilation[1] * (kw - 1) - 1) // strides[1] + 1
    y = np.zeros((n, ho, wo, f), dtype=np.result_type(x, kernel))
    for i in range(ho):
        for j in range(wo):
            for o in range(f):
                g = o // fg
                acc = np.zeros(n, dtype=y.dtype)
                for p in range(kh):
                    for q in range(kw):
                        pixel = xp[:, i * strides[0] + p * dilation[0], j * strides[1] + q * dilation[1],
                                   g * cg:(g + 1) * cg]
                        acc += pixel @ kernel[p, q, :, o]
                y[:, i, j, o] = acc + (bias[o] if bias is not None else 0)
    return y


# ---------------------------------------------------------------------------
# im2col / col2im: every patch becomes one row of a matrix
# ---------------------------------------------------------------------------
def im2col(xp, kernel_hw, out_hw, strides, dilation, groups):
    """Patches of padded ``xp`` (N, Hp, Wp, C) as a matrix of shape (groups, N*Ho*Wo, kh*kw*C_g).

    Row ``m`` holds the patch under output pixel ``m``; columns run over
    ``(p, q, c)`` in the same order as the kernel's first three axes, so
    ``cols @ kernel.reshape(-1, F)`` is the convolution.
    """
    n, _, _, c = xp.shape
    (kh, kw), (ho, wo), (sh, sw), (dh, dw) = kernel_hw, out_hw, strides, dilation
    cg = c // groups
    m, k = n * ho * wo, kh * kw * cg
    s_n, s_h, s_w, s_c = xp.strides
    if groups == 1 and c == 1:
        # One input channel: fill the transposed matrix (K, M) tap by tap, each tap's image a
        # contiguous block (fast to copy), and hand back its (M, K) transpose view.
        taps = as_strided(xp, shape=(kh, kw, n, ho, wo), strides=(dh * s_h, dw * s_w, s_n, sh * s_h, sw * s_w),
                          writeable=False)
        return np.ascontiguousarray(taps).reshape(k, m).T[None]
    # General case: a strided view (g, N, Ho, Wo, kh, kw, C_g) of the patches, copied once.
    view = as_strided(xp, shape=(groups, n, ho, wo, kh, kw, cg),
                      strides=(cg * s_c, s_n, sh * s_h, sw * s_w, dh * s_h, dw * s_w, s_c), writeable=False)
    buf = np.ascontiguousarray(view)
    return buf.reshape(groups, m, k)  # reshape of a contiguous buffer: a view, no copy


def col2im_matmul(dy, kernel, padded_shape, out_hw, strides, dilation, groups):
    """Gradient of the padded input: ``dcols = dy @ W^T``, each row added back onto the pixels it came from.

    The product is formed tap by tap, ``(kh*kw, g, M, C_g)``, so every tap's
    contribution is one contiguous image that is added to a strided window of
    the result (the adjoint of im2col, without scattered writes).
    """
    n, hp, wp, c = padded_shape
    kh, kw, cg, f = kernel.shape
    fg = f // groups
    dyg = dy.reshape(-1, groups, fg).transpose(1, 0, 2)                       # (g, M, F_g): a view
    wt = kernel.reshape(kh * kw, cg, groups, fg).transpose(0, 2, 3, 1)        # (taps, g, F_g, C_g): a view
    dcols = np.matmul(dyg[None], wt)                                          # (taps, g, M, C_g)
    dcols = dcols.reshape(kh, kw, groups, n, *out_hw, cg)                     # view: rows back to images
    dxp = np.zeros(padded_shape, dy.dtype)
    grouped = dxp.reshape(n, hp, wp, groups, cg)                              # view: split channels by group
    for p in range(kh):
        for q in range(kw):
            tap = dcols[p, q] if groups == 1 else dcols[p, q].transpose(1, 2, 3, 0, 4)
            grouped[window_slice(p, q, out_hw, strides, dilation)] += tap.reshape(n, *out_hw, groups, cg)
    return dxp


def add_bias(y, bias, row):
    """``y += bias`` for contiguous y of shape (M, F), viewed as rows of ``row`` pixels so the loop runs long."""
    assert y.flags.c_contiguous, "add_bias needs a contiguous array (a reshape would copy)"
    y.reshape(-1, row * bias.size)[...] += np.tile(bias, row)


def sum_rows(dy, f, row):
    """Sum (M, F) over M, through the same row view as ``add_bias``."""
    return dy.reshape(-1, row * f).sum(axis=0).reshape(row, f).sum(axis=0)


# ---------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------
class Conv2D(Layer):
    """2-D convolution over (N, H, W, C) images.

    Args:
        filters: number of output feature maps ``F``.
        kernel_size: ``k`` or ``(kh, kw)``.
        strides: ``s`` or ``(sh, sw)``.
        padding: ``"valid"`` (none), ``"same"`` (output ``ceil(H/s)``), ``p`` or ``(ph, pw)``.
        dilation: ``d`` or ``(dh, dw)``; a tap is ``d`` pixels from the next.
        groups: split input channels and filters into ``groups`` independent convolutions.
        use_bias: add a learned bias per filter.
        kernel_initializer: ``"he_uniform"`` (default), ``"he_normal"``, ``"glorot_uniform"``, ...

    Shapes: input ``(N, H, W, C)``, kernel ``(kh, kw, C // groups, F)``, bias ``(F,)``,
    output ``(N, H_out, W_out, F)`` (see the module docstring for ``H_out``).
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation=1, groups=1,
                 use_bias=True, kernel_initializer="he_uniform", name=None):
        super().__init__(name)
        self.filters = check_positive_int("filters", filters, "Conv2D")
        self.kernel_size = check_pair("kernel_size", kernel_size, "Conv2D")
        self.strides = check_pair("strides", strides, "Conv2D")
        self.dilation = check_pair("dilation", dilation, "Conv2D")
        self.groups = check_positive_int("groups", groups, "Conv2D")
        self.padding = validate_padding(padding, "Conv2D")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        if self.filters % self.groups:
            raise ValueError(f"Conv2D: filters ({filters}) must be divisible by groups ({groups})")

    any_spatial_size = True  # fully convolutional: any H, W; the channels must match

    def compute_output_shape(self, input_shape):
        self.require_image(input_shape)
        h, w, c = input_shape
        if c % self.groups:
            raise ValueError(f"{self.label}: input channels ({c}) must be divisible by groups ({self.groups})")
        pads = resolve_padding(self.padding, (h, w), self.kernel_size, self.strides, self.dilation, self.label)
        ho = output_size(h, self.kernel_size[0], self.strides[0], pads[0] + pads[1], self.dilation[0], self.label, "height")
        wo = output_size(w, self.kernel_size[1], self.strides[1], pads[2] + pads[3], self.dilation[1], self.label, "width")
        return (ho, wo, self.filters)

    def build_params(self, input_shape):
        kh, kw = self.kernel_size
        cg = input_shape[2] // self.groups
        shape = (kh, kw, cg, self.filters)
        self.params["kernel"] = self.kernel_initializer(shape, kh * kw * cg, kh * kw * self.filters // self.groups,
                                                        self.rng).astype(self.dtype)
        if self.use_bias:
            self.params["bias"] = np.zeros(self.filters, self.dtype)

    def forward(self, x, training=False):
        x = self._prepare(x)
        n, h, w, _ = x.shape
        g, f = self.groups, self.filters
        pads = resolve_padding(self.padding, (h, w), self.kernel_size, self.strides, self.dilation, self.label)
        ho, wo, _ = self.compute_output_shape(x.shape[1:])
        xp = pad_hw(x, pads)
        cols = im2col(xp, self.kernel_size, (ho, wo), self.strides, self.dilation, g)
        wmat = self.params["kernel"].reshape(-1, g, f // g).transpose(1, 0, 2)  # (g, K, F_g): a view
        if g == 1:
            y = cols[0] @ wmat[0]                                               # (N*Ho*Wo, F)
        else:
            y = np.ascontiguousarray(np.matmul(cols, wmat).transpose(1, 0, 2)).reshape(n * ho * wo, f)  # (g, M, F_g) -> (M, F)
        if self.use_bias:
            add_bias(y, self.params["bias"], wo)
        self._cache = (cols, xp.shape, pads, (ho, wo))
        return y.reshape(n, ho, wo, f)

    def backward(self, dy):
        cols, padded_shape, pads, out_hw = self._cache
        g, f = self.groups, self.filters
        dy2 = np.ascontiguousarray(dy, dtype=self.dtype).reshape(-1, f)       # (M, F)
        dyg = dy2.reshape(-1, g, f // g).transpose(1, 0, 2)                     # (g, M, F_g): a view
        dw = (cols[0].T @ dyg[0])[None] if g == 1 else np.matmul(cols.transpose(0, 2, 1), dyg)  # (g, K, F_g)
        self.grads["kernel"][...] = dw.transpose(1, 0, 2).reshape(self.params["kernel"].shape)
        if self.use_bias:
            self.grads["bias"][...] = sum_rows(dy2, f, out_hw[1])
        if not self.needs_input_grad:
            return None
        dxp = col2im_matmul(dy2, self.params["kernel"], padded_shape, out_hw, self.strides, self.dilation, g)
        t, b, l, r = pads
        return dxp[:, t:padded_shape[1] - b, l:padded_shape[2] - r, :]

    def macs(self):
        ho, wo, f = self.output_shape
        kh, kw = self.kernel_size
        return ho * wo * f * kh * kw * (self.input_shape[2] // self.groups)

    def get_config(self):
        return {"filters": self.filters, "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "dilation": list(self.dilation), "groups": self.groups, "use_bias": self.use_bias,
                "kernel_initializer": self.kernel_initializer.name}
