"""What the explorer's pages show, computed with NumPy: no web framework in this file.

Every function takes a cnnlab model and plain arrays and returns JSON-ready
dicts (numbers, lists, or arrays packed by :func:`pack`). The arithmetic the
explain tools already do is reused from ``cnnlab.explain`` (one implementation
each): the convolution step (``conv_steps``), feature maps, the most activating
patches (``top_patches``), gradient saliency, Grad-CAM and shifted inputs.

A unit of a layer is addressed as ``(channel, y, x)`` for feature maps
``(H, W, C)`` and ``(channel,)`` (``y = x = 0``) for flat outputs ``(units,)``.
"""
from __future__ import annotations

import base64
import inspect

import numpy as np

from ..layers.conv import Conv2D, pad_hw, resolve_padding
from ..losses import softmax


# ---------------------------------------------------------------------------
# Arrays in JSON
# ---------------------------------------------------------------------------
def pack(a, fmt="list"):
    """An array for JSON: ``{"shape", "min", "max", "data"}``.

    ``fmt="list"``: ``data`` is nested lists; ``fmt="base64"``: the float32
    values in C order, little-endian, base64-encoded (about 5x smaller, and a
    browser reads it straight into a ``Float32Array``).
    """
    a = np.asarray(a, np.float32)
    out = {"shape": list(a.shape), "min": float(a.min()) if a.size else 0.0,
           "max": float(a.max()) if a.size else 0.0}
    if fmt == "base64":
        out["dtype"] = "float32"
        out["data"] = base64.b64encode(np.ascontiguousarray(a, "<f4").tobytes()).decode("ascii")
    else:
        out["data"] = a.tolist()
    return out


def _plain(v):
    """Layer configs as JSON: tuples to lists."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------
def layer_kind(layer) -> str:
    """How the pages draw a layer: conv, pool, norm, activation, dense, flatten or other."""
    from ..layers import activations, core, norm, pool
    if isinstance(layer, Conv2D):
        return "conv"
    if isinstance(layer, (pool._Pool2D, pool.Subsample, pool.GlobalAvgPool2D)):
        return "pool"
    if isinstance(layer, norm.BatchNorm):
        return "norm"
    if isinstance(layer, activations._Elementwise):
        return "activation"
    if isinstance(layer, core.Dense):
        return "dense"
    if isinstance(layer, core.Flatten):
        return "flatten"
    return "other"


def describe(model, class_names=None) -> dict:
    """``{"name", "input_shape", "class_names", "num_params", "layers": [...]}``.

    Each layer: ``name``, ``class``, ``kind`` (see :func:`layer_kind`), ``inputs`` (the layers it reads,
    ``"input"`` for the image), ``input_shape``, ``output_shape``, ``params`` (name -> shape) and
    ``config`` (its ``get_config()``).
    """
    layers = []
    for layer in model.layers:
        layers.append({"name": layer.name, "class": type(layer).__name__, "kind": layer_kind(layer),
                       "input_shape": list(layer.input_shape), "output_shape": list(layer.output_shape),
                       "inputs": [("input" if src is None else src.name) for src in sources(model, layer)],
                       "params": {k: list(v.shape) for k, v in layer.params.items()},
                       "num_params": int(layer.num_params), "config": _plain(layer.get_config())})
    k = model.num_classes
    names = [str(c) for c in class_names] if class_names and len(class_names) == k else [str(i) for i in range(k)]
    return {"name": model.name, "input_shape": list(model.input_shape), "class_names": names,
            "num_params": int(model.num_params), "layers": layers}


def _supports_capture(model) -> bool:
    try:
        return "capture" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def capture(model, x) -> tuple[np.ndarray, dict]:
    """``(logits, {layer_name: output})`` for one image ``x`` (H, W, C), batch axis removed.

    Uses the model's own ``forward(x, capture=True)`` when it has one (graph models); else
    every layer's output in order (``cnnlab.explain.feature_maps``).
    """
    x = model.check_input(np.asarray(x, np.float32)[None])
    if _supports_capture(model):
        out, acts = model.forward(x, capture=True)
        return np.asarray(out[0]), {k: np.asarray(v[0]) for k, v in acts.items()}
    from ..explain import feature_maps
    maps = feature_maps(model, x[0])
    return np.asarray(maps[-1][1]), {layer.name: a for layer, a in maps}


def sources(model, layer) -> list:
    """The layers whose outputs ``layer`` reads, in order; ``None`` stands for the model's input.

    Graph models name them (``model.inbound_names()``); in a chain it is the layer before.
    """
    i = model.layers.index(layer)
    names = getattr(model, "inbound_names", None)
    if callable(names):
        by_name = {l.name: l for l in model.layers}
        return [by_name.get(n) for n in names()[i]]
    return [model.layers[i - 1] if i else None]


def layer_input(model, x, acts, layer):
    """What ``layer`` received (the image, or another layer's output); ``None`` for a layer reading several."""
    src = sources(model, layer)
    if len(src) != 1:
        return None
    return x if src[0] is None else acts[src[0].name]


def predict(model, x, activations=None, class_names=None) -> dict:
    """Probabilities (and, with ``activations`` = ``"list"`` or ``"base64"``, every layer's output).

    ``softmax``: the logits, ``exp(logit - max)`` and their sum, whose ratio is each probability.
    """
    logits, acts = capture(model, x)
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max())
    out = {"probabilities": softmax(z[None])[0].tolist(), "predicted": int(np.argmax(z)),
           "softmax": {"logits": z.tolist(), "exp": e.tolist(), "sum": float(e.sum())}}
    if class_names:
        out["class"] = class_names[out["predicted"]]
    if activations:
        out["input"] = pack(x, activations)
        out["activations"] = [{"name": layer.name, **pack(acts[layer.name], activations)} for layer in model.layers]
    return out


# ---------------------------------------------------------------------------
# One unit, down to the numbers
# ---------------------------------------------------------------------------
def _check_unit(layer, channel, y, x):
    shape = layer.output_shape
    if len(shape) == 3:
        h, w, c = shape
        ok = 0 <= channel < c and 0 <= y < h and 0 <= x < w
        what = f"channel in [0, {c - 1}], y in [0, {h - 1}], x in [0, {w - 1}]"
    else:
        ok, what = 0 <= channel < shape[-1] and y == 0 and x == 0, f"channel in [0, {shape[-1] - 1}] and y = x = 0"
    if not ok:
        raise ValueError(f"layer {layer.name!r} outputs {tuple(shape)}: expected {what}, "
                         f"received channel={channel}, y={y}, x={x}")


def receptive_field(model, layer, y0, y1, x0, x1):
    """The input-image box ``[top, bottom] x [left, right]`` (inclusive, may extend into padding)
    that output rows ``y0..y1`` and columns ``x0..x1`` of ``layer`` depend on.

    Walking back through a window layer with kernel ``k``, stride ``s``, dilation ``d`` and leading
    padding ``p``: output index ``i`` reads input ``i*s - p .. i*s - p + d*(k-1)``. A layer that reads
    several others (a residual sum) depends on the union of their boxes.
    """
    memo = {}

    def back(l, box):
        key = (l.name, box)
        if key in memo:
            return memo[key]
        k = getattr(l, "kernel_size", getattr(l, "pool_size", None))
        s = getattr(l, "strides", getattr(l, "stride", None))
        if s is not None:
            k = k or (1, 1)
            d = getattr(l, "dilation", (1, 1))
            pads = resolve_padding(getattr(l, "padding", "valid"), l.input_shape[:2], k, s, d)
            box = tuple(v for axis in (0, 1) for v in (box[2 * axis] * s[axis] - pads[2 * axis],
                        box[2 * axis + 1] * s[axis] - pads[2 * axis] + d[axis] * (k[axis] - 1)))
        boxes = [box if src is None else back(src, box) for src in sources(model, l)]
        memo[key] = out = (min(b[0] for b in boxes), max(b[1] for b in boxes),
                           min(b[2] for b in boxes), max(b[3] for b in boxes))
        return out

    top, bottom, left, right = back(layer, (y0, y1, x0, x1))
    return {"top": top, "bottom": bottom, "left": left, "right": right}


def conv_unit(layer, inp, channel, y, x) -> dict:
    """Output ``(y, x, channel)`` of conv ``layer`` for its input ``inp`` (H, W, C), term by term.

    The window of the zero-padded input starts at ``(y*s_h, x*s_w)`` with taps ``d`` apart; the
    explain tool's ``conv_steps`` computes its products, per-channel sums, sum + bias = value.
    Grouped convolutions see only their group's channels.
    """
    from ..explain import conv_steps
    kern = layer.params["kernel"]
    kh, kw, cg, f = kern.shape
    g = channel // (f // layer.groups)
    (sh, sw), (dh, dw) = layer.strides, layer.dilation
    pads = resolve_padding(layer.padding, inp.shape[:2], (kh, kw), (sh, sw), (dh, dw))
    xp = pad_hw(np.asarray(inp, np.float64)[None], pads)[0]
    r0, c0 = y * sh, x * sw
    window = xp[r0:r0 + dh * (kh - 1) + 1, c0:c0 + dw * (kw - 1) + 1, g * cg:(g + 1) * cg]
    bias = float(layer.params["bias"][channel]) if "bias" in layer.params else 0.0
    _, _, records = conv_steps(window, kern[..., channel], bias, stride=1, padding="valid", dilation=(dh, dw))
    rec = records[0]
    rows = [r0 + p * dh - pads[0] for p in range(kh)]            # in the unpadded input's coordinates
    cols = [c0 + q * dw - pads[2] for q in range(kw)]
    taps = window[::dh, ::dw]                                     # the pixels under the kernel (kh, kw, cg)
    return {"kind": "conv", "rows": rows, "cols": cols, "channels": list(range(g * cg, (g + 1) * cg)),
            "pads": list(pads), "strides": [sh, sw], "dilation": [dh, dw], "groups": layer.groups,
            "patch": pack(taps), "kernel": pack(kern[..., channel]), "products": pack(rec["products"]),
            "channel_sums": np.asarray(rec["channel_sums"]).tolist(), "sum": rec["sum"], "bias": rec["bias"],
            "value": rec["value"]}


def pool_unit(layer, inp, channel, y, x) -> dict:
    """The window a pooling unit reads, and which input won the max or what the average was."""
    from ..layers import pool
    a = np.asarray(inp, np.float64)
    if isinstance(layer, pool.GlobalAvgPool2D):
        win = a[:, :, channel]
        return {"kind": "pool", "op": "mean", "rows": list(range(a.shape[0])), "cols": list(range(a.shape[1])),
                "window": pack(win), "value": float(win.mean())}
    if isinstance(layer, pool.Subsample):
        r, c = y * layer.stride[0], x * layer.stride[1]
        return {"kind": "pool", "op": "subsample", "rows": [r], "cols": [c], "window": pack(a[r:r + 1, c:c + 1, channel]),
                "value": float(a[r, c, channel])}
    (kh, kw), (sh, sw) = layer.pool_size, layer.strides
    pads = resolve_padding(layer.padding, a.shape[:2], (kh, kw), (sh, sw), (1, 1))
    is_max = isinstance(layer, pool.MaxPool2D)
    xp = pad_hw(a[None, :, :, channel:channel + 1], pads, value=-np.inf if is_max else 0.0)[0, :, :, 0]
    win = xp[y * sh:y * sh + kh, x * sw:x * sw + kw]
    rows = [y * sh + p - pads[0] for p in range(kh)]
    cols = [x * sw + q - pads[2] for q in range(kw)]
    padded = ~np.isfinite(win)                       # max pooling pads with -inf: it never wins
    out = {"kind": "pool", "op": "max" if is_max else "mean", "rows": rows, "cols": cols,
           "window": pack(np.where(padded, 0.0, win)), "padded": padded.tolist()}
    if is_max:
        p, q = np.unravel_index(int(np.argmax(win)), win.shape)     # the first maximum in row-major order
        out.update(argmax=[int(p), int(q)], value=float(win[p, q]))
    else:
        out["value"] = float(win.mean())
    return out


def dense_unit(layer, inp, channel, top=10) -> dict:
    """Unit ``channel`` of a dense layer: inputs, weights, products, sum + bias.

    ``top``: the indices of the ``top`` largest products by ``|w_k * v_k|``, largest first;
    ``rest_sum``: the sum of the other products, so ``sum = sum(products[top]) + rest_sum``.
    """
    v = np.asarray(inp, np.float64).reshape(-1)
    w = np.asarray(layer.params["kernel"][:, channel], np.float64)
    products = v * w
    bias = float(layer.params["bias"][channel]) if "bias" in layer.params else 0.0
    order = np.argsort(-np.abs(products), kind="stable")
    return {"kind": "dense", "inputs": pack(v), "weights": pack(w), "products": pack(products),
            "top": order[:top].tolist(), "rest_sum": float(products[order[top:]].sum()),
            "rest_count": int(max(0, products.size - top)),
            "sum": float(products.sum()), "bias": bias, "value": float(products.sum() + bias)}


def activation_formula(layer, v) -> tuple[str, float]:
    """The element-wise function a layer applies, as text, and its value at ``v``."""
    name = type(layer).__name__
    if name == "ReLU":
        return "max(0, x)", max(0.0, v)
    if name == "LeakyReLU":
        a = float(layer.alpha)
        return f"x if x > 0 else {a:g} * x", v if v > 0 else a * v
    if name == "Tanh":
        return "tanh(x)", float(np.tanh(v))
    if name == "Sigmoid":
        return "1 / (1 + exp(-x))", float(1 / (1 + np.exp(-v)))
    return name, None


def unit_detail(model, x, layer_name, channel, y=0, x_pos=0) -> dict:
    """The numbers behind one output unit of any layer, with the model's own value for comparison.

    Every detail carries ``value`` (recomputed from its parts) and ``model_value`` (what the
    forward pass gave): the page shows both, and tests check they agree.
    """
    layer = model[layer_name]
    _check_unit(layer, channel, y, x_pos)
    logits, acts = capture(model, x)
    out = acts[layer.name]
    model_value = float(out[y, x_pos, channel] if out.ndim == 3 else out[channel])
    inp = layer_input(model, np.asarray(x, np.float32), acts, layer)
    kind = layer_kind(layer) if inp is not None else "other"
    if kind == "conv":
        detail = conv_unit(layer, inp, channel, y, x_pos)
    elif kind == "pool":
        detail = pool_unit(layer, inp, channel, y, x_pos)
    elif kind == "dense":
        detail = dense_unit(layer, inp, channel)
    elif kind == "norm":
        mean, var = float(layer.buffers["running_mean"][channel]), float(layer.buffers["running_var"][channel])
        gamma, beta = float(layer.params["gamma"][channel]), float(layer.params["beta"][channel])
        xin = float(inp[y, x_pos, channel] if inp.ndim == 3 else inp[channel])
        x_hat = (xin - mean) / np.sqrt(var + layer.eps)
        detail = {"kind": "norm", "input": xin, "mean": mean, "var": var, "eps": layer.eps, "x_hat": float(x_hat),
                  "gamma": gamma, "beta": beta, "value": float(gamma * x_hat + beta)}
    elif kind == "activation" and inp.shape == out.shape:
        xin = float(inp[y, x_pos, channel] if inp.ndim == 3 else inp[channel])
        formula, value = activation_formula(layer, xin)
        detail = {"kind": "activation", "function": type(layer).__name__, "input": xin, "formula": formula,
                  "value": model_value if value is None else value}
    else:
        detail = {"kind": kind, "value": model_value}
    detail.update(layer=layer.name, layer_class=type(layer).__name__, channel=channel, y=y, x=x_pos,
                  model_value=model_value)
    if len(layer.output_shape) == 3 and len(model.input_shape) == 3:
        detail["receptive_field"] = receptive_field(model, layer, y, y, x_pos, x_pos)
    return detail


# ---------------------------------------------------------------------------
# Why it works
# ---------------------------------------------------------------------------
def first_conv(model):
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            return layer
    raise ValueError(f"the model has no Conv2D layer; its layers are {[l.name for l in model.layers]}")


def filters_view(model, examples, k=4) -> dict:
    """Each first-layer filter with its ``k`` most activating patches of ``examples`` and their cosine
    similarity with the kernel (``cnnlab.explain.top_patches``: matched filtering)."""
    from ..explain import top_patches
    layer = first_conv(model)
    if model.layers.index(layer) != 0:
        raise ValueError(f"the first convolution {layer.name!r} is not the model's first layer")
    if getattr(layer, "groups", 1) != 1:
        raise ValueError(f"the first convolution {layer.name!r} is grouped; top patches need an ungrouped one")
    res = top_patches(layer, np.asarray(examples, np.float32), k=k, random_patches=500)
    return {"layer": layer.name, "filters": [
        {"index": r["index"], "kernel": pack(r["kernel"]), "bias": r["bias"],
         "mean_top_cosine": r["mean_top_cosine"], "random_cosine_mean": r["random_cosine_mean"],
         "top": [{"image": t["image"], "row": t["row"], "col": t["col"], "activation": t["activation"],
                  "cosine": t["cosine"], "patch": pack(t["patch"])} for t in r["top_patches"]]}
        for r in res]}


def saliency_view(model, x, class_index=None) -> dict:
    """Gradient saliency and Grad-CAM of a class (default: the predicted one) over the image."""
    from ..explain import grad_cam, gradient_saliency
    logits, _ = capture(model, x)
    k = int(np.argmax(logits)) if class_index is None else int(class_index)
    if not 0 <= k < model.num_classes:
        raise ValueError(f"class must be in [0, {model.num_classes - 1}], received {class_index!r}")
    out = {"class_index": k, "saliency": pack(gradient_saliency(model, x, k))}
    try:
        cam = grad_cam(model, x, k)
        out["grad_cam"] = pack(cam["map"])
        out["grad_cam_layer"] = cam["layer"]
    except ValueError as e:                      # no convolution: saliency only, and why
        out["grad_cam_error"] = str(e)
    return out


def shift_view(model, x, dy, dx) -> dict:
    """The image shifted by ``(dy, dx)`` pixels (``cnnlab.explain.shift_images``), the first conv
    layer's maps and the features before the classifier, for the shifted and the original image."""
    from ..explain import shift_images
    h, w = model.input_shape[:2]
    if not (abs(dy) < h and abs(dx) < w):
        raise ValueError(f"shift must be smaller than the image ({h}x{w}), received dy={dy}, dx={dx}")
    x = np.asarray(x, np.float32)
    moved = shift_images(x[None], dy, dx)[0]
    conv = first_conv(model)
    flat = [l for l in model.layers if len(l.output_shape) == 1]
    feats = flat[0] if flat else model.layers[-1]           # the first flat layer: the pooled features
    out = {"dy": dy, "dx": dx, "image": pack(moved), "conv_layer": conv.name, "features_layer": feats.name}
    for key, img in (("shifted", moved), ("original", x)):
        logits, acts = capture(model, img)
        out[key] = {"conv": pack(acts[conv.name], "base64"), "features": np.asarray(acts[feats.name]).ravel().tolist(),
                    "probabilities": softmax(np.asarray(logits, np.float64)[None])[0].tolist()}
    a, b = np.asarray(out["shifted"]["features"]), np.asarray(out["original"]["features"])
    out["features_change"] = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))
    return out
