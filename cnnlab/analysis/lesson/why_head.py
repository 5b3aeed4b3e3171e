r"""Steps 9 and 11: sub-sampling, and the classifier on top.

Step 9 puts the three ways to shrink a map side by side on a real feature map of the current input (the
map the model's first sub-sampling layer receives): keep one pixel of each ``p x p`` window
(``Subsample``), its average (``AvgPool2D``), its maximum (``MaxPool2D``), each computed by the
project's layer (:func:`..equivariance.pooled`); the model's own layer's output is shown beside them.
How much of a shift each absorbs is *measured* on this model: the relative change of the pooled map
when the input moves right by 0..4 pixels (:func:`..equivariance.pooling_shift_change`).

Step 11 follows the numbers from the last map to the answer: each stage's shape (flatten or global
average, the dense layers), the logits ``z`` and, for a softmax head, ``p_k = exp(z_k) / sum_j exp(z_j)``;
for a multiclass SVM head (hinge loss) the scores themselves, the largest winning.
"""
from __future__ import annotations

import numpy as np

from .. import texts
from ..equivariance import POOL_KINDS, first_feature_layer, layer_maps, pooled, pooling_layers, pooling_shift_change
from ..layers import capture, first_conv, kind, layer_input
from ...layers import AvgPool2D, MaxPool2D, Subsample
from ...losses import softmax
from .base import not_applicable

SHIFTS = (0, 1, 2, 3, 4)
KIND_OF = {MaxPool2D: "max", AvgPool2D: "average", Subsample: "subset"}
LABELS = {"none": "no sub-sampling", "subset": "keep one pixel", "average": "average", "max": "maximum"}


def pooling(ctx) -> dict:
    """Step 9 (module docstring)."""
    model = ctx.model
    if first_conv(model, required=False) is None:
        return not_applicable(texts.lesson_no_conv("feature maps to sub-sample"))
    pools = pooling_layers(model)
    window = next((l for l in pools if type(l) in KIND_OF), None)
    logits, acts = capture(model, ctx.x)
    if window is not None:
        maps = layer_input(model, np.asarray(ctx.x, np.float32), acts, window)
        p = int(window.pool_size[0] if hasattr(window, "pool_size") else window.stride[0])
        own, own_kind = np.asarray(acts[window.name]), KIND_OF[type(window)]
        name = window.name
    else:
        maps, p, own, own_kind = None, 2, None, None
    if maps is None:                                    # no window pooling (or it reads a sum): the first map
        name, own, own_kind, window = first_feature_layer(model), None, None, None
        maps = acts[name]
    maps = np.asarray(maps, np.float32)
    c = int(np.argmax(np.abs(maps).reshape(-1, maps.shape[-1]).sum(axis=0)))
    shown = {k: pooled(maps[None], k, p)[0] for k in ("subset", "average", "max")}
    source = _source_name(model, window) if window is not None else name
    fn = layer_maps(model, source)
    shifts = tuple(s for s in SHIFTS if s < model.input_shape[1])
    change = pooling_shift_change(fn, np.asarray(ctx.x, np.float32)[None], pool=p, shifts=shifts)
    items = [{"label": f"the map ({maps.shape[0]}x{maps.shape[1]}), channel {c}", "map": maps[..., c]}]
    for k in ("subset", "average", "max"):
        m = shown[k][..., c]
        items.append({"label": f"{LABELS[k]} of each {p}x{p} ({m.shape[0]}x{m.shape[1]})"
                               + (f": what {window.name} does" if k == own_kind else ""), "map": m})
    one = min(1, len(shifts) - 1)
    numbers = {"pool": p, "map_size": [int(maps.shape[0]), int(maps.shape[1])],
               "pooled_size": [int(shown["max"].shape[0]), int(shown["max"].shape[1])],
               "pooling_layers": len(pools), "change": {k: [float(v) for v in change[k]] for k in POOL_KINDS},
               "shifts": list(shifts)}
    if own is not None:
        numbers["own_difference"] = float(np.abs(shown[own_kind] - own).max())
    figures = [{"kind": "maps", "signed": False, "items": items, "label": f"{source}: one map, sub-sampled three ways",
                "alt": f"Channel {c} of the {maps.shape[0]}x{maps.shape[1]} map and its {p}x{p} subset, average and "
                       f"maximum, each {shown['max'].shape[0]}x{shown['max'].shape[1]}."},
               {"kind": "curve", "x": list(shifts), "xlabel": "input shifted right by (pixels)",
                "ylabel": "relative change of the map", "series": [{"name": LABELS[k], "y": numbers["change"][k]}
                                                                   for k in POOL_KINDS],
                "alt": "Relative change after a 1-pixel shift: " + ", ".join(
                    f"{LABELS[k]} {change[k][one]:.0%}" for k in POOL_KINDS) + "."}]
    area = p * p
    paragraphs = [texts.lesson_subsampling(p, maps.shape[:2], shown["max"].shape[:2], area, own=window is not None),
                  texts.pooling_sentence(len(pools), change, shift=one)]
    best = min(("subset", "average", "max"), key=lambda k: change[k][one])
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures,
            "predict": {"question": "The input moves 1 pixel right. Which sub-sampled map changes least?",
                        "choices": [LABELS[k] for k in ("subset", "average", "max")],
                        "answer": ("subset", "average", "max").index(best),
                        "reveal": f"Measured on this input: {LABELS[best]} ({change[best][one]:.0%})."},
            "link": {"view": "why"}}


def _source_name(model, layer):
    """The name of the layer whose output ``layer`` reads (its input maps)."""
    from ..layers import sources
    src = sources(model, layer)
    if len(src) != 1 or src[0] is None:
        return first_feature_layer(model)
    return src[0].name


# ---------------------------------------------------------------------------
# Step 11
# ---------------------------------------------------------------------------
def classifier(ctx) -> dict:
    """Step 11 (module docstring)."""
    model = ctx.model
    logits, acts = capture(model, ctx.x)
    z = np.asarray(logits, np.float64).ravel()
    names = list(ctx.class_names) if len(ctx.class_names or []) == len(z) else [str(i) for i in range(len(z))]
    head = [l for l in model.layers if len(l.output_shape) == 1]
    rows = [[l.name, type(l).__name__, "\u00d7".join(map(str, l.output_shape)), f"{l.num_params:,}"] for l in head]
    first = head[0] if head else None
    svm = getattr(model.loss, "name", "softmax") == "svm"
    k = int(np.argmax(z))
    numbers = {"logits": z.tolist(), "predicted": k, "stages": len(head),
               "features": int(first.output_shape[0]) if first is not None else int(z.size)}
    if svm:
        second = float(np.sort(z)[-2]) if z.size > 1 else float("nan")
        numbers.update(margin=float(z[k] - second))
        bars = {"kind": "bars", "labels": names, "values": z.tolist(), "label": "scores (multiclass SVM)",
                "alt": f"Scores: {names[k]} is largest ({z[k]:.2f}), {z[k] - second:.2f} above the next."}
        text = texts.lesson_svm_head(names[k], z[k] - second)
    else:
        prob = softmax(z[None])[0]
        numbers.update(probabilities=prob.tolist(), probability=float(prob[k]))
        bars = {"kind": "bars", "labels": names, "values": prob.tolist(), "label": "probabilities (softmax of the logits)",
                "alt": f"Probabilities: {names[k]} {prob[k]:.1%}" + "".join(
                    f", {names[j]} {prob[j]:.1%}" for j in np.argsort(prob)[::-1][1:3]) + "."}
        text = texts.lesson_softmax_head(names[k], float(prob[k]), float(z[k]))
    flat_kind = kind(first) if first is not None else "dense"
    from_maps = len(model.input_shape) == 3 and first is not None and first is not model.layers[0]
    paragraphs = [texts.lesson_head(type(first).__name__ if first is not None else "", flat_kind,
                                    numbers["features"], sum(1 for l in head if kind(l) == "dense"), from_maps), text]
    figures = [{"kind": "table", "header": ["layer", "type", "output", "parameters"], "rows": rows,
                "alt": "The classifier's stages: " + "; ".join(f"{r[0]} {r[2]}" for r in rows) + "."},
               {"kind": "bars", "labels": names, "values": z.tolist(), "label": "logits z (the last layer's outputs)",
                "alt": f"Logits: the largest is {names[k]} ({z[k]:.2f})."}, bars]
    last = head[-1] if head else model.layers[-1]
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures,
            "link": {"view": "unit", "layer": last.name, "c": k, "y": 0, "x": 0}}
