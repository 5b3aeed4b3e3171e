r"""What excites a unit: an input optimised by gradient ascent (activation maximisation).

Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017. For one
unit ``a(x)`` of a layer (filter ``f`` at one map position, or one output of
a dense layer), starting from faint noise, repeat::

    x_j  = roll(x, jitter)                        (a random shift of up to ``jitter`` pixels)
    g    = roll back (da/dx at x_j)               (the model's own backward pass)
    x   <- x + lr * g / mean|g|                   (normalised ascent step)
    x   <- blur(x, sigma)                         (optional: a frequency penalty, high frequencies decay)
    x   <- x * min(1, radius / ||x||)             (the L2 bound: projection onto the ball)

For a first-layer unit without jitter or blur, ``a(x) = k . patch(x) + b`` is
linear and the best ``x`` in the ball is ``radius * k / ||k||`` on the unit's
patch (Cauchy-Schwarz): the optimiser is tested against that.
"""
from __future__ import annotations

import numpy as np

from ..augment import gaussian_blur


def _chain(model, name):
    """The layers from the input up to and including ``name``, which must form a chain."""
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise ValueError(f"the model has no layer {name!r}; its layers are {names}")
    upto = model.layers[:names.index(name) + 1]
    inbound = model.inbound_names()
    prev = model.input_name
    for layer, srcs in zip(upto, inbound):
        if srcs != [prev]:
            raise ValueError(f"activation maximisation follows a chain of layers; {layer.name!r} reads {srcs}")
        prev = layer.name
    return upto


def unit_index(shape, unit, position=None):
    """The index of the unit in one example's output of ``shape``: ``(u, v, unit)`` (default: the map centre)."""
    if len(shape) == 1:
        return (unit,)
    u, v = position if position is not None else (shape[0] // 2, shape[1] // 2)
    return (u, v, unit)


def unit_value_and_gradient(model, name, x, unit, position=None):
    """``(a(x), da/dx)`` for one image ``x`` (H, W, C): the unit's value and its input gradient, float64."""
    chain = _chain(model, name)
    saved = [layer.needs_input_grad for layer in chain]
    h = np.asarray(x, chain[0].dtype)[None]                    # float64 models give float64 gradients
    try:
        for layer in chain:
            layer.needs_input_grad = True
            h = layer.forward(h, training=False)
        idx = (0,) + unit_index(h.shape[1:], unit, position)
        dy = np.zeros_like(h)
        dy[idx] = 1.0
        for layer in reversed(chain):
            dy = layer.backward(dy)
    finally:
        for layer, s in zip(chain, saved):
            layer.needs_input_grad = s
    return float(h[idx]), np.asarray(dy[0], np.float64)


def maximize_unit(model, name, unit, position=None, steps=200, lr=0.05, jitter=2, blur_sigma=0.5, blur_every=4,
                  radius=None, seed=0) -> dict:
    """Optimise an input to excite ``unit`` of layer ``name``; ``{"image", "values", "radius"}``.

    ``radius``: the L2 bound (default: the norm of a mid-gray image, ``0.5 * sqrt(H * W * C)``);
    ``jitter`` pixels of random shift per step; ``blur_sigma`` (0: none) every ``blur_every`` steps.
    """
    shape = tuple(model.input_shape)
    radius = float(radius if radius is not None else 0.5 * np.sqrt(np.prod(shape)))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 1e-3 * radius / np.sqrt(np.prod(shape))
    values = []
    for t in range(int(steps)):
        dy, dx = (rng.integers(-jitter, jitter + 1, 2) if jitter else (0, 0))
        value, g = unit_value_and_gradient(model, name, np.roll(x, (dy, dx), axis=(0, 1)), unit, position)
        g = np.roll(g, (-dy, -dx), axis=(0, 1))
        values.append(value)
        scale = np.abs(g).mean()
        if scale == 0:
            break                                          # the unit is dead here: no direction to go
        x = x + lr * radius / np.sqrt(np.prod(shape)) * g / scale
        if blur_sigma and (t + 1) % blur_every == 0:
            x = gaussian_blur(x[None], blur_sigma)[0]
        norm = np.linalg.norm(x)
        if norm > radius:
            x *= radius / norm
    return {"image": x, "values": values, "radius": radius}
