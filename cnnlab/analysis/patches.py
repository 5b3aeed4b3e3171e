r"""Convolution as template matching: responses, normalized cross-correlation, and what a filter responds to.

The output of a convolution at one position is the dot product of the kernel
with the patch under it, ``<k, p> = |k| |p| cos(k, p)`` (Cauchy-Schwarz): among
patches of equal contrast it is largest where the patch points the same way as
the kernel. Normalized cross-correlation divides out the patch's mean and
contrast, so bright regions cannot win by brightness alone.
"""
from __future__ import annotations

import numpy as np

from ..layers.conv import Conv2D, pad_hw, resolve_padding
from .convolution import convolve


def cross_correlate(image, template):
    """Response of ``template`` (th, tw) at every position of ``image`` (H, W), through cnnlab's ``Conv2D``.

    ``r[i, j] = sum(image[i:i+th, j:j+tw] * template)`` (valid positions only), so
    ``(i, j)`` is the top-left corner of the window.
    """
    image = np.asarray(image, np.float64)
    template = np.asarray(template, np.float64)
    return convolve(image[:, :, None], template[:, :, None])


def normalized_cross_correlate(image, template, eps=1e-12):
    """Normalized cross-correlation in [-1, 1]: cosine of the mean-removed template and each mean-removed patch.

    ``ncc = sum((p - mean p)(t - mean t)) / (|p - mean p| |t - mean t|)``, with the
    sums over windows done by ``Conv2D``: one pass with the centred template and
    two with a kernel of ones (for the patch mean and energy). Flat patches give 0.
    """
    image = np.asarray(image, np.float64)
    t = np.asarray(template, np.float64)
    tc = t - t.mean()
    n = t.size
    num = cross_correlate(image, tc)
    ones = np.ones_like(t)
    s1 = cross_correlate(image, ones)
    s2 = cross_correlate(image ** 2, ones)
    var = np.maximum(s2 - s1 ** 2 / n, 0.0)
    den = np.sqrt(var) * np.linalg.norm(tc)
    return np.where(den > eps * max(1.0, float(np.abs(image).max()) ** 2 * n), num / np.maximum(den, eps), 0.0)


def top_patches(layer, x, k=5, per_image=1, random_patches=2000, seed=0):
    """For every filter of conv ``layer``, the ``k`` input patches of ``x`` that activate it most.

    ``x`` is what the layer receives (N, H, W, C). At most ``per_image`` patches
    come from one image, so the list shows ``k`` different examples. Each patch
    record has ``image`` (index in ``x``), ``row``/``col`` (output position: the
    patch's top-left corner in the padded input), ``activation`` (the layer's
    output there, bias included), ``cosine`` (between the kernel and the patch)
    and ``patch``. ``random_cosine_mean`` is the mean cosine over random patches.
    """
    kern = np.asarray(layer.params["kernel"], np.float64)
    kh, kw, cg, f = kern.shape
    if getattr(layer, "groups", 1) != 1:
        raise ValueError(f"top_patches: {layer.label} is grouped; only ungrouped convolutions are supported")
    bias = np.asarray(layer.params.get("bias", np.zeros(f)), np.float64)
    x64 = np.asarray(x, np.float64)
    acts = np.concatenate([layer.forward(x[s:s + 256], training=False)
                           for s in range(0, len(x), 256)]).astype(np.float64)
    pads = resolve_padding(layer.padding, x.shape[1:3], layer.kernel_size, layer.strides, layer.dilation, layer.label)
    xp = pad_hw(x64, pads)
    (sh, sw), (dh, dw) = layer.strides, layer.dilation
    n, ho, wo, _ = acts.shape

    def patch(img, i, j):
        return xp[img, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw, :]

    def cosine(a, b):
        d = np.linalg.norm(a) * np.linalg.norm(b)
        return float((a * b).sum() / d) if d > 0 else 0.0

    rng = np.random.default_rng(seed)
    rand = [(int(rng.integers(n)), int(rng.integers(ho)), int(rng.integers(wo))) for _ in range(random_patches)]
    results = []
    for fi in range(f):
        a = acts[..., fi].reshape(n, -1)
        best = []
        order_pos = np.argsort(-a, axis=1)[:, :per_image]                  # best positions of each image
        cand = [(float(a[m, p]), m, p) for m in range(n) for p in order_pos[m]]
        cand.sort(key=lambda t: -t[0])
        for act, m, p in cand[:k]:
            i, j = divmod(int(p), wo)
            pt = patch(m, i, j)
            best.append({"image": int(m), "row": i, "col": j, "activation": act,
                         "cosine": cosine(kern[..., fi], pt), "patch": pt})
        rc = [cosine(kern[..., fi], patch(m, i, j)) for m, i, j in rand]
        results.append({"index": fi, "kernel": kern[..., fi], "bias": float(bias[fi]), "top_patches": best,
                        "mean_top_cosine": float(np.mean([b["cosine"] for b in best])) if best else None,
                        "random_cosine_mean": float(np.mean(rc)), "random_cosine_std": float(np.std(rc))})
    return results


def responses_and_cosines(layer, x, batch_size=256) -> dict:
    """Every patch of ``x`` (N, H, W, C) under conv ``layer``: ``<k_f, p>``, ``|p|`` and ``cos(k_f, p)``.

    ``response`` (N, Ho, Wo, F) is the layer's output less its bias, ``<k_f, p> = |k_f| |p| cos(k_f, p)``;
    ``norm`` (N, Ho, Wo) is ``|p|``, the square root of a ``Conv2D`` of ones with the layer's geometry over the
    squared pixels summed over channels; ``cosine`` is ``response / (|k_f| |p|)`` (0 for an empty patch);
    ``kernel_norm`` (F,) is ``|k_f|``. Only ungrouped convolutions.
    """
    if getattr(layer, "groups", 1) != 1:
        raise ValueError(f"responses_and_cosines: {layer.label} is grouped; only ungrouped convolutions are supported")
    kern = np.asarray(layer.params["kernel"], np.float64)
    bias = np.asarray(layer.params.get("bias", np.zeros(kern.shape[3])), np.float64)
    x = np.asarray(x, layer.dtype)
    response = np.concatenate([layer.forward(x[s:s + batch_size], training=False)
                               for s in range(0, len(x), batch_size)]).astype(np.float64) - bias
    ones = Conv2D(1, layer.kernel_size, strides=layer.strides, padding=layer.padding, dilation=layer.dilation,
                  use_bias=False)
    ones.build((*x.shape[1:3], 1), dtype=np.float64)
    ones.params["kernel"][...] = 1.0
    energy = ones.forward((np.asarray(x, np.float64) ** 2).sum(axis=3, keepdims=True))[..., 0]
    norm = np.sqrt(np.maximum(energy, 0.0))
    kernel_norm = np.linalg.norm(kern.reshape(-1, kern.shape[3]), axis=0)
    scale = norm[..., None] * kernel_norm
    cosine = np.where(scale > 0, response / np.where(scale > 0, scale, 1.0), 0.0)
    return {"response": response, "norm": norm, "cosine": cosine, "kernel_norm": kernel_norm}
