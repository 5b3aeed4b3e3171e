"""Element-wise non-linearities. Each backward multiplies ``dy`` by the local derivative."""
from __future__ import annotations

import numpy as np

from ..checks import is_number
from .base import Layer


class Elementwise(Layer):
    """Base of the element-wise activations: one output per input value, the shape kept."""

    def check_input_shape(self, shape):
        # Works on any size; only the rank must match what the layer was built for.
        if len(shape) != len(self.input_shape) + 1:
            raise ValueError(f"{self.label}: expected a rank-{len(self.input_shape) + 1} batch, received shape {tuple(shape)}")


class ReLU(Elementwise):
    """``max(x, 0)``; the gradient passes where the input was positive."""

    def forward(self, x, training=False):
        self._y = np.maximum(self._prepare(x), 0)
        return self._y

    def backward(self, dy):
        return dy * (self._y > 0)                  # y > 0 exactly where x > 0


class ClippedReLU(Elementwise):
    """``min(max(x, 0), max_value)``: ReLU6 with the default ``max_value=6`` (as in MobileNet).

    The gradient passes where ``0 < x < max_value``.
    """

    def __init__(self, max_value=6.0, name=None):
        super().__init__(name)
        if not is_number(max_value) or max_value <= 0:
            raise ValueError(f"ClippedReLU: max_value must be a finite number > 0, received {max_value!r}")
        self.max_value = float(max_value)

    def forward(self, x, training=False):
        x = self._prepare(x)
        self._mask = (x > 0) & (x < self.max_value)
        return np.clip(x, 0, self.max_value).astype(self.dtype, copy=False)

    def backward(self, dy):
        return dy * self._mask

    def get_config(self):
        return {"max_value": self.max_value}


class LeakyReLU(Elementwise):
    """``x`` where positive, ``alpha * x`` elsewhere."""

    def __init__(self, alpha=0.01, name=None):
        super().__init__(name)
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"LeakyReLU: alpha must be a finite number >= 0, received {alpha!r}")
        self.alpha = float(alpha)

    def forward(self, x, training=False):
        x = self._prepare(x)
        self._slope = np.where(x > 0, 1, self.alpha).astype(self.dtype)
        return x * self._slope

    def backward(self, dy):
        return dy * self._slope

    def get_config(self):
        return {"alpha": self.alpha}


class Tanh(Elementwise):
    """``tanh(x)``; derivative ``1 - tanh(x)^2``."""

    def forward(self, x, training=False):
        self._y = np.tanh(self._prepare(x))
        return self._y

    def backward(self, dy):
        return dy * (1 - self._y * self._y)


class Sigmoid(Elementwise):
    """``1 / (1 + exp(-x))``; derivative ``s (1 - s)``. Computed without overflow."""

    def forward(self, x, training=False):
        x = self._prepare(x)
        e = np.exp(-np.abs(x))                              # never overflows
        self._y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(self.dtype)
        return self._y

    def backward(self, dy):
        return dy * self._y * (1 - self._y)
