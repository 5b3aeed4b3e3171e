"""What steps 8-14 share: per-model memos, the model's own images, the kernel at initialisation."""
from __future__ import annotations

import weakref

import numpy as np

from ..layers import first_conv
from .base import companion

_MEMO = weakref.WeakKeyDictionary()      # model -> {key: value}: work that does not depend on the input
N_IMAGES = 300                           # the model's own images searched for top patches


def memo(model, key, fn):
    """``fn()`` computed once per ``model`` object (a reloaded model is a new object) and ``key``;
    ``key=None``: computed every time (work on the current input)."""
    if key is None:
        return fn()
    table = _MEMO.setdefault(model, {})
    if key not in table:
        table[key] = fn()
    return table[key]


def images(ctx, n=N_IMAGES):
    """``(x (N, H, W, C), words)``: the first ``n`` training images of the model's own data, or the
    current input alone when there are none; ``words`` says which, for a sentence. Work on them may be
    kept per model (:func:`memo`) only when ``own_data(ctx)``."""
    if isinstance(ctx.data, tuple):
        x = ctx.data[0][0][:n]
        return np.asarray(x, np.float32), f"{len(x)} of its training images"
    return np.asarray(ctx.x, np.float32)[None], "the current input (no training images are at hand)"


def own_data(ctx) -> bool:
    """Whether the model's own images are at hand (else :func:`images` is the current input)."""
    return isinstance(ctx.data, tuple)



UNTRAINED = 1e-6        # a kernel this close (relative) to its re-drawn initial value was never trained
SAME_START = 0.7        # ||k - k0|| below this fraction of sqrt(||k||^2 + ||k0||^2): k grew from k0


def initial_kernel(ctx):
    """``(k0, trained)``: the first convolution's kernel at initialisation when it is known, and whether the
    model was trained at all.

    The ``"untrained"`` companion re-draws the architecture's weights from its own seed. For a cnnlab model
    that is exactly where training started; for any other, an independent draw. Two independent draws
    differ by about ``sqrt(||k||^2 + ||k0||^2)``; a kernel that grew from ``k0`` by training differs by far
    less. So ``k0`` is taken as the start only below :data:`SAME_START` of that, and a kernel equal to it
    (below :data:`UNTRAINED`) was never trained.
    """
    conv = first_conv(ctx.model, required=False)
    u, _ = companion(ctx, "untrained")
    if conv is None or u is None:
        return None, True
    c0 = first_conv(u, required=False)
    if c0 is None or c0.params["kernel"].shape != conv.params["kernel"].shape:
        return None, True
    k, k0 = np.asarray(conv.params["kernel"], np.float64), np.asarray(c0.params["kernel"], np.float64)
    d, n0 = np.linalg.norm(k - k0), np.linalg.norm(k0)
    if d <= UNTRAINED * max(n0, 1e-12):
        return k0, False
    if d < SAME_START * np.sqrt(np.linalg.norm(k) ** 2 + n0 ** 2):
        return k0, True
    return None, True


def channels_image(a):
    """A kernel or patch (h, w, C) as a picture: the gray image for one channel, RGB for three, else the mean."""
    a = np.asarray(a, np.float64)
    if a.ndim == 2:
        return a
    if a.shape[-1] == 1:
        return a[..., 0]
    return a if a.shape[-1] == 3 else a.mean(axis=-1)

