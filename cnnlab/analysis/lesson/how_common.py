"""What steps 1-7 share: the first convolution and what it read for the current input, the model's own
images, and a small cache for the work that depends on the model but not on the input."""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .. import texts
from ..equivariance import layer_maps
from ..units import unit
from ..layers import capture, first_conv, layer_input, layer_inputs, sources
from .base import not_applicable

N_IMAGES = 100          # images of the model's own data a step looks at (patches, rankings)
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 16


def is_image_model(model) -> bool:
    return len(model.input_shape) == 3


@dataclass
class First:
    """The first convolution ``layer``, what it read for ``ctx.x`` (``inp``, (H, W, C)), its output ``out``
    (Ho, Wo, F), and the unit ``(f, y, x)`` where that output is largest."""
    layer: object
    inp: np.ndarray
    out: np.ndarray
    f: int
    y: int
    x: int

    @property
    def link(self) -> dict:
        """The unit details view of the strongest unit."""
        return {"view": "unit", "layer": self.layer.name, "c": self.f, "y": self.y, "x": self.x}

    def detail(self, ctx) -> dict:
        """The strongest unit term by term (:func:`cnnlab.analysis.units.unit`)."""
        return unit(ctx.model, ctx.x, self.layer.name, self.f, self.y, self.x)


def first_layer(ctx):
    """:class:`First` for ``ctx``, or the ``not_applicable`` dict saying why the model has none."""
    model = ctx.model
    if not is_image_model(model):
        return not_applicable(texts.lesson_no_images(tuple(model.input_shape)))
    layer = first_conv(model, required=False)
    if layer is None:
        return not_applicable(texts.lesson_no_convolution())
    if len(sources(model, layer)) != 1:
        return not_applicable(texts.lesson_no_convolution(layer.name))
    _, acts = capture(model, ctx.x)
    inp = np.asarray(layer_input(model, np.asarray(ctx.x, np.float32), acts, layer), np.float64)
    out = np.asarray(acts[layer.name], np.float64)
    return First(layer, inp, out, *strongest(out))


def layer_fn(model, layer):
    """``images (N, H, W, C) -> layer's output``: the layer alone when it reads the image, else the model
    up to it (:func:`cnnlab.analysis.equivariance.layer_maps`)."""
    if sources(model, layer) == [None]:
        return lambda x: layer.forward(np.asarray(x, layer.dtype))
    return layer_maps(model, layer.name)


def strongest(out) -> tuple[int, int, int]:
    """``(f, y, x)``: the filter and the position where the map ``out`` (Ho, Wo, F) is largest."""
    y, x, f = np.unravel_index(int(np.argmax(out)), out.shape)
    return int(f), int(y), int(x)


def own_images(ctx, n=N_IMAGES):
    """The first ``n`` training images of the model's own data and the data's name, or the sentence
    saying why there are none."""
    data = ctx.data
    if isinstance(data, tuple):
        (x_train, _), _, _, source = data
        return np.asarray(x_train[:n]), str(source)
    return texts.lesson_no_data(data)


def first_layer_inputs(ctx, layer, images):
    """What ``layer`` receives for ``images`` (N, H, W, C), in the layer's dtype."""
    return np.asarray(layer_inputs(ctx.model, layer, np.asarray(images, layer.dtype)), layer.dtype)


def cached(model, what, key_arrays, fn):
    """``fn()`` once per model, ``what`` and content of ``key_arrays`` (the weights and images it depends on)."""
    h = hashlib.sha1()
    for a in key_arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    key = (id(model), what, h.hexdigest())
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = fn()
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value



def kernel_picture(k) -> np.ndarray:
    """One filter's kernel (kh, kw, C) as a picture: (kh, kw) for one channel, colours scaled to [0, 1] for
    three, the sum over channels otherwise."""
    k = np.asarray(k, np.float64)
    if k.shape[2] == 1:
        return k[:, :, 0]
    if k.shape[2] == 3:
        lo, hi = k.min(), k.max()
        return (k - lo) / (hi - lo) if hi > lo else np.full_like(k, 0.5)
    return k.sum(axis=2)


def map_picture(a) -> np.ndarray:
    """An image (H, W, C) as a picture: (H, W) for one channel, colours scaled to [0, 1] for three, the
    channel mean otherwise."""
    a = np.asarray(a, np.float64)
    if a.shape[2] == 3:
        return kernel_picture(a)
    return a[:, :, 0] if a.shape[2] == 1 else a.mean(axis=2)
