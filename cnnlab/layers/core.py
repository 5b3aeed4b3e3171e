"""The feed-forward pieces: Flatten, Dense (a fully connected layer) and Dropout."""
from __future__ import annotations

import numpy as np

from .. import initializers
from ..checks import check_positive_int
from .base import Layer


class Flatten(Layer):
    """(N, H, W, C) -> (N, H*W*C), in C order (channels vary fastest)."""

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, training=False):
        x = self._prepare(x)
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)  # a view when x is contiguous

    def backward(self, dy):
        return dy.reshape(self._shape)


class Dense(Layer):
    """Fully connected: ``y = x @ W + b`` with ``W`` of shape (in, units).

    Every output neuron sees every input: the layer a CNN's features feed.
    """

    def __init__(self, units, use_bias=True, kernel_initializer="he_uniform", name=None):
        super().__init__(name)
        self.units = check_positive_int("units", units, "Dense")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self.label}: expects flat features (N, D); received per-example shape "
                             f"{tuple(input_shape)} (add a Flatten layer before it)")
        return (self.units,)

    def param_shapes(self, input_shape):
        shape = {"kernel": (input_shape[0], self.units)}
        return {**shape, "bias": (self.units,)} if self.use_bias else shape

    def build_params(self, input_shape):
        d = input_shape[0]
        self.params["kernel"] = self.kernel_initializer((d, self.units), d, self.units, self.rng).astype(self.dtype)
        if self.use_bias:
            self.params["bias"] = np.zeros(self.units, self.dtype)

    def forward(self, x, training=False):
        self._x = self._prepare(x)
        y = self._x @ self.params["kernel"]
        if self.use_bias:
            y += self.params["bias"]
        return y

    def forward_folded(self, x, scale, shift, relu=False):
        """Inference of this layer followed by ``y * scale + shift`` per unit (then ``max(., 0)`` where
        ``relu``), with the map folded into the weights (see ``Conv2D.forward_folded``)."""
        kernel, bias = self.folded_params(scale, shift)
        y = self._prepare(x) @ kernel
        y += bias
        return np.maximum(y, 0, out=y) if relu else y

    def backward(self, dy):
        np.matmul(self._x.T, dy, out=self.grads["kernel"])
        if self.use_bias:
            np.sum(dy, axis=0, out=self.grads["bias"])
        return dy @ self.params["kernel"].T if self.needs_input_grad else None

    def macs(self):
        return self.input_shape[0] * self.units

    def get_config(self):
        return {"units": self.units, "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer.name}


class Dropout(Layer):
    """During training, zero each value with probability ``rate`` and scale the rest by ``1/(1-rate)``.

    At inference it is the identity (inverted dropout), so no rescaling is needed then.
    """

    stochastic = True

    def __init__(self, rate=0.5, name=None):
        super().__init__(name)
        if not (isinstance(rate, (int, float)) and 0 <= rate < 1):
            raise ValueError(f"Dropout: rate must be a number in [0, 1), received {rate!r}")
        self.rate = float(rate)

    def forward(self, x, training=False):
        x = self._prepare(x)
        if not training or self.rate == 0:
            self._scale = None
            return x
        keep = self.rng.random(x.shape, dtype=self.dtype) >= self.rate
        self._scale = keep * self.dtype.type(1 / (1 - self.rate))
        return x * self._scale

    def backward(self, dy):
        return dy if self._scale is None else dy * self._scale

    def get_config(self):
        return {"rate": self.rate}
