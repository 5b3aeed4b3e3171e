r"""Steps 5 and 6: every first-layer map of the current input, and what sharing one kernel buys.

Step 5: the first convolution's ``F`` maps of ``ctx.x`` (signed) beside its ``F`` kernels.

Step 6: equivariance, measured (:func:`cnnlab.analysis.equivariance.equivariance_error`): the map of the
input shifted by ``(d, d)`` against the map shifted by ``d / s`` (``s`` the layer's stride), away from the
border the padding and the shift reach; then the weight-sharing experiment of the companion
``ctx.companions["sharing"]`` (``{"conv"|"local"|"dense": {"params", "accuracy"}, "n_train"}``, the numbers of
``cnnlab explain weight-sharing``) as a table.
"""
from __future__ import annotations

import math

import numpy as np

from .. import texts
from ..equivariance import conv_border, equivariance_error, shift
from .base import companion
from .how_common import first_layer, kernel_picture, layer_fn, map_picture

SHIFT = 3               # pixels the input moves (rounded up to a multiple of the layer's stride)
SHARING = (("conv", "convolution (shared)"), ("local", "locally connected (untied)"), ("dense", "dense"))


def maps(ctx) -> dict:
    """Step 5: the first layer's maps of ``ctx.x`` and its kernels."""
    got = first_layer(ctx)
    if isinstance(got, dict):
        return got
    layer, inp, out, f, y, x = got.layer, got.inp, got.out, got.f, got.y, got.x
    ho, wo, filters = out.shape
    kern = np.asarray(layer.params["kernel"], np.float64)
    peaks = out.reshape(-1, filters).max(axis=0)
    numbers = {"filters": filters, "map_h": ho, "map_w": wo, "input_h": inp.shape[0], "input_w": inp.shape[1],
               "strongest": f, "strongest_max": float(out[y, x, f]),
               "active_fraction": float(np.mean(out > 0))}
    figures = [{"kind": "maps", "signed": True, "items": [{"label": f"map {k}: max {peaks[k]:.2f}", "map": out[:, :, k]}
                                                          for k in range(filters)],
                "alt": f"The {filters} feature maps of {layer.name}, each {ho} by {wo}; map {f} peaks highest "
                       f"({out[y, x, f]:.3f})."},
               {"kind": "maps", "signed": True, "shared": False, "size": 42,
                "items": [{"label": f"filter {k}", "map": kernel_picture(kern[..., k])} for k in range(filters)],
                "alt": f"The {filters} kernels of {layer.name}, {kern.shape[0]} by {kern.shape[1]} each."}]
    paragraphs = texts.lesson_maps(layer.name, filters, (ho, wo), inp.shape[:2], f, float(out[y, x, f]),
                                   numbers["active_fraction"])
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures, "link": got.link}


def sharing(ctx) -> dict:
    """Step 6: the maps move with the input (measured), and the weight-sharing experiment's table."""
    got = first_layer(ctx)
    if isinstance(got, dict):
        return got
    layer, inp, out, f = got.layer, got.inp, got.out, got.f
    sy, sx = layer.strides
    step = math.lcm(sy, sx)
    d = -(-SHIFT // step) * step                       # a whole number of map pixels on both axes
    my, mx = d // sy, d // sx
    x = np.asarray(ctx.x, np.float64)[None]
    fn = layer_fn(ctx.model, layer)
    border = conv_border(layer, inp.shape[:2])
    err = equivariance_error(fn, x, d, d, stride=(sy, sx), border=border)
    moved_map = np.asarray(fn(shift(x, d, d)), np.float64)[0, :, :, f]
    map_moved = shift(out[None], my, mx)[0, :, :, f]
    numbers = {"shift": d, "map_shift_y": my, "map_shift_x": mx, "border": border, "max_difference": err["max_abs"],
               "relative_difference": err["relative"], "filter": f}
    figures = [{"kind": "maps", "signed": False, "items": [
        {"label": "the input", "map": map_picture(x[0])},
        {"label": f"moved {d} px right and down", "map": map_picture(shift(x, d, d)[0])}],
        "alt": f"The input and the input moved {d} pixels right and down."},
        {"kind": "maps", "signed": True, "items": [
            {"label": f"map {f} of the moved input", "map": moved_map},
            {"label": f"map {f}, moved {my} down, {mx} right", "map": map_moved}],
         "alt": f"Map {f} of the moved input and map {f} moved: away from the border they differ by at most "
                f"{err['max_abs']:.2e} (relative {err['relative']:.1e})."}]
    paragraphs = [texts.lesson_equivariance(d, (my, mx), err["max_abs"], err["relative"], border)]
    experiment, why = companion(ctx, "sharing")
    if experiment is not None and not all(k in experiment for k, _ in SHARING):
        experiment, why = None, texts.lesson_companion_missing("sharing")
    if experiment is None:
        paragraphs.append(why)
    else:
        rows = [[label, int(experiment[k]["params"]), float(experiment[k]["accuracy"])] for k, label in SHARING]
        for k, _ in SHARING:
            numbers[f"{k}_params"] = int(experiment[k]["params"])
            numbers[f"{k}_accuracy"] = float(experiment[k]["accuracy"])
        numbers["n_train"] = int(experiment["n_train"])
        paragraphs.append(texts.lesson_sharing_result(experiment["n_train"],
                                                      {k: experiment[k]["params"] for k, _ in SHARING},
                                                      {k: experiment[k]["accuracy"] for k, _ in SHARING}))
        figures.append({"kind": "table", "header": ["layer", "parameters", "test accuracy"], "rows": rows,
                        "alt": "; ".join(f"{r[0]}: {r[1]} parameters, {100 * r[2]:.1f}%" for r in rows)})
    predict = {"question": f"The drawing moves {d} pixels right and down. What happens to each feature map?",
               "choices": ["It moves with the drawing, otherwise unchanged", "It changes its pattern",
                           "It stays where it was"],
               "answer": 0 if err["relative"] < texts.EXACT else 1,
               "reveal": texts.lesson_equivariance_reveal(err["max_abs"], err["relative"])}
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures, "predict": predict,
            "link": {"view": "why"}}
