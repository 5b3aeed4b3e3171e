r"""What a shift of the input does: equivariance of convolution, and how much of a shift sub-sampling absorbs.

**Equivariance.** For a stride-1 convolution ``T_d`` (a shift by ``d``
pixels) commutes with the layer away from the border::

    conv(T_d x)[u] = sum_i k[i] x[u - d + i] = conv(x)[u - d] = T_d conv(x)[u]

so the map of the shifted input equals the shifted map, exactly up to
round-off, wherever neither the image border nor the zeros brought in by the
shift reach the kernel. :func:`equivariance_error` measures the difference
there. After layers of total stride ``s`` a shift by ``d`` (a multiple of ``s``)
moves the maps by ``d / s``.

**Sub-sampling's shift absorption.** For a feature map ``m`` of the input
and of the input shifted by ``d`` pixels, :func:`pooling_shift_change` gives
the relative change of the pooled maps,
``||P(m(T_d x)) - P(m(x))|| / ||P(m(x))||``, for ``P`` = keep one pixel in
``p x p`` (subset), the ``p x p`` average and the ``p x p`` maximum, and
``P`` = identity (no pooling) for comparison, computed by the project's own
``Subsample``, ``AvgPool2D`` and ``MaxPool2D``.
"""
from __future__ import annotations

import numpy as np

from .shifts import shift_images
from ..layers.conv import resolve_padding
from ..layers import AvgPool2D, ClippedReLU, Conv2D, LeakyReLU, MaxPool2D, ReLU, Sigmoid, Subsample, Tanh

ACTIVATIONS = (ReLU, ClippedReLU, LeakyReLU, Sigmoid, Tanh)


def shift(x, dy, dx) -> np.ndarray:
    """``x`` (N, H, W, C) moved down by ``dy`` and right by ``dx`` whole pixels, zeros brought in
    (:func:`cnnlab.analysis.shifts.shift_images`)."""
    return shift_images(np.asarray(x), dy, dx)


def equivariance_error(fn, x, dy, dx, stride=1, border=0) -> dict:
    """``{"max_abs", "relative"}``: ``fn(shift(x))`` against ``shift(fn(x))`` away from the border.

    ``fn`` maps (N, H, W, C) images to (N, H', W', F) maps of total stride ``stride`` (one number, or one per
    axis; ``dy`` and ``dx`` must be multiples of it). ``border`` map pixels are left out on every side, plus
    the rows and columns the shift brings in. ``relative`` divides by the largest ``|fn(x)|`` there.
    """
    sy, sx = (stride, stride) if np.ndim(stride) == 0 else stride
    if dy % sy or dx % sx:
        raise ValueError(f"a shift of ({dy}, {dx}) pixels is not a whole number of map pixels at stride {stride}")
    x = np.asarray(x, np.float64)
    a = np.asarray(fn(shift(x, dy, dx)), np.float64)
    m = np.asarray(fn(x), np.float64)
    b = shift(m, dy // sy, dx // sx)
    my, mx = abs(dy // sy), abs(dx // sx)
    h, w = a.shape[1:3]
    keep = (slice(None), slice(border + my, h - border - my), slice(border + mx, w - border - mx))
    diff = np.abs(a[keep] - b[keep])
    if diff.size == 0:
        raise ValueError(f"no map pixel is left away from a border of {border} and a shift of ({dy}, {dx})")
    scale = float(np.abs(b[keep]).max())
    return {"max_abs": float(diff.max()), "relative": float(diff.max()) / scale if scale > 0 else 0.0}


def conv_border(layer: Conv2D, input_hw) -> int:
    """Map pixels next to the border whose window reaches into the padding (stride 1): the largest pad."""
    return max(resolve_padding(layer.padding, tuple(input_hw), layer.kernel_size, layer.strides, layer.dilation))


def pooled(maps, kind, pool=2) -> np.ndarray:
    """``maps`` (N, H, W, C) sub-sampled by ``kind``: ``"subset"``, ``"average"``, ``"max"`` or ``"none"``."""
    layers = {"subset": lambda: Subsample(pool), "average": lambda: AvgPool2D(pool), "max": lambda: MaxPool2D(pool)}
    if kind == "none":
        return np.asarray(maps)
    if kind not in layers:
        raise ValueError(f"sub-sampling is one of 'subset', 'average', 'max', 'none'; received {kind!r}")
    return layers[kind]().forward(np.asarray(maps, np.float32))


POOL_KINDS = ("none", "subset", "average", "max")


def pooling_shift_change(fn, x, pool=2, shifts=(0, 1, 2, 3, 4), axis="x") -> dict:
    """``{kind: [relative change at each shift]}`` of ``fn``'s maps pooled each way (module docstring).

    ``fn`` maps images (N, H, W, C) to feature maps; the input moves right (``axis="x"``) or down.
    """
    x = np.asarray(x, np.float32)
    base = np.asarray(fn(x))
    ref = {k: pooled(base, k, pool) for k in POOL_KINDS}
    out = {k: [] for k in POOL_KINDS}
    for d in shifts:
        m = np.asarray(fn(shift(x, d, 0) if axis == "y" else shift(x, 0, d)))
        for k in POOL_KINDS:
            p = pooled(m, k, pool)
            out[k].append(float(np.linalg.norm(p - ref[k]) / max(np.linalg.norm(ref[k]), 1e-12)))
    return out


def layer_maps(model, name):
    """A function ``images -> the output of layer name`` of ``model`` (inference)."""
    def fn(x):
        _, caught = model.forward(np.asarray(x, model.layers[0].dtype), capture=[name])
        return caught[name]
    return fn


def first_feature_layer(model) -> str:
    """The first convolution's name, or the activation right after it (the map a pool would receive)."""
    names = [layer.name for layer in model.layers]
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Conv2D):
            after = model.layers[i + 1] if i + 1 < len(names) else None
            return after.name if isinstance(after, ACTIVATIONS) else layer.name
    raise ValueError(f"the model has no Conv2D layer; its layers are {names}")


def pooling_layers(model) -> list:
    """The model's sub-sampling layers (max, average, subset pools and strided convolutions), in order."""
    return [layer for layer in model.layers
            if isinstance(layer, (MaxPool2D, AvgPool2D, Subsample))
            or (isinstance(layer, Conv2D) and max(layer.strides) > 1)]
