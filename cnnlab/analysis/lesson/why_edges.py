r"""Steps 8 and 10: why the first layer ends up with edges, and what the layer after it builds from them.

Step 8 shows what each first-layer filter is (its orientation tuning, :func:`..filters.fourier_tuning`:
the kernel's spectral energy per orientation, 0 to 180 degrees; whether it is oriented,
:func:`..filters.oriented`; the average of the patches it answers most, :func:`..filters.top_patch_average`;
what training added, ``k - k0``) and why it becomes that: the kernel's gradient is a sum of the input's
patches weighted by the error at each position (:func:`..identities.kernel_gradient_from_patches`,
checked here against the layer's own backward pass on the current input), and the data's patches are
dominated by oriented components (:func:`..filters.patch_components`). Random filters are measured
through the weight-sharing companion's conv model trained with its convolution frozen.

Step 10 takes one unit of the second convolution: it sums over *all* first-layer maps,
``z = b + sum_m sum_{i,j} k[i, j, m] a_m[y + i, x + j]`` (each map's share is one term of
:func:`..units.conv_unit`'s ``channel_sums``), its receptive field in the input
(:func:`..layers.receptive_field`) and the input patches it answers most.
"""
from __future__ import annotations

import numpy as np

from .. import texts
from ..filters import ANGLES, oriented, patch_components, top_patch_average
from ..identities import kernel_gradient_from_patches
from ..layers import capture, capture_batches, first_conv, layer_inputs, receptive_field
from ..units import conv_unit
from ...layers import Conv2D
from .base import not_applicable
from .base import companion
from .why_common import channels_image, images, initial_kernel, memo, own_data

N_COMPONENTS = 8


def _data_components(ctx, kh, kw):
    x, _ = images(ctx, 1000)
    return memo(ctx.model, ("components", kh, kw, len(x)), lambda: patch_components(x, kh, kw, n=10000))


def edges(ctx) -> dict:
    """Step 8 (module docstring)."""
    model = ctx.model
    conv = first_conv(model, required=False)
    if conv is None:
        return not_applicable(texts.lesson_no_conv("filters to look at"))
    k = np.asarray(conv.params["kernel"], np.float64)
    kh, kw, c, f = k.shape
    k0, trained = initial_kernel(ctx)
    ori = oriented(k, initial=k0 if trained else None)
    curves = np.asarray(ori["curves"])
    curves = curves / np.maximum(curves.max(axis=1, keepdims=True), 1e-12)
    xs, source = images(ctx)
    first_reads_image = layer_inputs(model, conv, xs[:1]).shape == xs[:1].shape
    top = memo(model, ("top_average", len(xs)) if own_data(ctx) else None, lambda: top_patch_average(conv, layer_inputs(model, conv, xs), k=16)) \
        if first_reads_image else None
    figures = [{"kind": "maps", "signed": True, "label": "the learned filters",
                "items": [{"label": f"filter {j}: {'oriented' if ori['oriented'][j] else 'not oriented'}, "
                                    f"{ori['preferred'][j]:.0f}\u00b0", "map": channels_image(k[..., j])}
                          for j in range(f)],
                "alt": f"The {f} filters of {conv.name}; {ori['count']} are oriented."},
               {"kind": "curve", "x": ANGLES.tolist(), "xlabel": "contour angle (degrees)",
                "ylabel": "energy along that orientation (of the filter's largest)",
                "series": [{"name": f"filter {j}", "y": curves[j].tolist()} for j in range(f)],
                "alt": "Orientation tuning of each filter, its preferred angle (the tuning curve's circular mean): "
                       + ", ".join(f"filter {j} {ori['preferred'][j]:.0f}\u00b0" for j in range(f)) + "."}]
    if top is not None:
        figures.append({"kind": "maps", "signed": False, "label": f"average of the 16 patches each filter answers most "
                                                                   f"({source})",
                        "items": [{"label": f"filter {j}", "map": channels_image(top[j])} for j in range(f)],
                        "alt": f"Average of each filter's 16 most activating patches among {source}."})
    numbers = {"filters": f, "oriented": ori["count"], "threshold": float(ori["threshold"]),
               "selectivity": [float(v) for v in ori["selectivity"]], "trained": trained}
    paragraphs = [texts.filters_sentence(ori["count"], f, trained=trained, initial_known=k0 is not None)]
    if trained and k0 is not None:
        added = k - k0
        change = float(np.linalg.norm(added) / max(np.linalg.norm(k0), 1e-12))
        numbers["added_relative"] = change
        figures.append({"kind": "maps", "signed": True,
                        "label": f"what training added: kernel minus its initial value ({change:.0%} of its size)",
                        "items": [{"label": f"filter {j}", "map": channels_image(added[..., j])} for j in range(f)],
                        "alt": f"Kernel minus its initial value; its size is {change:.0%} of the initial kernel's."})
    # the gradient identity on the current input, checked against the layer's own backward pass
    check = _gradient_check(model, conv, ctx.x)
    if check is not None:
        numbers.update(gradient_positions=check["positions"], gradient_difference=check["difference"])
        paragraphs.append(texts.lesson_gradient_identity(check["positions"], check["difference"]))
    if first_reads_image and isinstance(ctx.data, tuple):
        comps, ratio = _data_components(ctx, kh, kw)
        m = min(N_COMPONENTS, comps.shape[-1])
        figures.append({"kind": "maps", "signed": True, "label": f"the principal components of the data's {kh}x{kw} patches",
                        "items": [{"label": f"component {i + 1}: {ratio[i]:.0%} of the variance",
                                   "map": channels_image(comps[..., i])} for i in range(m)],
                        "alt": f"The first {m} principal components of {kh}x{kw} patches of the model's images; "
                               f"the first explains {ratio[0]:.0%} of their variance."})
        comp_ori = oriented(comps[..., :m])
        numbers.update(component_variance=[float(v) for v in ratio[:m]], components_oriented=comp_ori["count"])
        said = texts.lesson_components(comp_ori["count"], m, kh, kw)
        if comp_ori["count"] >= texts.PCA_ORIENTED * m:      # the explanation holds: it is part of the text
            paragraphs.append(said)
        else:                                               # it does not: said under the figure (within ~120 words)
            figures[-1]["alt"] += " " + said
    sharing, why = companion(ctx, "sharing")
    if sharing is not None and "random_filters" in sharing:
        chance = 1.0 / max(2, model.num_classes)
        numbers.update(random_filters_accuracy=sharing["random_filters"]["accuracy"],
                       learned_filters_accuracy=sharing["conv"]["accuracy"])
        paragraphs.append(texts.lesson_random_filters(sharing["n_train"], sharing["conv"]["accuracy"],
                                                      sharing["random_filters"]["accuracy"], chance))
    else:
        paragraphs.append(why)
    best = int(np.argmax(ori["selectivity"]))
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures,
            "predict": {"question": "Before you look: which contour angle does the most selective filter answer most?",
                        "choices": ["horizontal (0\u00b0)", "diagonal (45\u00b0)", "vertical (90\u00b0)",
                                    "diagonal (135\u00b0)"],
                        "answer": int(np.round(ori["preferred"][best] / 45.0)) % 4,
                        "reveal": f"Filter {best} prefers contours at {ori['preferred'][best]:.0f}\u00b0."},
            "link": {"view": "why"}}


def _gradient_check(model, conv, x):
    """The first convolution's kernel gradient for this input (loss: cross-entropy with the predicted class),
    by the layer's backward pass and as the sum of the input's patches weighted by the error."""
    if conv.groups != 1:
        return None
    x1 = np.asarray(x, np.float32)[None]
    logits = model.logits(x1, workers=1)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    dlogits = p.astype(np.float32)
    dlogits[0, int(np.argmax(p))] -= 1.0                       # dL/dlogits of cross-entropy with the predicted class
    inp = layer_inputs(model, conv, x1)
    dy = np.asarray(model.input_gradient(x1, dlogits, at=conv.name), np.float64)
    by_patches = kernel_gradient_from_patches(conv, inp, dy)
    conv.forward(np.asarray(inp, np.float32), training=True)
    conv.backward(np.asarray(dy, np.float32))
    by_layer = np.asarray(conv.grads["kernel"], np.float64)
    scale = max(float(np.abs(by_layer).max()), 1e-12)
    return {"positions": int(dy.shape[1] * dy.shape[2]), "difference": float(np.abs(by_patches - by_layer).max() / scale)}


# ---------------------------------------------------------------------------
# Step 10
# ---------------------------------------------------------------------------
TOP = 6


def parts(ctx) -> dict:
    """Step 10 (module docstring)."""
    model = ctx.model
    convs = [l for l in model.layers if isinstance(l, Conv2D)]
    if len(convs) < 2:
        return not_applicable(texts.lesson_no_second_conv(len(convs)))
    first, second = convs[0], convs[1]
    logits, acts = capture(model, ctx.x)
    a = np.asarray(acts[second.name], np.float64)
    c = int(np.argmax(a.reshape(-1, a.shape[-1]).max(axis=0)))
    y, x = (int(v) for v in np.unravel_index(int(np.argmax(a[..., c])), a.shape[:2]))
    inp = layer_inputs(model, second, np.asarray(ctx.x, np.float32)[None])[0]
    unit = conv_unit(second, inp, c, y, x)
    shares = np.asarray(unit["channel_sums"], np.float64)
    box = receptive_field(model, second, y, y, x, x)
    rf = (box["bottom"] - box["top"] + 1, box["right"] - box["left"] + 1)
    xs, source = images(ctx)
    top = memo(model, ("second_top", second.name, len(xs)) if own_data(ctx) else None, lambda: _top_boxes(model, second, xs))[c]
    kh, kw, cin, _ = second.params["kernel"].shape
    honest, angles = _corner_rule(ctx, first, second, shares, unit["channels"])
    numbers = {"channel": c, "y": y, "x": x, "value": float(unit["value"]), "maps_summed": int(cin),
               "weights": int(kh * kw * cin), "receptive_field": [int(rf[0]), int(rf[1])],
               "channel_sums": shares.tolist()}
    figures = [{"kind": "bars", "labels": [f"map {m}" for m in unit["channels"]], "values": shares.tolist(),
                "label": f"what each first-layer map adds to unit {c} of {second.name} at ({y}, {x})",
                "alt": f"Unit {c} of {second.name} at ({y}, {x}) = {unit['sum']:.3f} + bias {unit['bias']:.3f} = "
                       f"{unit['value']:.3f}; the largest share comes from map {unit['channels'][int(np.argmax(shares))]}."},
               {"kind": "maps", "signed": False, "label": f"the {len(top)} input patches ({rf[0]}x{rf[1]}) unit {c} "
                                                          f"answers most, among {source}",
                "items": [{"label": f"{v:.2f}", "map": channels_image(p)} for v, p in top],
                "alt": f"The input patches that excite channel {c} of {second.name} most, among {source}."}]
    paragraphs = [texts.lesson_parts(second.name, c, int(cin), int(kh), int(kw), rf, first.kernel_size, honest, angles)]
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures,
            "predict": {"question": f"The second convolution's units each read a {kh}x{kw} window of how many "
                                    "first-layer maps?", "choices": ["one", f"all {cin}"], "answer": 1,
                        "reveal": f"All {cin}: every weight k[i, j, m] reads map m."},
            "link": {"view": "unit", "layer": second.name, "c": c, "y": y, "x": x}}


def _top_boxes(model, layer, xs, k=TOP):
    """Per channel of ``layer``: the ``k`` strongest responses over ``xs`` and the input boxes behind them."""
    _, caught = capture_batches(model, xs, [layer.name])
    a = np.asarray(caught[layer.name], np.float64)
    n, h, w, f = a.shape
    out = []
    for ch in range(f):
        flat = a[..., ch].ravel()
        best = np.argsort(flat)[::-1][:k]
        items = []
        for b in best:
            i, r, col = np.unravel_index(int(b), (n, h, w))
            box = receptive_field(model, layer, int(r), int(r), int(col), int(col))
            items.append((float(flat[b]), _crop(xs[i], box)))
        out.append(items)
    return out


def _crop(img, box):
    """The image inside ``box`` (inclusive), zeros where the box reaches into the padding."""
    h, w, c = img.shape
    out = np.zeros((box["bottom"] - box["top"] + 1, box["right"] - box["left"] + 1, c), np.float64)
    t, l = max(box["top"], 0), max(box["left"], 0)
    b, r = min(box["bottom"], h - 1), min(box["right"], w - 1)
    out[t - box["top"]:b - box["top"] + 1, l - box["left"]:r - box["left"] + 1] = img[t:b + 1, l:r + 1]
    return out


CORNER_ANGLE = 45.0     # two oriented filters at least this far apart in angle make a corner or crossing


def _corner_rule(ctx, first, second, shares, channels):
    """``(honest, (a1, a2))``: whether "corners, line ends and crossings" may be said of this unit.

    Only when the second convolution reads the first one's maps directly (channel m = filter m), the two
    maps with the largest positive shares both come from oriented filters, and their preferred angles
    differ by at least :data:`CORNER_ANGLE` degrees.
    """
    k = np.asarray(first.params["kernel"])
    if second.params["kernel"].shape[2] != k.shape[3] or len(shares) < 2:
        return False, None
    k0, trained = initial_kernel(ctx)
    if not trained:
        return False, None
    ori = oriented(k, initial=k0)
    order = np.argsort(shares)[::-1][:2]
    if shares[order[1]] <= 0:
        return False, None
    m1, m2 = (channels[int(i)] for i in order)
    if not (ori["oriented"][m1] and ori["oriented"][m2]):
        return False, None
    a1, a2 = float(ori["preferred"][m1]), float(ori["preferred"][m2])
    gap = abs((a1 - a2 + 90.0) % 180.0 - 90.0)
    return gap >= CORNER_ANGLE, (a1, a2)
