r"""Steps 12 and 13: invariance measured, and what the model looks at.

Step 12 shifts the current input right and left by up to 8 pixels (zero fill,
:func:`..shifts.shift_images`) and measures, for the served model and the companions with global average
pooling (``"gap"``) and an MLP of similar size (``"mlp"``), the relative change of the features the
classifier reads (the input of the last layer with weights), ``||phi(T x) - phi(x)|| / ||phi(x)||``, and
whether the prediction stays; on the model's own test images (when at hand) the fraction of predictions
kept at each shift. The sentences come from :func:`..texts.invariance_sentence` and
:func:`..texts.invariance_verdict`.

Step 13: gradient saliency ``max_c |dS_k/dx|`` and Grad-CAM (:mod:`..attribution`) for the predicted
class, beside the same maps for the ``"untrained"`` companion (the sanity check of Adebayo et al.,
NeurIPS 2018: a map that hardly changes when the weights are randomised shows the input, not what the
model learned), with their Spearman rank correlation.
"""
from __future__ import annotations

import numpy as np

from .. import texts
from ..attribution import grad_cam, gradient_saliency
from ..layers import capture_batches, sources
from ..shifts import shift_images
from ...layers import Conv2D, MaxPool2D
from .base import companion, not_applicable
from .why_common import memo

SHIFTS = (-8, -6, -4, -2, -1, 0, 1, 2, 4, 6, 8)
N_TEST = 16
LABELS = {"cnn": "This model", "model": "This model", "cnn_gap": "The model with global average pooling", "mlp": "The MLP of similar size"}


def _lower(label):
    """A label inside a sentence: "This model" -> "this model", "The MLP ..." -> "the MLP ..."."""
    return label[:1].lower() + label[1:]


def features_name(model):
    """The layer whose output the model's last layer with weights reads (the classifier's features);
    ``None`` when that is the input itself."""
    weighted = [l for l in model.layers if l.params]
    if not weighted:
        return None
    src = sources(model, weighted[-1])
    return src[0].name if len(src) == 1 and src[0] is not None else None


def shift_curve(model, x, shifts):
    """``(feature change per shift, prediction kept per shift)`` of images ``x`` (N, H, W, C) shifted right by
    each of ``shifts`` (negative: left); the change is the mean over the images."""
    name = features_name(model)
    base_logits, base = capture_batches(model, x, [name] if name else [])
    f0 = (base[name] if name else x).reshape(len(x), -1).astype(np.float64)
    k0 = np.argmax(base_logits, axis=1)
    change, kept = [], []
    for s in shifts:
        xs = shift_images(x, 0, s)
        logits, caught = capture_batches(model, xs, [name] if name else [])
        f = (caught[name] if name else xs).reshape(len(x), -1).astype(np.float64)
        change.append(float(np.mean(np.linalg.norm(f - f0, axis=1) / np.maximum(np.linalg.norm(f0, axis=1), 1e-12))))
        kept.append(float(np.mean(np.argmax(logits, axis=1) == k0)))
    return change, kept


def invariance(ctx) -> dict:
    """Step 12 (module docstring)."""
    model = ctx.model
    if len(model.input_shape) != 3:
        return not_applicable("This model does not take images, so there is nothing to shift.")
    w = model.input_shape[1]
    shifts = [s for s in SHIFTS if abs(s) < w]
    # "cnn" (compared with the MLP by invariance_verdict as "the max-pooling CNN") only when it is one
    models, notes = {"cnn" if any(isinstance(l, MaxPool2D) for l in model.layers) else "model": model}, []
    for key, name in (("cnn_gap", "gap"), ("mlp", "mlp")):
        m, why = companion(ctx, name)
        if m is not None and tuple(m.input_shape) == tuple(model.input_shape):
            models[key] = m
        elif why:
            notes.append(why)
    x1 = np.asarray(ctx.x, np.float32)[None]
    test = np.asarray(ctx.data[1][0][:N_TEST], np.float32) if isinstance(ctx.data, tuple) else None
    curves, kept, on_input = {}, {}, {}
    for key, m in models.items():
        curves[key], on_input[key] = shift_curve(m, x1, shifts)
        if test is not None:
            # the test images do not change with the input: once per model (and per reloaded model)
            kept[key] = memo(m, ("kept", tuple(shifts), len(test)), lambda m=m: shift_curve(m, test, shifts)[1])
    sizes = sorted({abs(s) for s in shifts})

    def folded(values):
        """Mean over right and left shifts of the same size."""
        return [float(np.mean([v for s, v in zip(shifts, values) if abs(s) == a])) for a in sizes]

    served = next(iter(models))
    agreement = folded(kept[served]) if served in kept else folded(on_input[served])
    paragraphs = [texts.invariance_sentence(LABELS[served], sizes, folded(curves[served]), agreement)]
    largest = {key: folded(curves[key])[-1] for key in models}
    if len(models) > 1:
        paragraphs.append(texts.invariance_verdict(largest, {k: LABELS[k].split(" ", 1)[1] if k not in ("cnn", "model")
                                                             else "model served here" for k in models}))
    paragraphs += notes
    if test is None:
        paragraphs.append(texts.lesson_kept_on_input())
    numbers = {"shifts": shifts, "feature_change": {k: v for k, v in curves.items()},
               "kept_on_input": on_input, "kept": kept, "n_test": 0 if test is None else len(test),
               "largest_shift_change": largest}
    figures = [{"kind": "curve", "x": shifts, "xlabel": "input shifted right (pixels; negative: left)",
                "ylabel": "relative change of the classifier's features",
                "series": [{"name": LABELS[k], "y": curves[k]} for k in models],
                "alt": f"Feature change at the largest shift ({sizes[-1]} pixels, right and left averaged): " + ", ".join(
                    f"{_lower(LABELS[k])} {largest[k]:.0%}" for k in models) + "."}]
    if kept:
        figures.append({"kind": "curve", "x": shifts, "xlabel": "shift (pixels)",
                        "ylabel": f"predictions kept on {len(test)} test images",
                        "series": [{"name": LABELS[k], "y": kept[k]} for k in kept],
                        "alt": f"Predictions kept at the largest shift ({sizes[-1]} pixels, right and left averaged): "
                               + ", ".join(f"{_lower(LABELS[k])} {folded(kept[k])[-1]:.0%}" for k in kept) + "."})
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures,
            "predict": _predict(models, sizes, {k: folded(curves[k]) for k in models}),
            "link": {"view": "why"}}


def _predict(models, sizes, change):
    """Which model's features change least under a 4-pixel shift (or the largest one there is), measured."""
    i = sizes.index(min(4, sizes[-1]))
    keys = list(models)
    best = min(keys, key=lambda k: change[k][i])
    if len(keys) < 2:
        return {"question": f"Shift the input {sizes[i]} pixels: how much will the classifier's features change?",
                "choices": ["less than 10%", "10% to 50%", "more than 50%"],
                "answer": 0 if change[best][i] < 0.1 else 1 if change[best][i] < 0.5 else 2,
                "reveal": f"Measured on this input: {change[best][i]:.0%}."}
    return {"question": f"Shift the input {sizes[i]} pixels: whose features change least?",
            "choices": [LABELS[k] for k in keys], "answer": keys.index(best),
            "reveal": "Measured on this input: " + ", ".join(f"{_lower(LABELS[k])} {change[k][i]:.0%}"
                                                             for k in keys) + "."}


# ---------------------------------------------------------------------------
# Step 13
# ---------------------------------------------------------------------------
def ranks(a) -> np.ndarray:
    """The ranks of ``a``'s values (from 1), ties sharing the mean of their ranks."""
    a = np.asarray(a, np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    where = np.empty(a.size, np.int64)
    where[order] = np.arange(a.size)
    s = a[order]
    new = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(new)[where]                      # each value's group of equal values, from 1
    edges = np.r_[np.flatnonzero(new), a.size]          # where each group starts; the end
    return 0.5 * (edges[group - 1] + 1 + edges[group])  # mean of ranks start+1 .. end


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two maps: Pearson's correlation of their :func:`ranks`."""
    ra, rb = ranks(a), ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    d = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / d) if d > 0 else 0.0


def looks(ctx) -> dict:
    """Step 13 (module docstring)."""
    model = ctx.model
    if len(model.input_shape) != 3:
        return not_applicable("This model does not take images, so there is no map of where it looks.")
    x = np.asarray(ctx.x, np.float32)
    k = int(np.argmax(model.logits(x[None], workers=1)[0]))
    name = ctx.class_names[k] if k < len(ctx.class_names or []) else str(k)
    sal = gradient_saliency(model, x, k)
    has_conv = any(isinstance(l, Conv2D) for l in model.layers)
    cam = grad_cam(model, x, k)["map"] if has_conv else None
    items = [{"label": "gradient saliency", "map": sal}] + ([{"label": "Grad-CAM", "map": cam}] if cam is not None else [])
    numbers = {"class": k}
    u, why = companion(ctx, "untrained")
    paragraphs = [texts.lesson_saliency(name, cam is not None)]
    if u is not None:
        same = all(np.array_equal(a, b) for a, b in zip(_weights(model), _weights(u)))
        sal_u = gradient_saliency(u, x, k)
        items.append({"label": "saliency, random weights", "map": sal_u})
        rho = {"saliency": rank_correlation(sal, sal_u)}
        if cam is not None:
            cam_u = grad_cam(u, x, k)["map"]
            items.append({"label": "Grad-CAM, random weights", "map": cam_u})
            rho["grad_cam"] = rank_correlation(cam, cam_u)
        numbers["rank_correlation"] = rho
        paragraphs.append(texts.lesson_sanity_check(rho, same))
    else:
        paragraphs.append(why)
    figures = [{"kind": "maps", "signed": False, "shared": False, "items": items,     # each map on its own scale
                "label": f"where the score of {name} is sensitive, trained and with random weights",
                "alt": f"Saliency maps for class {name}" + (
                    "; rank correlation with the randomised model's: " + ", ".join(
                        f"{kk} {v:.2f}" for kk, v in numbers["rank_correlation"].items()) if "rank_correlation" in numbers
                    else "") + "."}]
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures, "link": {"view": "why"}}


def _weights(model):
    return [v for _, v in sorted(model.state_dict().items())]
