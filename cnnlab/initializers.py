"""Weight initializers: draw a kernel from a seeded generator, scaled by fan-in/fan-out.

He (Kaiming) keeps the variance of ReLU activations constant across layers:
``Var(w) = 2 / fan_in``. Glorot (Xavier) balances forward and backward signal
for tanh/sigmoid: ``Var(w) = 2 / (fan_in + fan_out)``. ``fan_in`` of a conv
kernel is ``kh * kw * C_in_per_group``.
"""
from __future__ import annotations

import numpy as np


class Initializer:
    def __init__(self, name, fn):
        self.name, self._fn = name, fn

    def __call__(self, shape, fan_in, fan_out, rng: np.random.Generator) -> np.ndarray:
        return self._fn(shape, fan_in, fan_out, rng)

    def __repr__(self):
        return self.name


_INITIALIZERS = {
    "he_uniform": lambda s, fi, fo, r: r.uniform(-1, 1, s) * np.sqrt(6.0 / fi),
    "he_normal": lambda s, fi, fo, r: r.standard_normal(s) * np.sqrt(2.0 / fi),
    "glorot_uniform": lambda s, fi, fo, r: r.uniform(-1, 1, s) * np.sqrt(6.0 / (fi + fo)),
    "glorot_normal": lambda s, fi, fo, r: r.standard_normal(s) * np.sqrt(2.0 / (fi + fo)),
    "zeros": lambda s, fi, fo, r: np.zeros(s),
}


def get(name) -> Initializer:
    """Look an initializer up by name; an unknown name lists the valid ones."""
    if isinstance(name, Initializer):
        return name
    if name not in _INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; choose one of {sorted(_INITIALIZERS)}")
    return Initializer(name, _INITIALIZERS[name])
