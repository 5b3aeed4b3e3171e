r"""Step 4: the convolution of probability theory, and the bridge from it to the layers.

The density of the sum of two independent dice, ``p_{X+Y}(z) = sum_x p_X(x) p_Y(z - x)``: one density
flipped and slid along the other, a sum of products at each shift, computed by cnnlab's own ``Conv2D``
(:func:`cnnlab.analysis.convolution.conv_steps`) on a ``1 x 6`` image with the flipped density as the
kernel and 5 zeros of padding on each side. The figure ``"slide"`` shows ``p``, ``q``, the products
``p(x) q(z - x)`` at each ``z`` (rows) and the result.

The bridge (:mod:`cnnlab.analysis.identities`): a non-negative kernel summing to 1 is the density of a
random displacement, so blurring ``ctx.x`` with it is the input averaged over random jitter; and two
stacked linear convolutions are one whose kernel is the convolution of theirs, which is why receptive
fields grow (the model's own, :func:`cnnlab.analysis.layers.receptive_field`).
"""
from __future__ import annotations

import numpy as np

from ...layers import Conv2D
from .. import texts
from ..convolution import conv_steps
from ..identities import blur, compose_kernels, expected_jitter, stacking_error
from ..layers import receptive_field
from .how_common import first_layer, is_image_model, kernel_picture, map_picture

FACES = 6
JITTER = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0       # a 5x5 binomial displacement density
SMALL = np.outer([1, 2, 1], [1, 2, 1]) / 16.0                    # a 3x3 one, stacked after the layer's filter
RF_LAYERS = 3                                                    # convolutions whose receptive field is listed


def dice():
    """Two fair dice: ``(faces, p, q, sums, products (len(sums), FACES), result)`` by ``Conv2D``.

    ``products[j, i] = p[i] * q[z_j - x_i]``: the flipped ``q`` lies on ``p`` shifted so that it ends at ``x_i``.
    """
    p = q = np.full(FACES, 1.0 / FACES)
    pad = FACES - 1
    result, _, records = conv_steps(p[None, :, None], q[::-1][None, :, None], padding=(0, pad))
    products = np.zeros((len(records), FACES))
    for j, rec in enumerate(records):
        for m, col in enumerate(rec["window_cols"]):
            if 0 <= col - pad < FACES:
                products[j, col - pad] = rec["products"][0, m, 0]
    faces = np.arange(1, FACES + 1)
    return faces, p, q, np.arange(2, 2 * FACES + 1), products, result[0]


def _receptive_fields(model) -> list:
    """``[(layer name, height, width)]`` of the middle unit of the model's first convolutions."""
    out = []
    for layer in [l for l in model.layers if isinstance(l, Conv2D)][:RF_LAYERS]:
        h, w = layer.output_shape[:2]
        box = receptive_field(model, layer, h // 2, h // 2, w // 2, w // 2)
        out.append((layer.name, box["bottom"] - box["top"] + 1, box["right"] - box["left"] + 1))
    return out


def probability(ctx) -> dict:
    """Step 4: two dice slid by ``Conv2D``, the jitter of ``ctx.x``, two convolutions made one."""
    faces, p, q, sums, products, result = dice()
    peak = int(np.argmax(result))
    numbers = {"peak_sum": int(sums[peak]), "peak_probability": float(result[peak]),
               "total_probability": float(result.sum())}
    figures = [{"kind": "slide", "x": faces, "p": p, "q": q, "z": sums, "products": products, "result": result,
                "p_label": "first die", "q_label": "second die (flipped and slid)", "result_label": "sum of two dice",
                "alt": f"The distribution of the sum of two dice, from 2 to 12: a triangle with its peak "
                       f"{result[peak]:.4f} at {sums[peak]}."}]
    paragraphs = [texts.lesson_dice(int(sums[peak]), float(result[peak]))]
    if not is_image_model(ctx.model):
        return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures}
    x = np.asarray(ctx.x, np.float64)[None]
    blurred = blur(x, JITTER)
    numbers["jitter_difference"] = float(np.abs(blurred - expected_jitter(x, JITTER)).max())
    figures.append({"kind": "maps", "signed": False, "items": [
        {"label": "the input", "map": map_picture(x[0])},
        {"label": "blurred = averaged over random 5x5 jitter", "map": map_picture(blurred[0])}],
        "alt": f"The input and the input blurred by a 5 by 5 binomial density; the blur equals the average over "
               f"jitters to {numbers['jitter_difference']:.1e}."})
    got = first_layer(ctx)
    if isinstance(got, dict) or got.layer.groups != 1:         # a grouped kernel does not read every channel
        k1, inp, name = np.repeat(SMALL[:, :, None, None] / x.shape[3], x.shape[3], axis=2), x[0], None
    else:
        layer, inp, f = got.layer, got.inp, got.f
        k1, name = np.asarray(layer.params["kernel"][..., f:f + 1], np.float64), f"{layer.name}'s filter {f}"
    k2 = SMALL[:, :, None, None]
    big = compose_kernels(k1, k2)
    numbers.update(stacked_difference=stacking_error(k1, k2, inp[None]), first_h=k1.shape[0], first_w=k1.shape[1],
                   composed_h=big.shape[0], composed_w=big.shape[1])
    figures.append({"kind": "maps", "signed": True, "shared": False, "items": [
        {"label": name or "a 3x3 blur", "map": kernel_picture(k1[..., 0])},
        {"label": "then a 3x3 blur", "map": k2[:, :, 0, 0]},
        {"label": f"= one {big.shape[0]}x{big.shape[1]} kernel", "map": kernel_picture(big[..., 0])}],
        "alt": f"A {k1.shape[0]} by {k1.shape[1]} kernel followed by a 3 by 3 blur equals one {big.shape[0]} by "
               f"{big.shape[1]} kernel: largest difference {numbers['stacked_difference']:.1e} on this input."})
    fields = _receptive_fields(ctx.model)
    for n, h, w in fields:
        numbers[f"receptive_field_h_{n}"], numbers[f"receptive_field_w_{n}"] = h, w
    paragraphs += texts.lesson_jitter_and_stacking(numbers["jitter_difference"], name, k1.shape[:2], big.shape[:2],
                                                   numbers["stacked_difference"], fields)
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures}
