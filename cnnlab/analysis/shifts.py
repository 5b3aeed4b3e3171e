r"""Moving the input: shifted images, and how a model's maps, features and prediction respond.

A convolution applies the same filter at every position, so shifting the input
shifts its feature maps with it (*equivariance*, exact away from the borders);
pooling can make the features the classifier reads change less (*invariance*).
Whether it does, for a given model, is measured here, not assumed:
:func:`shift_response` compares one image with its shifted copy.
"""
from __future__ import annotations

import numpy as np

from ..losses import softmax
from .layers import capture, first_conv


def _slices(d, n):
    """Destination and source slices along one axis for an integer shift ``d`` of length ``n``."""
    if d >= 0:
        return slice(min(d, n), n), slice(0, max(n - d, 0))
    return slice(0, max(n + d, 0)), slice(min(-d, n), n)


def shift_images(x, dy, dx, fill=None):
    """Shift a batch (N, H, W, C) by whole pixels: ``dx > 0`` right, ``dy > 0`` down.

    Pixels that enter take ``fill`` (an array broadcastable to one example,
    default 0), so with the default this equals ``cnnlab.augment.affine(x,
    shift_y=dy, shift_x=dx)``, exactly and faster.
    """
    x = np.asarray(x)
    n, h, w = x.shape[:3]
    out = np.zeros_like(x) if fill is None else np.broadcast_to(np.asarray(fill, x.dtype), x.shape).copy()
    (dr, sr), (dc, sc) = _slices(int(dy), h), _slices(int(dx), w)
    out[:, dr, dc] = x[:, sr, sc]
    return out


def place_on_canvas(x, size, top, left):
    """Paste images (N, h, w, C) onto blank ``size x size`` canvases with their top-left corner at (top, left)."""
    n, h, w, c = x.shape
    if not (0 <= top <= size - h and 0 <= left <= size - w):
        raise ValueError(f"a {h}x{w} image at ({top}, {left}) does not fit on a {size}x{size} canvas")
    out = np.zeros((n, size, size, c), x.dtype)
    out[:, top:top + h, left:left + w] = x
    return out


def relative_change(a, b) -> float:
    """``||a - b|| / ||b||``: how much ``a`` differs from the reference ``b``, as a fraction of ``b``."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), 1e-12))


def features_layer(model):
    """The first layer with a flat output (the features the classifier reads), or the last layer."""
    return next((l for l in model.layers if len(l.output_shape) == 1), model.layers[-1])


def shift_response(model, x, dy, dx) -> dict:
    """One image (H, W, C) against itself shifted by ``(dy, dx)`` pixels (zero-filled).

    Returns ``image`` (the shifted copy), ``conv_layer`` and ``features_layer`` (the first
    convolution and the first flat layer), and for ``"shifted"`` and ``"original"`` that
    convolution's maps ``conv``, the ``features`` and the ``probabilities``; then
    ``features_change`` = ``||f(T x) - f(x)|| / ||f(x)||``, ``probability_change`` = half the L1
    distance between the two probability vectors (0: the same, 1: disjoint) and
    ``prediction_changed`` (whether the top class differs).
    """
    h, w = model.input_shape[:2]
    if not (abs(dy) < h and abs(dx) < w):
        raise ValueError(f"shift must be smaller than the image ({h}x{w}), received dy={dy}, dx={dx}")
    x = np.asarray(x, np.float32)
    moved = shift_images(x[None], dy, dx)[0]
    conv, feats = first_conv(model), features_layer(model)
    out = {"dy": int(dy), "dx": int(dx), "image": moved, "conv_layer": conv.name, "features_layer": feats.name}
    for key, img in (("shifted", moved), ("original", x)):
        logits, acts = capture(model, img)
        out[key] = {"conv": acts[conv.name], "features": acts[feats.name].ravel(),
                    "probabilities": softmax(np.asarray(logits, np.float64)[None])[0]}
    p, q = out["shifted"]["probabilities"], out["original"]["probabilities"]
    out.update(features_change=relative_change(out["shifted"]["features"], out["original"]["features"]),
               probability_change=float(0.5 * np.abs(p - q).sum()),
               prediction_changed=bool(np.argmax(p) != np.argmax(q)))
    return out
