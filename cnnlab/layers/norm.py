r"""Batch normalization (Ioffe & Szegedy 2015) over the last (channel) axis.

Training: every channel is normalized with the mean and variance of the batch
(over N, and H, W for images), then scaled and shifted by learned ``gamma``
and ``beta``::

    x_hat = (x - mean) / sqrt(var + eps),    y = gamma * x_hat + beta

Running estimates ``running = (1 - momentum) * running + momentum * batch``
(the unbiased variance, as in PyTorch) replace the batch statistics at inference.
"""
from __future__ import annotations

import numpy as np

from .base import Layer


class BatchNorm(Layer):
    def __init__(self, momentum=0.1, eps=1e-5, name=None):
        super().__init__(name)
        if not (isinstance(momentum, (int, float)) and 0 <= momentum <= 1):
            raise ValueError(f"BatchNorm: momentum must be in [0, 1], received {momentum!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"BatchNorm: eps must be > 0, received {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)

    def param_shapes(self, input_shape):
        c = (input_shape[-1],)
        return {"gamma": c, "beta": c, "running_mean": c, "running_var": c}

    def build_params(self, input_shape):
        c = input_shape[-1]
        self.params["gamma"] = np.ones(c, self.dtype)
        self.params["beta"] = np.zeros(c, self.dtype)
        self.buffers["running_mean"] = np.zeros(c, self.dtype)
        self.buffers["running_var"] = np.ones(c, self.dtype)

    def forward(self, x, training=False):
        x = self._prepare(x)
        axes = tuple(range(x.ndim - 1))                     # every axis but the channels
        self._batch_stats = None
        if training:
            count = x.size // x.shape[-1]
            if count < 2:
                raise ValueError(f"{self.label}: training needs more than one value per channel, received input {x.shape}")
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            self._batch_stats = (mean, var * (count / (count - 1)))   # unbiased variance for the running estimate
            if not self.is_replica:                 # replicas leave the shared buffers to merge_replicas
                self._update_running(*self._batch_stats)
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        inv_std = (1 / np.sqrt(var + self.eps)).astype(self.dtype)
        x_hat = (x - mean) * inv_std
        self._cache = (x_hat, inv_std, axes, training)
        return x_hat * self.params["gamma"] + self.params["beta"]

    def _update_running(self, mean, unbiased_var):
        m = self.momentum
        self.buffers["running_mean"] *= 1 - m
        self.buffers["running_mean"] += m * mean
        self.buffers["running_var"] *= 1 - m
        self.buffers["running_var"] += m * unbiased_var

    def shard_statistics_shapes(self):
        c = self.params["gamma"].shape
        return {"mean": c, "var": c}

    def merge_replicas(self, replicas):
        """Each replica normalized its own shard of the batch (ghost batch normalization, as in
        data-parallel training); the running estimates take the average of the shards' statistics."""
        super().merge_replicas(replicas)
        stats = [r._batch_stats for r in replicas]
        if all(s is not None for s in stats):
            self._update_running(np.mean([s[0] for s in stats], axis=0), np.mean([s[1] for s in stats], axis=0))

    def backward(self, dy):
        x_hat, inv_std, axes, training = self._cache
        self.grads["gamma"][...] = (dy * x_hat).sum(axis=axes)
        self.grads["beta"][...] = dy.sum(axis=axes)
        if not self.needs_input_grad:
            return None
        dx_hat = dy * self.params["gamma"]
        if not training:                                    # statistics are constants
            return dx_hat * inv_std
        # Through the batch statistics: dx = (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)) / std
        return (dx_hat - dx_hat.mean(axis=axes) - x_hat * (dx_hat * x_hat).mean(axis=axes)) * inv_std

    def get_config(self):
        return {"momentum": self.momentum, "eps": self.eps}
