r"""Channel shuffle (Zhang et al. 2018, ShuffleNet): mix the channels of grouped convolutions.

A convolution with ``g`` groups lets each output see only its own group's inputs; shuffling the
channels before the next grouped convolution gives every group a share of every other group's
outputs. With ``C = g m`` channels, view them as a ``(g, m)`` grid, transpose it and read it back:

.. math::

    y_{i g + j} = x_{j m + i}, \qquad 0 \le i < m,\ 0 \le j < g

(ONNX writes it as ``Reshape (N, g, m, H, W)``, ``Transpose [0, 2, 1, 3, 4]``, ``Reshape (N, C, H, W)``).
It is a permutation, so the backward pass is the inverse permutation: the ``(m, g)`` grid transposed
back. Shapes: ``(N, H, W, C)`` in and out; no parameters.
"""
from __future__ import annotations


from ..checks import check_positive_int
from .base import Layer


class ChannelShuffle(Layer):
    """Permute ``C = groups * m`` channels as the ``(groups, m)`` grid read by columns (see the module)."""

    def __init__(self, groups=2, name=None):
        super().__init__(name)
        self.groups = check_positive_int("groups", groups, "ChannelShuffle")

    any_spatial_size = True

    def compute_output_shape(self, input_shape):
        self.require_image(input_shape)
        if input_shape[-1] % self.groups:
            raise ValueError(f"{self.label}: {input_shape[-1]} channels do not split into {self.groups} groups")
        return tuple(input_shape)

    def _permute(self, x, rows):
        n, h, w, c = x.shape
        return x.reshape(n, h, w, rows, c // rows).swapaxes(3, 4).reshape(n, h, w, c)

    def forward(self, x, training=False):
        return self._permute(self._prepare(x), self.groups)

    def backward(self, dy):
        return self._permute(dy, dy.shape[-1] // self.groups)

    def get_config(self):
        return {"groups": self.groups}
