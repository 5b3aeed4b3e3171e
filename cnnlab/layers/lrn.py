r"""Local response normalisation (Krizhevsky, Sutskever and Hinton 2012, section 3.3).

Each activation is divided by the energy of its neighbours across channels at the same pixel,
so a strongly responding filter damps the filters beside it ("lateral inhibition"):

.. math::

    d_c = k + \frac{\alpha}{n} \sum_{c' = c - \lfloor (n-1)/2 \rfloor}^{c + \lceil (n-1)/2 \rceil} x_{c'}^2,
    \qquad y_c = x_c \, d_c^{-\beta}

with the sum clipped to the channels that exist. This is ONNX's ``LRN`` (``size = n``, ``bias = k``)
and, for odd ``n`` (AlexNet, ZFNet and GoogLeNet use ``n = 5``), PyTorch's ``LocalResponseNorm``
(for even ``n`` PyTorch puts the extra neighbour before ``c``, ONNX after). The backward pass:

.. math::

    \frac{\partial L}{\partial x_j} = g_j d_j^{-\beta}
        - \frac{2 \alpha \beta}{n} x_j \sum_{c \,:\, j \in \text{window}(c)} g_c\, x_c\, d_c^{-\beta - 1}

where ``g = dL/dy``; the second sum runs over the mirrored window. Shapes: ``(N, H, W, C)`` in and out.
"""
from __future__ import annotations

import numpy as np

from ..checks import check_positive_int
from .base import Layer


def window_sum(a, before, after):
    """``out[..., c] = sum(a[..., c - before : c + after + 1])`` over the last axis, clipped at the ends."""
    c = a.shape[-1]
    padded = np.zeros(a.shape[:-1] + (c + before + after + 1,), a.dtype)
    np.cumsum(a, axis=-1, out=padded[..., before + 1:before + 1 + c])
    padded[..., before + 1 + c:] = padded[..., before + c:before + c + 1]
    return padded[..., before + after + 1:] - padded[..., :c]


class LocalResponseNorm(Layer):
    """``y = x / (k + alpha / size * sum of x**2 over size neighbouring channels) ** beta`` (see the module)."""

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, name=None):
        super().__init__(name)
        self.size = check_positive_int("size", size, "LocalResponseNorm")
        for arg, value in (("alpha", alpha), ("beta", beta), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(value) or value < 0:
                raise ValueError(f"LocalResponseNorm: {arg} must be a finite number >= 0, received {value!r}")
        if k == 0 and alpha == 0:
            raise ValueError("LocalResponseNorm: k and alpha are both 0, which divides by zero")
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    any_spatial_size = True

    def compute_output_shape(self, input_shape):
        self.require_image(input_shape)
        return tuple(input_shape)

    def _window(self):
        return (self.size - 1) // 2, self.size // 2          # channels before and after c (ONNX's rule)

    def forward(self, x, training=False):
        x = self._prepare(x)
        before, after = self._window()
        d = window_sum(x * x, before, after)
        d *= self.alpha / self.size
        d += self.k
        scale = d ** -self.beta
        self._cache = (x, d, scale)
        return x * scale

    def backward(self, dy):
        x, d, scale = self._cache
        before, after = self._window()
        g = dy * x * scale / d                                # g_c x_c d_c^(-beta-1)
        return dy * scale - (2 * self.alpha * self.beta / self.size) * x * window_sum(g, after, before)

    def get_config(self):
        return {"size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}
