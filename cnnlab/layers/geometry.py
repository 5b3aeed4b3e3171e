r"""Window geometry shared by convolution, pooling and the locally connected layer.

A window layer slides a ``kh x kw`` window (its taps ``dilation`` pixels apart)
over the padded input in steps of ``strides``. For input rows ``H``, padding
``pad_top + pad_bottom``, kernel ``kh``, stride ``s_h`` and dilation ``d_h``
the output has

.. math::

    H_{out} = \left\lfloor \frac{H + pad_{top} + pad_{bottom} - d_h (kh - 1) - 1}{s_h} \right\rfloor + 1

rows, and the same formula with ``W``, ``kw``, ``s_w``, ``d_w`` gives the
columns. This module is the one place that computes it (``output_size``,
``window_geometry``); ``padding="same"`` is resolved so that
``H_out = ceil(H / s_h)`` (``resolve_padding``).

Memory layout: what layers exchange is ``(N, H, W, C)``; what window layers
compute on is the ``(C, H, W, N)`` array behind it (``to_chwn``, ``from_chwn``),
where every tap's strided view of the image (``window_slice``) is made of
runs of ``N`` contiguous numbers. ``H`` and ``W`` are axes 1 and 2 in both.
"""
from __future__ import annotations

import numpy as np

from ..checks import check_pair


def validate_padding(padding, layer):
    """Check a padding argument at construction: ``"valid"``, ``"same"``, ``p`` or ``(ph, pw)`` with
    non-negative ints; return the string, or ``(ph, pw)`` for explicit padding."""
    if padding in ("valid", "same"):
        return padding
    if not isinstance(padding, str):
        try:
            return check_pair("padding", padding, layer, minimum=0)
        except ValueError:
            pass
    raise ValueError(f"{layer}: padding must be 'valid', 'same', a non-negative int or a pair (ph, pw), "
                     f"received {padding!r}")


def resolve_padding(padding, size, kernel, strides, dilation, layer="Conv2D"):
    """Return ``(top, bottom, left, right)`` for ``"valid"``, ``"same"``, ``p`` or ``(ph, pw)``.

    ``size`` is the input's ``(H, W)``, ``kernel``, ``strides`` and ``dilation`` pairs. ``"same"``
    follows Keras/TensorFlow: the output has ``ceil(H / s)`` rows, so the total padding is
    ``max((ceil(H / s) - 1) * s + d * (k - 1) + 1 - H, 0)``, and an odd total puts the extra row at
    the bottom (the extra column at the right).
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


def output_size(n, k, s, pad_total, d, layer, axis):
    """``floor((n + pad_total - d*(k-1) - 1) / s) + 1``, with a clear error when the kernel does not fit.

    ``n`` input pixels along ``axis`` (``"height"`` or ``"width"``, for the error), kernel ``k``,
    stride ``s``, padding ``pad_total`` on both sides together, dilation ``d``.
    """
    span = d * (k - 1) + 1
    if n + pad_total < span:
        raise ValueError(
            f"{layer}: kernel spans {span} pixels along {axis} but the padded input has only "
            f"{n + pad_total} (input {n} + padding {pad_total})"
        )
    return (n + pad_total - span) // s + 1


def window_geometry(size, kernel, strides, padding, dilation=(1, 1), layer="Conv2D"):
    """``(pads, (H_out, W_out))`` of a window layer on an input of ``size = (H, W)``.

    ``pads`` is ``(top, bottom, left, right)`` from ``resolve_padding``; the output size is the formula
    of the module docstring on each axis.
    """
    (h, w), (kh, kw), (sh, sw), (dh, dw) = size, kernel, strides, dilation
    pads = resolve_padding(padding, (h, w), kernel, strides, dilation, layer)
    return pads, (output_size(h, kh, sh, pads[0] + pads[1], dh, layer, "height"),
                  output_size(w, kw, sw, pads[2] + pads[3], dw, layer, "width"))


def pad_hw(x, pads, value=0.0):
    """Pad axes 1 and 2 (H and W of an (N, H, W, C) or a (C, H, W, N) array) by ``(top, bottom, left, right)``."""
    t, b, l, r = pads
    if not any(pads):
        return x
    shape = list(x.shape)
    shape[1] += t + b
    shape[2] += l + r
    xp = np.full(shape, value, x.dtype)        # np.pad does the same, 3-5x slower
    xp[:, t:t + x.shape[1], l:l + x.shape[2]] = x
    return xp


def window_slice(i, j, out_hw, strides, dilation):
    """Index of the input pixels that kernel tap ``(i, j)`` touches for every output position (H, W: axes 1, 2)."""
    (ho, wo), (sh, sw), (dh, dw) = out_hw, strides, dilation
    return (slice(None), slice(i * dh, i * dh + sh * (ho - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (wo - 1) + 1, sw))


# ---------------------------------------------------------------------------
# Memory layout: what layers exchange is (N, H, W, C); what they compute on is (C, H, W, N)
# ---------------------------------------------------------------------------
def to_chwn(x):
    """The (C, H, W, N) contiguous array behind an (N, H, W, C) batch: a view if it already lives that way.

    With the batch innermost in memory, every shifted or strided window of
    the image (a kernel tap, a pooling tap) is a run of ``N`` or ``W * N``
    contiguous numbers, and a layer's weights act on one contiguous row per
    channel. Layers that work on windows therefore compute in this layout and
    hand back ``from_chwn(...)``: an ordinary (N, H, W, C) array whose memory
    happens to be ordered (C, H, W, N), so the next such layer gets it without
    a copy (the layout cuda-convnet used for the same reason).
    """
    return np.ascontiguousarray(x.transpose(3, 1, 2, 0))


def from_chwn(a):
    """A (C, H, W, N) array as the (N, H, W, C) batch it holds: a view, no copy."""
    return a.transpose(3, 1, 2, 0)
