r"""A convolution's arithmetic: one filter over one image, every step of it, and its dense equivalent.

At output position ``(i, j)`` the kernel is laid on the window of the padded
input whose top-left corner is ``(i * s_h, j * s_w)``, taps ``d`` apart::

    y[i, j] = b + sum_{p, q, c} x_pad[i*s_h + p*d_h, j*s_w + q*d_w, c] * k[p, q, c]

(cross-correlation: the kernel is not flipped). :func:`convolve` computes it
with cnnlab's own ``Conv2D``; :func:`conv_steps` re-derives every cell from its
element-wise products and checks it against that.

Flatten the input to a vector of ``H*W*C`` pixels and the output to
``Ho*Wo*F`` units: the convolution is then ``y = x @ W + b`` with a sparse
matrix ``W`` whose nonzero entries repeat along diagonals (weight sharing).
:func:`conv_to_dense` builds ``W``; :func:`local_to_dense` does the same for a
locally connected layer, whose copies are untied.
"""
from __future__ import annotations

import numpy as np

from ..checks import check_pair
from ..layers.conv import Conv2D, pad_hw, resolve_padding
from ..layers.geometry import window_geometry
from ..layers.local import LocallyConnected2D


def parse_padding(padding):
    """``"valid"``, ``"same"``, ``2``, ``"2"``, ``"1,2"`` or ``(1, 2)`` -> what ``Conv2D`` accepts."""
    if isinstance(padding, str) and padding.strip().lower() in ("valid", "same"):
        return padding.strip().lower()
    try:
        return check_pair("padding", padding, minimum=0)
    except ValueError:
        raise ValueError(f"padding must be 'valid', 'same', an integer or 'ph,pw'; received {padding!r}") from None


def convolve(x, kernel, bias=0.0, stride=1, padding="valid", dilation=1):
    """One filter over one image with cnnlab's ``Conv2D``: ``x`` (H, W, C), ``kernel`` (kh, kw, C) -> (Ho, Wo)."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    layer = Conv2D(1, kernel.shape[:2], strides=check_pair("stride", stride), padding=parse_padding(padding),
                   dilation=check_pair("dilation", dilation))
    layer.build(x.shape, dtype=np.float64)
    layer.params["kernel"][...] = kernel[..., None]
    layer.params["bias"][...] = bias
    return layer.forward(x[None])[0, :, :, 0]


def conv_steps(x, kernel, bias=0.0, stride=1, padding="valid", dilation=1):
    """Every output position as a record: window coordinates, element-wise products, their sum and the value.

    Returns ``(output, pads, records)``; ``output`` comes from ``Conv2D`` and
    each record's ``value`` (sum of products plus bias) is checked against it.
    """
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    (sh, sw), (dh, dw) = check_pair("stride", stride), check_pair("dilation", dilation)
    padding = parse_padding(padding)
    kh, kw, _ = kernel.shape
    pads = resolve_padding(padding, x.shape[:2], (kh, kw), (sh, sw), (dh, dw), "convolution")
    y = convolve(x, kernel, bias, (sh, sw), padding, (dh, dw))
    xp = pad_hw(x[None], pads)[0]
    records = []
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            rows = [i * sh + p * dh for p in range(kh)]
            cols = [j * sw + q * dw for q in range(kw)]
            products = xp[np.ix_(rows, cols)] * kernel
            total = float(products.sum())
            value = total + float(bias)
            if not np.isclose(value, y[i, j], rtol=1e-9, atol=1e-9):
                raise AssertionError(f"convolution: position ({i}, {j}) sums to {value} but Conv2D gave {y[i, j]}")
            records.append({"row": i, "col": j, "window_rows": rows, "window_cols": cols,
                            "products": products, "channel_sums": products.sum(axis=(0, 1)),
                            "sum": total, "bias": float(bias), "value": float(y[i, j])})
    return y, pads, records


# ---------------------------------------------------------------------------
# The dense equivalent
# ---------------------------------------------------------------------------
def _geometry(input_shape, kernel_hw, strides, padding, dilation):
    strides, dilation = check_pair("strides", strides, "conv_to_dense"), check_pair("dilation", dilation, "conv_to_dense")
    pads, (ho, wo) = window_geometry(input_shape[:2], kernel_hw, strides, padding, dilation, "conv_to_dense")
    return strides, dilation, pads, ho, wo


def _to_dense(kernel_at, input_shape, kernel_hw, filters, strides, padding, dilation, dtype):
    """Fill the (H*W*C, Ho*Wo*F) matrix: ``kernel_at(i, j)`` gives the (kh, kw, C, F) weights of position (i, j)."""
    h, w, c = input_shape
    (kh, kw), f = kernel_hw, filters
    strides, dilation, pads, ho, wo = _geometry(input_shape, kernel_hw, strides, padding, dilation)
    dense = np.zeros((h, w, c, ho, wo, f), dtype)
    for i in range(ho):
        for j in range(wo):
            k = kernel_at(i, j)
            for p in range(kh):
                r = i * strides[0] + p * dilation[0] - pads[0]
                if not 0 <= r < h:
                    continue                    # this tap lies on zero padding: no weight
                for q in range(kw):
                    s = j * strides[1] + q * dilation[1] - pads[2]
                    if 0 <= s < w:
                        dense[r, s, :, i, j, :] = k[p, q]
    return dense.reshape(h * w * c, ho * wo * f), (ho, wo, f)


def conv_to_dense(kernel, input_shape, strides=1, padding="valid", dilation=1, bias=None, groups=1):
    """The fully connected equivalent of a convolution: ``x.reshape(N, -1) @ W + b == conv(x).reshape(N, -1)``.

    Args:
        kernel: (kh, kw, C // groups, F), as ``Conv2D.params["kernel"]``.
        input_shape: (H, W, C) of one image.
        strides, padding, dilation, groups: as ``Conv2D``.
        bias: (F,) or ``None``.

    Returns ``W`` of shape (H*W*C, Ho*Wo*F) -- rows are input pixels ``(r, s, c)``,
    columns output units ``(i, j, f)``, both in C order -- and ``b`` of shape (Ho*Wo*F,).
    """
    kernel = np.asarray(kernel)
    kh, kw, cg, f = kernel.shape
    h, w, c = input_shape
    if cg * groups != c or f % groups:
        raise ValueError(f"conv_to_dense: kernel {kernel.shape} with groups={groups} does not fit {c} input channels")
    full = np.zeros((kh, kw, c, f), kernel.dtype)   # grouped kernel as a block-diagonal (C, F) per tap
    fg = f // groups
    for g in range(groups):
        full[:, :, g * cg:(g + 1) * cg, g * fg:(g + 1) * fg] = kernel[:, :, :, g * fg:(g + 1) * fg]
    mat, (ho, wo, _) = _to_dense(lambda i, j: full, input_shape, (kh, kw), f, strides, padding, dilation, kernel.dtype)
    b = np.tile(np.asarray(bias, kernel.dtype), ho * wo) if bias is not None else np.zeros(ho * wo * f, kernel.dtype)
    return mat, b


def local_to_dense(kernel, input_shape, kernel_size, strides=1, padding="valid", dilation=1, bias=None):
    """The dense equivalent of a ``LocallyConnected2D`` kernel (Ho, Wo, kh*kw*C, F): conv's zeros, untied values."""
    kernel = np.asarray(kernel)
    ho, wo, k, f = kernel.shape
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    c = input_shape[2]
    per_pos = kernel.reshape(ho, wo, kh, kw, c, f)
    mat, _ = _to_dense(lambda i, j: per_pos[i, j], input_shape, (kh, kw), f, strides, padding, dilation, kernel.dtype)
    b = np.asarray(bias, kernel.dtype).reshape(-1) if bias is not None else np.zeros(ho * wo * f, kernel.dtype)
    return mat, b


def dense_equivalent(layer, input_shape=None):
    """``(W, b)`` for a built ``Conv2D`` or ``LocallyConnected2D`` layer."""
    shape = tuple(input_shape or layer.input_shape)
    bias = layer.params.get("bias")
    if isinstance(layer, LocallyConnected2D):
        return local_to_dense(layer.params["kernel"], shape, layer.kernel_size, layer.strides, layer.padding,
                              layer.dilation, bias)
    return conv_to_dense(layer.params["kernel"], shape, layer.strides, layer.padding, layer.dilation, bias,
                         getattr(layer, "groups", 1))


def expected_nonzeros(input_shape, kernel_shape, strides=1, padding="valid", dilation=1, groups=1) -> int:
    """Entries of the dense equivalent a kernel without zeros fills: in-bounds taps x (C / groups) x F."""
    h, w, c = input_shape
    kh, kw, cg, f = kernel_shape
    strides, dilation, pads, ho, wo = _geometry(input_shape, (kh, kw), strides, padding, dilation)
    rows = [sum(0 <= i * strides[0] + p * dilation[0] - pads[0] < h for p in range(kh)) for i in range(ho)]
    cols = [sum(0 <= j * strides[1] + q * dilation[1] - pads[2] < w for q in range(kw)) for j in range(wo)]
    return int(sum(rows) * sum(cols) * cg * f)


def check_dense_equivalent(layer, x) -> float:
    """Max |conv(x) - (x.reshape(N, -1) @ W + b)| for a built layer, computed in float64."""
    x = np.asarray(x, np.float64)
    twin = type(layer)(**layer.get_config())
    twin.build(layer.input_shape, dtype=np.float64)
    for k, v in layer.params.items():
        twin.params[k][...] = v
    wmat, b = dense_equivalent(twin)
    y_conv = twin.forward(x).reshape(len(x), -1)
    y_dense = x.reshape(len(x), -1) @ wmat + b
    return float(np.abs(y_conv - y_dense).max())
