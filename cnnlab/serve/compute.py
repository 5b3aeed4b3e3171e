"""What the explorer's pages show, computed with NumPy: no web framework in this file.

Every function takes a cnnlab model and plain arrays and returns JSON-ready
dicts (numbers, lists, or arrays packed by :func:`pack`). The numbers come from
``cnnlab.analysis`` (one implementation each, shared with ``cnnlab explain``):
layer outputs and inputs, one unit down to its terms (``units.unit``), the
most activating patches (``top_patches``), gradient saliency, Grad-CAM,
shifted inputs, and the sentences that describe them.

A unit of a layer is addressed as ``(channel, y, x)`` for feature maps
``(H, W, C)`` and ``(channel,)`` (``y = x = 0``) for flat outputs ``(units,)``.
"""
from __future__ import annotations

import base64

import numpy as np

from ..analysis import texts
from ..analysis.attribution import check_class, grad_cam, gradient_saliency
from ..analysis.layers import capture, first_conv, kind as layer_kind, sources
from ..analysis.maximize import optimum
from ..analysis.patches import top_patches
from ..analysis.shifts import shift_response
from ..analysis.units import unit
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


def jsonable(v, small=4096):
    """``v`` with every NumPy array packed (:func:`pack`: nested lists up to ``small`` values, base64
    above) and NumPy scalars made plain, through dicts, lists and tuples."""
    if isinstance(v, np.ndarray):
        return pack(v, "list" if v.size <= small else "base64")
    if isinstance(v, dict):
        return {str(k): jsonable(x, small) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x, small) for x in v]
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    return v


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
def describe(model, class_names=None) -> dict:
    """``{"name", "input_shape", "class_names", "num_params", "layers": [...]}``.

    Each layer: ``name``, ``class``, ``kind`` (``cnnlab.analysis.layers.kind``), ``inputs`` (the layers it reads,
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
def unit_detail(model, x, layer_name, channel, y=0, x_pos=0) -> dict:
    """The numbers behind one output unit of any layer (``cnnlab.analysis.units.unit``), arrays packed.

    ``value`` is recomputed from its parts and ``model_value`` is what the forward pass gave: the page
    shows both, and tests check they agree.
    """
    detail = unit(model, x, layer_name, channel, y, x_pos)
    return {k: pack(v) if isinstance(v, np.ndarray) else v for k, v in detail.items()}


def unit_optimum(model, x, layer_name, channel, y=None, x_pos=None) -> dict:
    """What one unit looks for: the input of ``x``'s norm that excites it most (``analysis.maximize.optimum``,
    at map position ``(y, x_pos)``, default the centre), its value there, on ``x`` and on random inputs of
    that norm, and ``sentence`` (``analysis.texts.unit_optimum``)."""
    position = None if y is None or len(model[layer_name].output_shape) != 3 else (y, x_pos or 0)
    r = optimum(model, layer_name, channel, x, position)
    what = f"unit ({channel}, {r['position'][0]}, {r['position'][1]})" if r["position"] else f"unit {channel}"
    return {"layer": layer_name, "channel": channel, "position": r["position"] and list(r["position"]),
            "image": pack(r["image"]), "value": r["value"], "input_value": r["input_value"],
            "random_values": r["random_values"].tolist(), "radius": r["radius"], "jitter": r["jitter"],
            "optimised": r["optimised"], "trace": r["values"].tolist(),
            "sentence": texts.unit_optimum(f"{layer_name} {what}", r["value"], r["input_value"],
                                           r["random_values"], r["radius"],
                                           None if r["optimised"] == layer_name else r["optimised"])}


# ---------------------------------------------------------------------------
# Why it works
# ---------------------------------------------------------------------------
def filters_view(model, examples, k=4) -> dict:
    """Each first-layer filter with its ``k`` most activating patches of ``examples`` and their cosine
    similarity with the kernel (``cnnlab.analysis.patches.top_patches``: matched filtering)."""
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
    logits, _ = capture(model, x)
    k = int(np.argmax(logits)) if class_index is None else check_class(model, class_index)
    out = {"class_index": k, "saliency": pack(gradient_saliency(model, x, k))}
    try:
        cam = grad_cam(model, x, k)
        out["grad_cam"] = pack(cam["map"])
        out["grad_cam_layer"] = cam["layer"]
    except ValueError as e:                      # no convolution: saliency only, and why
        out["grad_cam_error"] = str(e)
    return out


def shift_view(model, x, dy, dx) -> dict:
    """The image shifted by ``(dy, dx)`` pixels, the first conv layer's maps and the features before the
    classifier for the shifted and the original image (``cnnlab.analysis.shifts.shift_response``), and
    ``sentence``: what the shift did, in words chosen from the measured changes (``analysis.texts``)."""
    r = shift_response(model, x, dy, dx)
    out = {k: r[k] for k in ("dy", "dx", "conv_layer", "features_layer", "features_change", "probability_change",
                             "prediction_changed")}
    out["image"] = pack(r["image"])
    for key in ("shifted", "original"):
        out[key] = {"conv": pack(r[key]["conv"], "base64"), "features": r[key]["features"].tolist(),
                    "probabilities": r[key]["probabilities"].tolist()}
    out["sentence"] = texts.shift_change(dy, dx, r["features_change"], r["probability_change"],
                                         r["prediction_changed"], f"the features of {r['features_layer']}")
    return out
