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

from . import compiled
from .base import Layer


class BatchNorm(Layer):
    def __init__(self, momentum=0.1, eps=1e-5, name=None):
        super().__init__(name)
        if not (isinstance(momentum, (int, float)) and 0 <= momentum <= 1):
            raise ValueError(f"BatchNorm: momentum must be in [0, 1], received {momentum!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"BatchNorm: eps must be > 0, received {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)
        self._batch_stats = None                            # (mean, unbiased var) of the last training batch
        self._residual = None                               # forward_add_relu's (compiled or not, output)

    def param_shapes(self, input_shape):
        c = (input_shape[-1],)
        return {"gamma": c, "beta": c, "running_mean": c, "running_var": c}

    def build_params(self, input_shape):
        c = input_shape[-1]
        self.params["gamma"] = np.ones(c, self.dtype)
        self.params["beta"] = np.zeros(c, self.dtype)
        self.buffers["running_mean"] = np.zeros(c, self.dtype)
        self.buffers["running_var"] = np.ones(c, self.dtype)

    # Computed on the channels-first matrix (C, everything else) behind the batch: for images the
    # (C, H, W, N) array convolution and pooling already hand over (a view, no copy), for (N, C) a
    # transposed copy. Per-channel sums are one matrix-vector product; the normalized batch is formed
    # in two passes (centre, then scale and shift) and the backward pass in four.
    @staticmethod
    def _channels_first(a):
        """``a`` (N, ..., C) as a contiguous (C, ..., N) array (a view when it already lives that way), and
        the axis order that turns it back (the same order: swapping the first and last axes is its own inverse)."""
        order = (a.ndim - 1, *range(1, a.ndim - 1), 0)
        return np.ascontiguousarray(a.transpose(order)), order

    def _rows(self, x, training):
        """The batch as channels-first ``xc``, its axis ``order`` and the (C, M) view ``flat``, one row per
        channel; checks a training batch has more than one value per channel."""
        x = self._prepare(x)
        xc, order = self._channels_first(x)
        flat = xc.reshape(xc.shape[0], -1)                  # view: (C, M)
        self._batch_stats = None
        if training and flat.shape[1] < 2:
            raise ValueError(f"{self.label}: training needs more than one value per channel, received input {x.shape}")
        return xc, order, flat

    def forward(self, x, training=False):
        xc, order, flat = self._rows(x, training)
        count = flat.shape[1]
        if training:
            mean = flat @ np.ones(count, self.dtype) / self.dtype.type(count)
            xm = flat - mean[:, None]
            var = np.einsum("ij,ij->i", xm, xm) / self.dtype.type(count)
            self._record(mean, var, count)
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
            xm = flat - mean[:, None]
        inv_std = (1 / np.sqrt(var + self.eps)).astype(self.dtype)
        self._cache = (xm, inv_std, order, training)      # x - mean: x_hat = (x - mean) * inv_std
        y = np.multiply(xm, (self.params["gamma"] * inv_std)[:, None])
        y += self.params["beta"][:, None]
        return y.reshape(xc.shape).transpose(order)

    def _record(self, mean, var, count):
        """Keep a training batch's statistics (for merging shards) and update the running estimates."""
        self._batch_stats = (mean, var * (count / (count - 1)))   # unbiased variance for the running estimate
        if not self.is_replica:                 # replicas leave the shared buffers to merge_replicas
            self._update_running(*self._batch_stats)

    # ``BatchNorm`` followed by ``ReLU`` as one step (cnnlab.stack runs them so when the compiled loops of
    # compiled.py are there): ``relu(forward(x))`` in two passes over memory instead of seven, and a backward
    # pass in two instead of eight. It keeps only its input (the normalized batch and the ReLU's mask are
    # recomputed from it), where the two layers keep x - mean and the output.
    def forward_relu(self, x, training=False):
        """``max(self.forward(x, training), 0)``, computed by the compiled loops."""
        xc, order, flat = self._rows(x, training)
        mean, inv_std, scale = self._affine(flat, training)
        y = compiled.batchnorm_relu(flat, mean, scale, self.params["beta"], np.empty_like(flat))
        self._cache = (flat, mean, inv_std, scale, order, training)
        return y.reshape(xc.shape).transpose(order)

    def _affine(self, flat, training):
        """``(mean, inv_std, scale)`` of the fused steps: the batch's (recorded) or the running statistics."""
        if training:
            mean, var = (a.astype(self.dtype) for a in compiled.batchnorm_stats(flat))
            self._record(mean, var, flat.shape[1])
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        inv_std = (1 / np.sqrt(var + self.eps)).astype(self.dtype)
        return mean, inv_std, (self.params["gamma"] * inv_std).astype(self.dtype)

    def _fused_grads(self, sum_g, sum_gxm, inv_std, scale, count, training):
        """Fill the gradients of gamma and beta from the sums; return ``(a, b)`` of the input gradient
        ``dx = g scale - (x - mean) a - b`` (zeros at inference), or None when no input gradient is needed."""
        self.grads["gamma"][...] = sum_gxm * inv_std
        self.grads["beta"][...] = sum_g
        if not self.needs_input_grad:
            return None
        if not training:
            return np.zeros_like(scale), np.zeros_like(scale)
        return ((scale * inv_std * inv_std * sum_gxm / count).astype(self.dtype),   # through the batch statistics,
                (scale * sum_g / count).astype(self.dtype))                          # as in backward

    def backward_relu(self, dy):
        """The gradient of ``forward_relu``: the ReLU's, then BatchNorm's (see ``backward``), in two passes."""
        flat, mean, inv_std, scale, order, training = self._cache
        c, count = flat.shape
        dyc, _ = self._channels_first(np.asarray(dy, dtype=self.dtype))
        shape = dyc.shape
        dyc = dyc.reshape(c, -1)                            # view: (C, M)
        beta = self.params["beta"]
        sum_g, sum_gxm = compiled.batchnorm_relu_sums(flat, dyc, mean, scale, beta)   # g: dy where the output > 0
        ab = self._fused_grads(sum_g, sum_gxm, inv_std, scale, count, training)
        if ab is None:
            return None
        dx = compiled.batchnorm_relu_input_grad(flat, dyc, mean, scale, beta, *ab, np.empty_like(dyc))
        return dx.reshape(shape).transpose(order)

    # ``BatchNorm`` -> ``Add`` (a residual branch ``r``) -> ``ReLU``, the end of a residual block, as one step
    # (cnnlab.stack): ``y = relu(forward(x) + r)``. With the compiled loops the output is one pass and the
    # backward pass two (the ReLU's mask is read from the output, which the next layer keeps anyway); without
    # them the same NumPy operations as the three layers, in place. The branch's gradient is ``g``, the
    # gradient that passes the ReLU: ``dL/dr = g = dy [y > 0]``, ``dL/dx`` = BatchNorm's backward of ``g``.
    def forward_add_relu(self, x, r, training=False):
        """``max(self.forward(x, training) + r, 0)`` for ``r`` of ``x``'s shape."""
        if not compiled.enabled():
            y = self.forward(x, training)                       # a new array (a view of it): add in place
            y += np.asarray(r, dtype=self.dtype)
            np.maximum(y, 0, out=y)
            self._residual = (False, y)
            return y
        xc, order, flat = self._rows(x, training)
        r = np.asarray(r, dtype=self.dtype)
        if r.shape != x.shape:
            raise ValueError(f"{self.label}: the residual branch has shape {r.shape}, the input {x.shape}")
        rflat = self._channels_first(r)[0].reshape(flat.shape)  # a view where r lives channels-first
        mean, inv_std, scale = self._affine(flat, training)
        y = compiled.batchnorm_relu(flat, mean, scale, self.params["beta"], np.empty_like(flat), rflat)
        self._cache = (flat, mean, inv_std, scale, order, training)
        self._residual = (True, y)
        return y.reshape(xc.shape).transpose(order)

    def backward_add_relu(self, dy):
        """The gradients of ``forward_add_relu``: ``[dL/dx, dL/dr]`` (``dL/dx`` None where not needed)."""
        fused, y = self._residual
        if not fused:
            g = dy * (y > 0)                                    # the ReLU's backward, then BatchNorm's
            return [self.backward(g), g]
        flat, mean, inv_std, scale, order, training = self._cache
        c, count = flat.shape
        dyc, _ = self._channels_first(np.asarray(dy, dtype=self.dtype))
        shape = dyc.shape
        g = np.empty_like(flat)
        sums = compiled.batchnorm_relu_sums(flat, dyc.reshape(c, -1), mean, scale, self.params["beta"], y, g)
        dr = g.reshape(shape).transpose(order)
        ab = self._fused_grads(*sums, inv_std, scale, count, training)
        if ab is None:
            return [None, dr]
        dx = compiled.batchnorm_input_grad(flat, g, mean, scale, *ab, np.empty_like(flat))
        return [dx.reshape(shape).transpose(order), dr]

    # ``BatchNorm`` -> ``ReLU`` -> ``MaxPool2D`` with windows that do not overlap, as one step (cnnlab.stack,
    # with the compiled loops): the pool's window maximum of the normalized values, clipped at 0, is all that
    # is written, and the backward pass reads the input once for the sums and once for the input gradient.
    def forward_relu_pool(self, x, pool, training=False):
        """``pool.forward(max(self.forward(x, training), 0))`` for a ``MaxPool2D`` ``pool``, by the compiled loops."""
        xc, order, flat = self._rows(x, training)
        if xc.ndim != 4:
            raise ValueError(f"{self.label}: pooling needs images (N, H, W, C), received {x.shape}")
        mean, inv_std, scale = self._affine(flat, training)
        pads, (ho, wo) = pool._geometry(pool._prepare(x))                      # the pool sees the same shape
        geometry = (*pool.pool_size, *pool.strides, pads[0], pads[2])
        y = np.empty((xc.shape[0], ho, wo, xc.shape[3]), self.dtype)            # (C, Ho, Wo, N)
        tap = np.empty(y.shape, np.uint8)                                      # which tap of each window won
        compiled.batchnorm_relu_max_pool(xc, mean, scale, self.params["beta"], *geometry, y, tap)
        self._cache = (xc, mean, inv_std, scale, training, tap, geometry)
        return y.transpose(order)                                               # (N, Ho, Wo, C), a view

    def backward_relu_pool(self, dy):
        """The gradient of ``forward_relu_pool``."""
        xc, mean, inv_std, scale, training, tap, geometry = self._cache
        dyc, order = self._channels_first(np.asarray(dy, dtype=self.dtype))    # (C, Ho, Wo, N)
        beta = self.params["beta"]
        sums = compiled.batchnorm_relu_max_pool_sums(xc, dyc, tap, mean, scale, beta, *geometry)
        ab = self._fused_grads(*sums, inv_std, scale, xc[0].size, training)
        if ab is None:
            return None
        dx = compiled.batchnorm_relu_max_pool_input_grad(xc, dyc, tap, mean, scale, beta, *ab, *geometry,
                                                         np.empty_like(xc))
        return dx.transpose(order)

    def folded(self):
        """``(scale, shift)``, per channel: at inference this layer computes ``x * scale + shift``, a map that
        the convolution or dense layer before it can absorb (``Conv2D.forward_folded``)."""
        inv_std = (1 / np.sqrt(self.buffers["running_var"] + self.eps)).astype(self.dtype)
        scale = self.params["gamma"] * inv_std
        return scale, self.params["beta"] - self.buffers["running_mean"] * scale

    def _update_running(self, mean, unbiased_var):
        m = self.momentum
        self.buffers["running_mean"] *= 1 - m
        self.buffers["running_mean"] += m * mean
        self.buffers["running_var"] *= 1 - m
        self.buffers["running_var"] += m * unbiased_var

    def shard_statistics_shapes(self):
        c = self.params["gamma"].shape
        return {"mean": c, "var": c}

    def shard_statistics(self):
        """The last training batch's per-channel mean and unbiased variance (``None`` before one)."""
        return None if self._batch_stats is None else dict(zip(("mean", "var"), self._batch_stats))

    def merge_replicas(self, replicas):
        """Each replica normalized its own shard of the batch (ghost batch normalization, as in
        data-parallel training); the running estimates take the average of the shards' statistics."""
        super().merge_replicas(replicas)
        stats = [r.shard_statistics() for r in replicas]
        if all(s is not None for s in stats):
            self._update_running(np.mean([s["mean"] for s in stats], axis=0),
                                 np.mean([s["var"] for s in stats], axis=0))

    def backward(self, dy):
        xm, inv_std, order, training = self._cache
        c, count = xm.shape
        dyc, _ = self._channels_first(np.asarray(dy, dtype=self.dtype))
        shape = dyc.shape
        dyc = dyc.reshape(c, -1)                            # view: (C, M)
        sum_dy = dyc @ np.ones(count, self.dtype)
        sum_dy_xm = np.einsum("ij,ij->i", dyc, xm)
        self.grads["gamma"][...] = sum_dy_xm * inv_std      # sum(dy * x_hat)
        self.grads["beta"][...] = sum_dy
        if not self.needs_input_grad:
            return None
        scale = self.params["gamma"] * inv_std
        dx = np.multiply(dyc, scale[:, None])
        if training:
            # Through the batch statistics: dx = gamma inv_std (dy - mean(dy) - x_hat mean(dy x_hat)), with
            # x_hat = xm inv_std: dx = scale dy - xm (scale inv_std^2 sum(dy xm) / M) - scale sum(dy) / M
            shift = np.multiply(xm, (scale * inv_std * inv_std * sum_dy_xm / count)[:, None])
            shift += (scale * sum_dy / count)[:, None]
            dx -= shift
        return dx.reshape(shape).transpose(order)

    def get_config(self):
        return {"momentum": self.momentum, "eps": self.eps}
