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

:func:`optimum` is what the explorer's unit details show ("what does this unit
look for"): the optimum within the norm of the current input, beside the
unit's value on that input and on random inputs of the same norm, so the three
numbers compare inputs of one size. Any layer of a ``Sequential`` or graph
model works (:func:`upto`); an element-wise activation is non-decreasing, so
its unit is optimised through the layer before it (a ReLU that is zero at the
start would give no gradient), which starts from the random input that excites the unit most, at
half its norm (from faint noise, a unit behind a ReLU is often zero: no gradient to follow); the jitter is kept below an eighth of the
unit's receptive field (a 5x5 first-layer unit gets none: shifting it would
average its kernel with shifted copies of itself).
"""
from __future__ import annotations

import numpy as np

from ..augment import gaussian_blur
from ..layers.activations import Elementwise
from ..stack import Stack
from .layers import receptive_field, sources


def upto(model, name) -> Stack:
    """The model's layers from the input up to ``name``, as a :class:`cnnlab.stack.Stack` whose output is that
    layer's: any layer of a ``Sequential`` or a graph model (the layers are listed so that each follows
    those it reads, so the first ones form a graph of their own; a branch that does not lead to ``name``
    runs and receives no gradient)."""
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise ValueError(f"the model has no layer {name!r}; its layers are {names}")
    i = names.index(name)
    return Stack(model.layers[:i + 1], model.stack.inbound[:i + 1], output=i + 1)


def unit_index(shape, unit, position=None):
    """The index of the unit in one example's output of ``shape``: ``(u, v, unit)`` (default: the map centre)."""
    if len(shape) == 1:
        return (unit,)
    u, v = position if position is not None else (shape[0] // 2, shape[1] // 2)
    return (u, v, unit)


def unit_value_and_gradient(model, name, x, unit, position=None, stack=None):
    """``(a(x), da/dx)`` for one image ``x`` (H, W, C): the unit's value and its input gradient, float64.

    ``stack``: :func:`upto` of ``name``, when the caller asks many times (it is made once then).
    """
    stack = upto(model, name) if stack is None else stack
    saved = [layer.needs_input_grad for layer in stack.layers]
    h = np.asarray(x, stack.layers[0].dtype)[None]             # float64 models give float64 gradients
    try:
        for layer in stack.layers:
            layer.needs_input_grad = True
        h = stack.forward(h, training=False)
        idx = (0,) + unit_index(h.shape[1:], unit, position)
        dy = np.zeros_like(h)
        dy[idx] = 1.0
        g = stack.backward(dy)
    finally:
        for layer, s in zip(stack.layers, saved):
            layer.needs_input_grad = s
    return float(h[idx]), np.asarray(g[0], np.float64)


def maximize_unit(model, name, unit, position=None, steps=200, lr=0.05, jitter=2, blur_sigma=0.5, blur_every=4,
                  radius=None, seed=0, start=None, settle=0) -> dict:
    """Optimise an input to excite ``unit`` of layer ``name``; ``{"image", "values", "radius"}``.

    ``radius``: the L2 bound (default: the norm of a mid-gray image, ``0.5 * sqrt(H * W * C)``);
    ``jitter`` pixels of random shift per step; ``blur_sigma`` (0: none) every ``blur_every`` steps;
    ``start``: the first image (default: faint noise); the last ``settle`` steps ascend without jitter or blur,
    so the image ends at a maximum of the unit itself, not of its blurred, jittered copies.
    """
    shape = tuple(model.input_shape)
    radius = float(radius if radius is not None else 0.5 * np.sqrt(np.prod(shape)))
    stack = upto(model, name)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 1e-3 * radius / np.sqrt(np.prod(shape)) if start is None else np.array(start)
    values = []
    for t in range(int(steps)):
        free = t >= int(steps) - int(settle)
        dy, dx = (rng.integers(-jitter, jitter + 1, 2) if jitter and not free else (0, 0))
        value, g = unit_value_and_gradient(model, name, np.roll(x, (dy, dx), axis=(0, 1)), unit, position,
                                            stack)
        g = np.roll(g, (-dy, -dx), axis=(0, 1))
        values.append(value)
        scale = np.abs(g).mean()
        if scale == 0:
            break                                          # the unit is dead here: no direction to go
        x = x + lr * radius / np.sqrt(np.prod(shape)) * g / scale
        if blur_sigma and (t + 1) % blur_every == 0 and not free:
            x = gaussian_blur(x[None], blur_sigma)[0]
        norm = np.linalg.norm(x)
        if norm > radius:
            x *= radius / norm
    return {"image": x, "values": values, "radius": radius}


def _through_activations(model, name):
    """``name``, or the layer below it while it is an element-wise (non-decreasing) activation reading one layer."""
    layer = model[name]
    while isinstance(layer, Elementwise):
        src = sources(model, layer)
        if len(src) != 1 or src[0] is None:
            break
        layer = src[0]
    return layer.name


def optimum(model, name, unit, x, position=None, steps=64, n_random=16, seed=0) -> dict:
    """The input of ``x``'s L2 norm that excites ``unit`` of layer ``name`` most (:func:`maximize_unit`), and
    the unit's value on it, on ``x`` and on ``n_random`` Gaussian inputs of that norm.

    ``position``: the unit's ``(y, x)`` on a feature map (default: the centre). Returns ``{"image",
    "value", "input_value", "random_values", "radius", "optimised", "position", "jitter", "values"}``;
    ``optimised`` is the layer whose unit was ascended (``name``, or the layer under its activations).
    """
    layer = model[name]
    shape = tuple(model.input_shape)
    out_shape = tuple(layer.output_shape)
    if len(out_shape) == 3:
        position = tuple(position) if position is not None else (out_shape[0] // 2, out_shape[1] // 2)
        if not (0 <= position[0] < out_shape[0] and 0 <= position[1] < out_shape[1]):
            raise ValueError(f"position {position} lies outside layer {name!r}'s {out_shape[0]}x{out_shape[1]} map")
        box = receptive_field(model, layer, position[0], position[0], position[1], position[1])
        field = min(box["bottom"] - box["top"], box["right"] - box["left"]) + 1
    else:
        position, field = None, min(shape[:2])
    if not 0 <= unit < out_shape[-1]:
        raise ValueError(f"layer {name!r} has {out_shape[-1]} units/channels; unit {unit} does not exist")
    x = np.asarray(x, np.float64).reshape(shape)
    radius = float(np.linalg.norm(x)) or 0.5 * float(np.sqrt(np.prod(shape)))
    jitter = int(min(2, field // 8))
    target = _through_activations(model, name)
    stack = upto(model, name)

    def value(img):
        return unit_value_and_gradient(model, name, img, unit, position, stack)[0]

    rng = np.random.default_rng(seed + 1)
    noise = rng.standard_normal((int(n_random),) + shape)
    noise *= radius / np.linalg.norm(noise.reshape(len(noise), -1), axis=1)[:, None, None, None]
    random_values = np.array([value(n) for n in noise])
    start = 0.5 * noise[int(np.argmax(random_values))]      # faint noise could leave a unit behind a ReLU at zero
    r = maximize_unit(model, target, unit, position, steps=steps, jitter=jitter, radius=radius, seed=seed, start=start,
                      settle=steps // 4)
    return {"image": r["image"], "value": value(r["image"]), "input_value": value(x),
            "random_values": random_values, "radius": radius, "optimised": target,
            "position": position, "jitter": jitter, "values": np.array(r["values"])}
