"""Layers that join branches of a graph model: ``Add`` and ``Concatenate``.

Each reads a list of arrays and its backward returns one gradient per input
(the model adds up the gradients of every branch that reads a tensor).

    y = Add()([a, b])                 y = a + b;             dL/da = dL/db = dL/dy
    y = Concatenate()([a, b])         y = [a | b] (channels); dL/da, dL/db = the matching slices of dL/dy
"""
from __future__ import annotations

import numpy as np

from .base import Layer


class _Join(Layer):
    joins = True

    def build(self, input_shape, rng=None, dtype=np.float32) -> tuple:
        """``input_shape`` is the list of the inputs' per-example shapes."""
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 2 or \
                not all(isinstance(s, (list, tuple)) for s in input_shape):
            raise ValueError(f"{self.label}: joins a list of at least two inputs, received shapes {input_shape!r}")
        shapes = [tuple(int(d) for d in s) for s in input_shape]
        self.dtype = np.dtype(dtype)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.output_shape = tuple(self.compute_output_shape(shapes))
        self.input_shape = shapes
        return self.output_shape

    def _prepare_all(self, xs) -> list:
        """Validate the list of batches (build on first use); return them in the layer's dtype."""
        if not isinstance(xs, (list, tuple)):
            raise ValueError(f"{self.label}: expected a list of batches, received {type(xs).__name__}")
        xs = [np.asarray(x) for x in xs]
        if not self.built:
            self.build([x.shape[1:] for x in xs], dtype=xs[0].dtype if xs[0].dtype == np.float64 else np.float32)
        if len(xs) != len(self.input_shape) or any(x.shape[1:] != s for x, s in zip(xs, self.input_shape)) \
                or len({len(x) for x in xs}) != 1:
            raise ValueError(f"{self.label}: expected batches of shapes {[(None,) + s for s in self.input_shape]}, "
                             f"received {[x.shape for x in xs]}")
        return [x if x.dtype == self.dtype else x.astype(self.dtype) for x in xs]


class Add(_Join):
    """Element-wise sum of inputs of one shape: a residual connection ``y = F(x) + x``."""

    def compute_output_shape(self, input_shape):
        if len({tuple(s) for s in input_shape}) != 1:
            raise ValueError(f"{self.label}: all inputs must have the same shape, received {list(input_shape)}")
        return tuple(input_shape[0])

    def forward(self, xs, training=False):
        xs = self._prepare_all(xs)
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y += x
        return y

    def backward(self, dy):
        return [dy] * len(self.input_shape)          # each input moves the sum one for one


class Concatenate(_Join):
    """Stack inputs along the channels (the last axis): ``(N, H, W, C1) + (N, H, W, C2) -> (N, H, W, C1 + C2)``."""

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if len({s[:-1] for s in shapes}) != 1 or any(len(s) == 0 for s in shapes):
            raise ValueError(f"{self.label}: inputs must match in every axis but the last, received {shapes}")
        return shapes[0][:-1] + (sum(s[-1] for s in shapes),)

    def forward(self, xs, training=False):
        return np.concatenate(self._prepare_all(xs), axis=-1)

    def backward(self, dy):
        bounds = np.cumsum([s[-1] for s in self.input_shape])[:-1]
        return np.split(dy, bounds, axis=-1)           # views of dy: input k gets its own channels back
