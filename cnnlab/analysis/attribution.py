r"""Which pixels a prediction depends on: gradient saliency, SmoothGrad, occlusion sensitivity and Grad-CAM.

Four answers to "where does the network look?" for one image and one class
``k`` (default: the predicted class), each a map over the image:

* **Gradient saliency** (Simonyan, Vedaldi & Zisserman 2014): ``|dS_k/dx|``,
  the magnitude of the derivative of the class score (the logit, before the
  softmax) with respect to every input pixel, maximized over colour channels.
  One backward pass: ``model.input_gradient(x, e_k)`` with ``e_k`` the one-hot
  vector of class ``k`` as the gradient of the scores. It says how much a tiny
  change of each pixel would move the score: local, and often noisy.
* **SmoothGrad** (Smilkov et al. 2017): the same gradient averaged over noisy
  copies ``x + e_n``, ``e_n ~ N(0, sigma^2)``, before taking its magnitude;
  the averaging removes the pixel-to-pixel jumps of the plain gradient.
* **Occlusion sensitivity** (Zeiler & Fergus 2014): cover a ``p x p`` patch
  centred on each pixel (on a grid with the given stride) with a constant,
  run the model, and record the *drop* of the class probability,
  ``p_k(x) - p_k(x with the patch covered)``. Positive where hiding the
  region hurts the prediction, negative where it helps. All occluded copies
  go through the network in batches: no Python loop per image pixel.
* **Grad-CAM** (Selvaraju et al. 2017): take the feature maps ``A`` of the last
  convolution (its output, before any activation), weight each map by the
  spatial mean of the score's gradient with respect to it,
  ``alpha_c = mean_ij dS_k/dA_ijc``, sum, and keep the positive part:
  ``cam = ReLU(sum_c alpha_c A_c)``. The coarse map is upsampled bilinearly to
  the image. It shows which *regions* carry the evidence for class ``k``.
  The convolution's own output is the default rather than its rectified
  output: behind a ReLU, background positions hold a constant positive
  response, and with a dense classifier on top their mostly negative mean
  gradients often cancel every map (``grad_cam(..., layer=)`` chooses another layer).
"""
from __future__ import annotations

import numpy as np

from ..layers import Conv2D
from .layers import one_image, receptive_field_centres


def check_class(model, k):
    """``k`` as a class index of ``model``; a ``ValueError`` unless it is an integer in ``[0, classes - 1]``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < model.num_classes:
        raise ValueError(f"class must be an integer in [0, {model.num_classes - 1}], received {k!r}")
    return int(k)


def score_gradient(model, x, k) -> np.ndarray:
    """``dS_k/dx`` for one image (H, W, C): the gradient of logit ``k`` with respect to the pixels."""
    x = one_image(model, x)
    k = check_class(model, k)
    dy = np.zeros((1, model.num_classes), x.dtype)
    dy[0, k] = 1.0
    return np.asarray(model.input_gradient(x, dy))[0]


def gradient_saliency(model, x, k) -> np.ndarray:
    """``max_c |dS_k/dx_ijc|``: an (H, W) map of how strongly each pixel moves the class score."""
    return np.abs(score_gradient(model, x, k)).max(axis=-1)


def smoothgrad(model, x, k, samples=32, sigma=0.15, seed=0) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): ``max_c |mean_n dS_k/dx (x + e_n)|``, ``e_n ~ N(0, (sigma * range)^2)``.

    The gradient of ``samples`` noisy copies of the image, averaged, then its
    magnitude maximized over channels: an (H, W) map. ``range`` is the image's
    max minus min (1 for an image in [0, 1]). The copies go through the network
    as one batch; each row's output gradient is the one-hot vector of ``k``.
    """
    x = one_image(model, x)
    k = check_class(model, k)
    rng = np.random.default_rng(seed)
    spread = float(x.max() - x.min()) or 1.0
    noisy = (x + rng.normal(0.0, sigma * spread, (int(samples),) + x.shape[1:])).astype(x.dtype)
    dy = np.zeros((len(noisy), model.num_classes), x.dtype)
    dy[:, k] = 1.0
    g = np.asarray(model.input_gradient(noisy, dy)).mean(axis=0)
    return np.abs(g).max(axis=-1)


def occlusion_masks(height, width, patch, stride=1):
    """Boolean masks (P, H, W) of ``patch x patch`` squares centred on a grid of pixels (clipped at the border).

    Returns ``(masks, centres)``; the centres are rows ``0, s, 2s, ...`` times
    columns ``0, s, 2s, ...``, in row-major order.
    """
    rows, cols = np.arange(0, height, stride), np.arange(0, width, stride)
    cy, cx = np.meshgrid(rows, cols, indexing="ij")
    cy, cx = cy.ravel(), cx.ravel()
    top, left = cy - patch // 2, cx - patch // 2
    ys, xs = np.arange(height), np.arange(width)
    # (P, 1) against (1, H): inside the patch's rows / columns, broadcast to (P, H, W)
    in_rows = (ys[None, :] >= top[:, None]) & (ys[None, :] < top[:, None] + patch)
    in_cols = (xs[None, :] >= left[:, None]) & (xs[None, :] < left[:, None] + patch)
    masks = in_rows[:, :, None] & in_cols[:, None, :]
    return masks, np.stack([cy, cx], axis=1)


def occlusion_sensitivity(model, x, k, patch=None, stride=1, fill=0.0, batch_size=256):
    """Drop of ``p_k`` when a ``patch x patch`` square centred on each grid pixel is set to ``fill``.

    ``fill`` is a number or ``"mean"`` (the image's mean value). Returns a dict
    with ``map`` (rows x cols of the centre grid), ``probability`` (``p_k`` of
    the intact image), ``patch``, ``stride``, ``fill`` and ``centres``.
    """
    x = one_image(model, x)
    k = check_class(model, k)
    _, h, w, _ = x.shape
    patch = int(patch) if patch is not None else default_patch(h, w)
    stride = int(stride)
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be positive integers, received patch={patch}, stride={stride}")
    fill_value = float(x.mean()) if fill == "mean" else float(fill)
    masks, centres = occlusion_masks(h, w, patch, stride)
    base = float(model.predict(x)[0, k])
    probs = np.empty(len(masks))
    for i in range(0, len(masks), batch_size):
        m = masks[i:i + batch_size, :, :, None]                      # (B, H, W, 1): broadcast over channels
        batch = np.where(m, np.float32(fill_value), x).astype(x.dtype)  # (B, H, W, C) occluded copies
        probs[i:i + batch_size] = model.predict(batch)[:, k]
    rows, cols = -(-h // stride), -(-w // stride)
    return {"map": (base - probs).reshape(rows, cols), "probability": base, "patch": patch, "stride": stride,
            "fill": fill_value, "centres": centres}


def default_patch(h, w):
    """A fifth of the image side, at least 3 pixels (6 on 28x28)."""
    return max(3, int(round(min(h, w) / 5)))


def default_cam_layer(model):
    """The model's last Conv2D layer (Grad-CAM's feature maps ``A`` are its output)."""
    convs = [layer for layer in model.layers if isinstance(layer, Conv2D)]
    if not convs:
        raise ValueError(f"Grad-CAM needs a convolution; the model's layers are {[l.name for l in model.layers]}")
    return convs[-1]


def upsample_bilinear(m, size, geometry=None):
    """Resize a 2-D map to ``size = (H, W)`` bilinearly.

    Without ``geometry`` the map is stretched over the image, pixel centres aligned (as image
    resizers do). With ``geometry = ((offset_y, stride_y), (offset_x, stride_x))`` map cell ``j``
    is placed where its receptive field is centred, image coordinate ``offset + stride * j``
    (see :func:`cnnlab.analysis.layers.receptive_field_centres`), so a feature map lines up with the pixels it sees.
    """
    m = np.asarray(m, np.float64)

    def weights(n_out, n_in, axis):
        if geometry is None:
            # output pixel centre (i + 0.5) sits at input coordinate (i + 0.5) * n_in / n_out - 0.5
            src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        else:
            offset, stride = geometry[axis]
            src = (np.arange(n_out) - offset) / stride
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        t = src - lo
        r = np.zeros((n_out, n_in))
        np.add.at(r, (np.arange(n_out), lo), 1 - t)
        np.add.at(r, (np.arange(n_out), hi), t)
        return r

    return weights(size[0], m.shape[0], 0) @ m @ weights(size[1], m.shape[1], 1).T


def grad_cam(model, x, k, layer=None) -> dict:
    """Grad-CAM of class ``k`` at ``layer`` (name or layer; default :func:`default_cam_layer`).

    Returns ``{"layer", "activations" A (h, w, C), "gradients" dS_k/dA, "weights" alpha (C,),
    "cam" (h, w), "map" (H, W) upsampled}``.
    """
    x = one_image(model, x)
    k = check_class(model, k)
    target = default_cam_layer(model) if layer is None else (model[layer] if isinstance(layer, str) else layer)
    idx = next((i for i, l in enumerate(model.layers) if l is target), None)
    if idx is None:
        raise ValueError(f"layer {getattr(target, 'name', target)!r} is not part of the model")
    if len(target.output_shape) != 3:
        raise ValueError(f"Grad-CAM needs feature maps (H, W, C); layer {target.name!r} outputs {target.output_shape}")
    a = np.array(model.forward(x, capture=[target.name])[1][target.name][0], np.float64)
    dy = np.zeros((1, model.num_classes), x.dtype)
    dy[0, k] = 1.0
    grads = np.asarray(model.input_gradient(x, dy, at=target.name)[0], np.float64)
    alpha = grads.mean(axis=(0, 1))
    cam = np.maximum((a * alpha).sum(axis=-1), 0.0)
    return {"layer": target.name, "activations": a, "gradients": grads, "weights": alpha, "cam": cam,
            "map": upsample_bilinear(cam, x.shape[1:3], receptive_field_centres(model, idx))}


def top_pixels(m, n=10):
    """The ``n`` largest values of a 2-D map as ``[(row, col, value)]``, largest first."""
    m = np.asarray(m)
    flat = np.argsort(m, axis=None)[::-1][:n]
    return [[int(r), int(c), float(m[r, c])] for r, c in zip(*np.unravel_index(flat, m.shape))]


def map_stats(m) -> dict:
    m = np.asarray(m, np.float64)
    return {"shape": list(m.shape), "min": float(m.min()), "max": float(m.max()), "mean": float(m.mean())}
