r"""Steps 1-3: an image as a vector, one neuron on one patch, the same neuron at every position.

Step 1: an ``H x W x C`` image is ``n = H*W*C`` numbers to a multilayer perceptron; one dense layer of ``N``
units on it has ``n * N`` weights, one per pixel and unit, so each unit is a template of the whole image
tied to positions (drawn from the trained MLP companion, ``ctx.companions["mlp"]``).

Step 2: the first convolution's unit ``(y, x, f)`` where ``ctx.x`` answers most,
``out = b_f + sum_{i, j, c} k[i, j, c, f] * patch[i, j, c]`` term by term (:func:`cnnlab.analysis.units.unit`),
then the ReLU.

Step 3: the formula the layer computes at every position, with its numbers, the output size by the
layer's own geometry, and the parameters of the shared kernel against the equivalent dense layer's
(:func:`cnnlab.analysis.convolution.expected_nonzeros` for the connections a window keeps).
"""
from __future__ import annotations

import numpy as np

from ...layers import Dense
from ...layers.geometry import window_geometry
from .. import texts
from ..convolution import expected_nonzeros
from ..equivariance import shift
from ..shifts import relative_change
from ..layers import sources
from .base import companion
from .how_common import first_layer, is_image_model, kernel_picture, map_picture

DEFAULT_UNITS = 100     # the dense layer's width when the model has none
TEMPLATES = 8           # MLP units drawn
MLP_SHIFT = 3           # pixels the input moves to show the MLP's templates are tied to positions


def _first_dense(model):
    return next((l for l in model.layers if isinstance(l, Dense)), None)


def vector(ctx) -> dict:
    """Step 1: the input's size, the weights of one dense layer on it, the MLP's first-layer templates."""
    model = ctx.model
    if not is_image_model(model):
        return {"paragraphs": [texts.lesson_no_images(tuple(model.input_shape))]}
    h, w, c = model.input_shape
    n = h * w * c
    dense = _first_dense(model)
    units = dense.units if dense is not None else DEFAULT_UNITS
    conv = first_layer(ctx)
    conv_params = None if isinstance(conv, dict) else int(sum(v.size for v in conv.layer.params.values()))
    numbers = {"height": h, "width": w, "channels": c, "inputs": n, "units": units, "dense_weights": n * units}
    if conv_params is not None:
        numbers["conv_params"] = conv_params
    figures = [{"kind": "maps", "items": [{"label": f"the input: {n} numbers", "map": map_picture(ctx.x)}],
                "signed": False, "alt": f"The input, {h} by {w} pixels and {c} channel(s): {n} numbers."}]
    paragraphs = [texts.lesson_vector(h, w, c, units, dense is not None, conv_params)]
    mlp, why = companion(ctx, "mlp")
    templates = _templates(mlp, ctx.x) if mlp is not None else None
    if isinstance(templates, str):
        why, templates = templates, None
    if templates is None:
        paragraphs.append(why)
    else:
        numbers.update(mlp_units=templates["units"], mlp_shift=MLP_SHIFT, mlp_shift_change=templates["change"])
        paragraphs.append(texts.lesson_mlp_templates(templates["units"], MLP_SHIFT, templates["change"]))
        figures.append({"kind": "maps", "signed": True, "shared": False, "items": templates["items"],
                        "alt": f"The first-layer weights of {len(templates['items'])} of the MLP's "
                               f"{templates['units']} units, each drawn as a {h} by {w} picture."})
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures, "link": {"view": "overview"}}


def _templates(mlp, x):
    """The MLP's first dense layer: the units answering ``x`` most, their weights as pictures, and how much
    all its units' responses change when ``x`` moves by ``MLP_SHIFT`` pixels; or why not."""
    dense = _first_dense(mlp)
    x = np.asarray(x, np.float64)
    if dense is None or dense.params["kernel"].shape[0] != x.size or tuple(mlp.input_shape) != x.shape:
        return texts.lesson_companion_missing("mlp")
    kern = np.asarray(dense.params["kernel"], np.float64)
    response = x.reshape(-1) @ kern
    moved = shift(x[None], MLP_SHIFT, MLP_SHIFT)[0].reshape(-1) @ kern
    change = relative_change(moved, response)
    best = np.argsort(-response, kind="stable")[:TEMPLATES]
    items = [{"label": f"unit {u}: {response[u]:.2f}", "map": kernel_picture(kern[:, u].reshape(x.shape))}
             for u in best]
    return {"units": int(kern.shape[1]), "change": change, "items": items}


def _after(model, layer) -> str | None:
    """The class name of the one layer reading ``layer``'s output, or ``None``."""
    readers = [l for l in model.layers if any(s is layer for s in sources(model, l))]
    return type(readers[0]).__name__ if len(readers) == 1 else None


def neuron(ctx) -> dict:
    """Step 2: one unit of the first convolution, where ``ctx.x`` answers most, term by term."""
    got = first_layer(ctx)
    if isinstance(got, dict):
        return got
    d, layer, f, y, x = got.detail(ctx), got.layer, got.f, got.y, got.x
    products = np.asarray(d["products"], np.float64)
    c = int(np.argmax(np.abs(products.sum(axis=(0, 1))))) if products.shape[2] > 1 else 0
    channels = products.shape[2]
    after = _after(ctx.model, layer)
    relu = max(0.0, d["value"])
    numbers = {"filter": f, "y": y, "x": x, "sum": d["sum"], "bias": d["bias"], "value": d["value"],
               "model_value": d["model_value"], "difference": abs(d["value"] - d["model_value"]), "relu": relu}
    which = f" (channel {c} of {channels})" if channels > 1 else ""
    figures = [
        {"kind": "grid", "values": d["kernel"][:, :, c], "label": f"kernel of filter {f}{which}",
         "alt": f"The {layer.kernel_size[0]} by {layer.kernel_size[1]} weights of filter {f}{which}."},
        {"kind": "grid", "values": d["patch"][:, :, c], "label": f"the patch at row {y}, column {x}{which}",
         "alt": f"The input pixels under the kernel at row {y}, column {x}{which}."},
        {"kind": "grid", "values": products.sum(axis=2), "label": "kernel times patch"
                                                                    + (", summed over channels" if channels > 1 else ""),
         "alt": f"The products; they sum to {d['sum']:.4f}, plus the bias {d['bias']:.4f}: {d['value']:.4f}."}]
    paragraphs = texts.lesson_neuron(layer.name, f, y, x, tuple(layer.kernel_size), channels, d["sum"], d["bias"],
                                     d["value"], d["model_value"], "bias" in layer.params, after)
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures, "link": got.link}


def convolution(ctx) -> dict:
    """Step 3: the formula at every position with this layer's numbers, and shared against dense weights."""
    got = first_layer(ctx)
    if isinstance(got, dict):
        return got
    layer, inp, f, y, x = got.layer, got.inp, got.f, got.y, got.x
    h, w, c = inp.shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation
    pads, (ho, wo) = window_geometry((h, w), layer.kernel_size, layer.strides, layer.padding, layer.dilation)
    kernel = layer.params["kernel"]
    filters = kernel.shape[3]
    conv_params = int(sum(v.size for v in layer.params.values()))
    dense_weights = h * w * c * ho * wo * filters
    window_weights = expected_nonzeros((h, w, c), kernel.shape, layer.strides, layer.padding, layer.dilation,
                                       layer.groups)
    numbers = {"kernel_h": kh, "kernel_w": kw, "channels": c, "filters": filters, "stride_h": sh, "stride_w": sw,
               "pad_top": pads[0], "pad_bottom": pads[1], "pad_left": pads[2], "pad_right": pads[3],
               "dilation_h": dh, "dilation_w": dw, "input_h": h, "input_w": w, "output_h": ho, "output_w": wo,
               "conv_params": conv_params, "dense_weights": dense_weights, "window_weights": window_weights}
    paragraphs = texts.lesson_convolution(layer.name, (kh, kw), c // layer.groups, filters, (sh, sw), pads, (dh, dw),
                                          (h, w), (ho, wo), conv_params, dense_weights, window_weights)
    figures = [{"kind": "stepper", "layer": layer.name, "channel": f, "y": y, "x": x,
                "alt": f"Filter {f} of {layer.name} stepped over every position of its {h} by {w} input, filling "
                       f"its {ho} by {wo} map."},
               {"kind": "table", "header": ["the same map computed by", "weights"],
                "rows": [["the convolution (shared kernel)", conv_params],
                         ["a dense layer, only the window connections kept", window_weights],
                         ["a dense layer", dense_weights]],
                "alt": f"Weights: convolution {conv_params}, window connections {window_weights}, "
                       f"dense {dense_weights}."}]
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures, "link": got.link,
            "predict": _size_question(layer, (h, w), (ho, wo))}


def _size_question(layer, input_hw, output_hw):
    """"How large is the map?": the layer's own size against the input's and those of no padding and of
    stride 1 (each computed by the same geometry); ``None`` when they all agree."""
    sizes = [tuple(output_hw), tuple(input_hw)]
    for padding, strides in (("valid", layer.strides), (layer.padding, (1, 1))):
        try:
            sizes.append(window_geometry(input_hw, layer.kernel_size, strides, padding, layer.dilation)[1])
        except ValueError:                       # the kernel does not fit without padding
            pass
    choices = sorted(set(sizes))
    if len(choices) < 2:
        return None
    def name(s):
        return f"{s[0]}\u00d7{s[1]}"
    return {"question": f"The input is {name(input_hw)}. How large is the map {layer.name} gives?",
            "choices": [name(s) for s in choices], "answer": choices.index(tuple(output_hw)),
            "reveal": texts.lesson_map_size(layer.name, input_hw, output_hw)}


__all__ = ["vector", "neuron", "convolution"]
