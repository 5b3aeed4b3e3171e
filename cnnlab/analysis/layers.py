"""A model's layers as the pages see them: kinds, the first convolution, outputs, inputs and receptive fields.

Every function takes a cnnlab model (``Sequential`` or a graph ``Model``) and
plain NumPy arrays. One image is ``(H, W, C)``; a layer's output for it is
``(H', W', C')`` for feature maps or ``(units,)`` for flat outputs (the batch
axis removed).
"""
from __future__ import annotations

import numpy as np

from ..layers import activations, core, norm, pool
from ..layers.conv import Conv2D, resolve_padding

KINDS = ("conv", "pool", "norm", "activation", "dense", "flatten", "other")


def kind(layer) -> str:
    """How a layer is drawn and explained: one of :data:`KINDS`.

    ``pool`` covers max and average pooling, sub-sampling and global average
    pooling; ``activation`` every element-wise function (ReLU, Tanh, ...).
    """
    if isinstance(layer, Conv2D):
        return "conv"
    if isinstance(layer, (pool.Pool2D, pool.Subsample, pool.GlobalAvgPool2D)):
        return "pool"
    if isinstance(layer, norm.BatchNorm):
        return "norm"
    if isinstance(layer, activations.Elementwise):
        return "activation"
    if isinstance(layer, core.Dense):
        return "dense"
    if isinstance(layer, core.Flatten):
        return "flatten"
    return "other"


def first_conv(model, required=True):
    """The model's first ``Conv2D`` layer; without one, ``None`` or (``required``) a ``ValueError``."""
    layer = next((l for l in model.layers if isinstance(l, Conv2D)), None)
    if layer is None and required:
        raise ValueError(f"the model has no Conv2D layer; its layers are {[l.name for l in model.layers]}")
    return layer


def conv_layer(model, name=None):
    """The layer called ``name``, which must be a convolution (a 4-D ``kernel``), or :func:`first_conv`."""
    if name is None:
        return first_conv(model)
    layer = model[name]
    kernel = layer.params.get("kernel")
    if kernel is None or kernel.ndim != 4:
        raise ValueError(f"layer {name!r} ({type(layer).__name__}) is not a convolution; "
                         f"convolution layers: {[l.name for l in model.layers if isinstance(l, Conv2D)]}")
    return layer


def sources(model, layer) -> list:
    """The layers whose outputs ``layer`` reads, in order; ``None`` stands for the model's input."""
    by_name = {l.name: l for l in model.layers}
    return [by_name.get(n) for n in model.inbound_names()[model.layers.index(layer)]]


# ---------------------------------------------------------------------------
# Outputs and inputs
# ---------------------------------------------------------------------------
def one_image(model, x) -> np.ndarray:
    """``x`` (H, W, C) or (1, H, W, C) as a checked batch of one."""
    x = np.asarray(x)
    if x.ndim == len(model.input_shape):
        x = x[None]
    x = model.check_input(x)
    if len(x) != 1:
        raise ValueError(f"expected one image, received a batch of {len(x)}")
    return x


def capture(model, x) -> tuple[np.ndarray, dict]:
    """``(logits, {layer_name: output})`` for one image, batch axis removed (inference mode)."""
    x = one_image(model, np.asarray(x, np.float32))
    out, acts = model.forward(x, capture=True)
    return np.array(out[0]), {k: np.array(v[0]) for k, v in acts.items()}


def feature_maps(model, x) -> list:
    """Every layer's output for one image, in the model's order: ``[(layer, output)]``."""
    _, acts = capture(model, x)
    return [(layer, acts[layer.name]) for layer in model.layers]


def capture_batches(model, x, names=(), batch_size=250) -> tuple[np.ndarray, dict]:
    """Logits (N, K) and ``{name: outputs (N, ...)}`` for the layers ``names``, in batches (inference mode)."""
    logits, caught = [], {n: [] for n in names}
    for s in range(0, len(x), batch_size):
        h, got = model.forward(x[s:s + batch_size], capture=list(caught))
        for n in caught:
            caught[n].append(np.array(got[n], np.float32, copy=True))
        logits.append(h)
    return np.concatenate(logits), {n: np.concatenate(v) for n, v in caught.items()}


def layer_input(model, x, acts, layer):
    """What ``layer`` received for one image ``x`` whose layer outputs are ``acts`` (from :func:`capture`):
    the image, or another layer's output; ``None`` for a layer reading several (a residual sum)."""
    src = sources(model, layer)
    if len(src) != 1:
        return None
    return x if src[0] is None else acts[src[0].name]


def layer_inputs(model, layer, x, batch_size=256) -> np.ndarray:
    """What ``layer`` (reading one other layer or the image) receives for the images ``x`` (N, H, W, C)."""
    src = sources(model, layer)
    if len(src) != 1:
        raise ValueError(f"layer {layer.name!r} reads {len(src)} layers, not one")
    if src[0] is None:
        return x
    return capture_batches(model, x, [src[0].name], batch_size)[1][src[0].name]


def statistics(layer, a) -> dict:
    """A layer's output ``a`` in numbers: name, type, shape, min / max / mean and the fraction of exact zeros."""
    a = np.asarray(a, np.float64)
    return {"name": layer.name, "type": type(layer).__name__, "output_shape": list(a.shape),
            "min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()),
            "fraction_zero": float(np.mean(a == 0))}


# ---------------------------------------------------------------------------
# Receptive fields
# ---------------------------------------------------------------------------
def _window(layer):
    """``(kernel, stride, dilation, leading pads)`` per axis of a window layer, or ``None`` for others."""
    s = getattr(layer, "strides", getattr(layer, "stride", None))
    if s is None:
        return None
    k = getattr(layer, "kernel_size", getattr(layer, "pool_size", None)) or (1, 1)
    d = getattr(layer, "dilation", (1, 1))
    pads = resolve_padding(getattr(layer, "padding", "valid"), layer.input_shape[:2], k, s, d)
    return k, s, d, (pads[0], pads[2])


def receptive_field(model, layer, y0, y1, x0, x1) -> dict:
    """The input-image box ``{"top", "bottom", "left", "right"}`` (inclusive; it may reach into padding)
    that output rows ``y0..y1`` and columns ``x0..x1`` of ``layer`` depend on.

    Walking back through a window layer with kernel ``k``, stride ``s``, dilation ``d`` and leading
    padding ``p``, output index ``i`` reads inputs ``i*s - p + d*t`` for ``t = 0 .. k-1``, of which only those
    inside the layer below's output are real (the rest is padding and reads nothing further down: with
    dilation or a pooling that drops the last rows this narrows the box); element-wise layers keep the box,
    and a layer reading several others (a residual sum) depends on the union of their boxes.
    """
    memo = {}

    def taps(l, box, axis):
        """The input indices along ``axis`` that outputs ``box[2*axis] .. box[2*axis+1]`` of ``l`` read."""
        lo, hi = box[2 * axis], box[2 * axis + 1]
        win = _window(l)
        if win is None:
            return range(lo, hi + 1)
        k, s, d, p = (v[axis] for v in win)
        return sorted({i * s - p + d * t for i in range(lo, hi + 1) for t in range(k)})

    def back(l, box):
        key = (l.name, box)
        if key not in memo:
            rows, cols = taps(l, box, 0), taps(l, box, 1)
            boxes = []
            for src in sources(model, l):
                if src is None:                            # the image: the box may reach into its padding
                    boxes.append((min(rows), max(rows), min(cols), max(cols)))
                    continue
                h, w = src.output_shape[:2]                # indices past a layer's output are padding
                r = [v for v in rows if 0 <= v < h]
                c = [v for v in cols if 0 <= v < w]
                if r and c:
                    boxes.append(back(src, (r[0], r[-1], c[0], c[-1])))
            memo[key] = (min(b[0] for b in boxes), max(b[1] for b in boxes),
                         min(b[2] for b in boxes), max(b[3] for b in boxes)) if boxes else box
        return memo[key]

    top, bottom, left, right = back(layer, (y0, y1, x0, x1))
    return {"top": top, "bottom": bottom, "left": left, "right": right}


def receptive_field_centres(model, upto) -> tuple:
    """Where the output cells of layer index ``upto`` of a chain are centred in the input image, per axis.

    Returns ``((offset_y, stride_y), (offset_x, stride_x))``: cell ``j`` looks at a window centred at
    ``offset + stride * j``. Each window layer with kernel ``k``, stride ``s``, dilation ``d`` and leading
    padding ``p`` moves the centre by ``d (k - 1) / 2 - p`` of its input cells and multiplies the stride by ``s``.
    """
    geo = [[0.0, 1.0], [0.0, 1.0]]
    for layer in model.layers[:upto + 1]:
        win = _window(layer)
        if win is None:
            continue                                   # element-wise layers keep the geometry
        k, s, d, p = win
        for a in (0, 1):
            offset, stride = geo[a]
            geo[a] = [offset + stride * (d[a] * (k[a] - 1) / 2 - p[a]), stride * s[a]]
    return tuple(tuple(g) for g in geo)
