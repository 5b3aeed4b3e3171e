r"""Facts about convolution the lesson states, each computed so that a test can check it.

**The kernel's gradient is a sum of input patches.** For
``y[n, u, v, f] = b[f] + sum_{i, j, c} k[i, j, c, f] * x_pad[n, u*s + i*d, v*s + j*d, c]``
and an upstream error ``dy = dL/dy``::

    dL/dk[:, :, :, f] = sum_{n, u, v} dy[n, u, v, f] * patch(n, u, v)

where ``patch(n, u, v)[i, j, c] = x_pad[n, u*s + i*d, v*s + j*d, c]`` is what the
neuron saw at ``(u, v)``. A gradient step ``k <- k - lr * dL/dk`` therefore
*adds input patches* to the kernel, each weighted by minus its error: training
pulls the kernel toward the patches that should have excited it more.
:func:`kernel_gradient_from_patches` computes exactly that sum, position by
position (the layer itself computes it as one matrix product).

**Two stacked linear convolutions are one convolution** whose kernel is the
convolution of the two kernels. With stride 1, no padding, no activation::

    z[u] = sum_p k2[p] y[u + p] = sum_p sum_i k2[p] k1[i] x[u + p + i] = sum_t K[t] x[u + t],
    K[t, c, f] = sum_{p + i = t} sum_m k1[i, c, m] k2[p, m, f]

``K`` is ``(kh1 + kh2 - 1) x (kw1 + kw2 - 1)``: a 3x3 after a 3x3 sees 5x5.
For one channel, ``K = k1 * k2`` (true convolution), the same sum as the
density of a sum of independent variables, ``p_{X+Y}(t) = sum_i p_X(i) p_Y(t - i)``.
:func:`compose_kernels` computes ``K`` with the project's own ``Conv2D``
(``k1`` as an image, ``k2`` flipped as the kernel, full padding), and
:func:`density_of_sum` uses the same layer for two 1-D densities.

**A non-negative kernel summing to 1 is a displacement density.** Blurring with it,
``(x conv w)[u] = sum_d w[d] x[u + d - r]``, is the expectation of the image seen
after a random jitter ``D ~ w`` (offset by the kernel's centre ``r``):
:func:`blur` computes the left side with ``Conv2D``, :func:`expected_jitter`
the right side as a weighted sum of shifted copies.
"""
from __future__ import annotations

import numpy as np

from ..layers.conv import Conv2D, pad_hw, resolve_padding


def kernel_gradient_from_patches(layer, x, dy) -> np.ndarray:
    """``dL/dkernel`` (kh, kw, C, F) of conv ``layer`` as ``sum_{n,u,v} dy[n,u,v,f] * patch(n,u,v)``, in float64.

    ``x`` (N, H, W, C) is the layer's input and ``dy`` (N, Ho, Wo, F) the error at its output.
    Only ``groups=1`` (every filter sees every channel).
    """
    if layer.groups != 1:
        raise ValueError(f"{layer.label}: the patch sum is written for groups=1, the layer has {layer.groups}")
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation
    xp = pad_hw(x, resolve_padding(layer.padding, x.shape[1:3], layer.kernel_size, layer.strides, layer.dilation))
    grad = np.zeros((kh, kw, x.shape[3], dy.shape[3]))
    for u in range(dy.shape[1]):
        for v in range(dy.shape[2]):
            patch = xp[:, u * sh:u * sh + (kh - 1) * dh + 1:dh, v * sw:v * sw + (kw - 1) * dw + 1:dw]  # (N, kh, kw, C)
            grad += np.einsum("nijc,nf->ijcf", patch, dy[:, u, v])
    return grad


def _conv(kernel, padding="valid", dtype=np.float64):
    """A bias-free ``Conv2D`` holding ``kernel`` (kh, kw, C, F), built for any input size."""
    kernel = np.asarray(kernel, dtype)
    kh, kw, c, f = kernel.shape
    layer = Conv2D(f, (kh, kw), padding=padding, use_bias=False)
    layer.build((max(kh, 1), max(kw, 1), c), dtype=dtype)
    layer.params["kernel"] = kernel.copy()
    return layer


def compose_kernels(k1, k2) -> np.ndarray:
    """The kernel ``K`` (kh1+kh2-1, kw1+kw2-1, C, F) of ``conv(k2) after conv(k1)`` (module docstring).

    ``k1`` is (kh1, kw1, C, M), ``k2`` (kh2, kw2, M, F); computed by ``Conv2D`` with ``k2`` flipped,
    applied to ``k1`` taken as M-channel images, one per input channel ``c``, padded by ``kh2 - 1``.
    """
    k1, k2 = np.asarray(k1, np.float64), np.asarray(k2, np.float64)
    if k1.ndim != 4 or k2.ndim != 4 or k1.shape[3] != k2.shape[2]:
        raise ValueError(f"kernels must be (kh, kw, C, M) and (kh, kw, M, F); received {k1.shape} and {k2.shape}")
    kh2, kw2 = k2.shape[:2]
    layer = _conv(k2[::-1, ::-1], padding=(kh2 - 1, kw2 - 1))
    return layer.forward(k1.transpose(2, 0, 1, 3)).transpose(1, 2, 0, 3)


def stacking_error(k1, k2, images) -> float:
    """``max |conv_k2(conv_k1(x)) - conv_K(x)|`` over ``images`` (N, H, W, C), ``K = compose_kernels(k1, k2)``,
    every convolution bias-free with 'valid' padding, in float64: zero up to round-off."""
    x = np.asarray(images, np.float64)
    two = _conv(k2).forward(_conv(k1).forward(x))
    one = _conv(compose_kernels(k1, k2)).forward(x)
    return float(np.abs(two - one).max())


def density_of_sum(p, q) -> np.ndarray:
    """The distribution of ``X + Y`` for independent ``X ~ p``, ``Y ~ q`` on 0, 1, 2, ...: ``(p * q)[t]``.

    ``p_{X+Y}(t) = sum_i p(i) q(t - i)``, computed by :func:`compose_kernels` on 1 x n kernels.
    """
    p, q = np.asarray(p, np.float64).ravel(), np.asarray(q, np.float64).ravel()
    return compose_kernels(p[None, :, None, None], q[None, :, None, None])[0, :, 0, 0]


def blur(images, density) -> np.ndarray:
    """``images`` (N, H, W, C) filtered, channel by channel, with ``density`` (kh, kw) by ``Conv2D``, zero padding "same".

    ``density`` must be non-negative and sum to 1, with odd sides (so it has a centre).
    """
    w = np.asarray(density, np.float64)
    if w.ndim != 2 or w.min() < 0 or not np.isclose(w.sum(), 1.0) or w.shape[0] % 2 == 0 or w.shape[1] % 2 == 0:
        raise ValueError(f"a displacement density is a non-negative (odd, odd) array summing to 1; "
                         f"received shape {w.shape}, min {w.min():.3g}, sum {w.sum():.6g}")
    x = np.asarray(images, np.float64)
    n, h, wd, c = x.shape
    out = _conv(w[:, :, None, None], padding="same").forward(x.transpose(0, 3, 1, 2).reshape(n * c, h, wd, 1))
    return out.reshape(n, c, h, wd).transpose(0, 2, 3, 1)


def expected_jitter(images, density) -> np.ndarray:
    """``E[x(u + D - r)]`` for a random displacement ``D ~ density`` (``r`` its centre), pixels outside read 0.

    Computed as the sum of the shifted copies of the image weighted by their probabilities.
    """
    w = np.asarray(density, np.float64)
    x = np.asarray(images, np.float64)
    rh, rw = w.shape[0] // 2, w.shape[1] // 2
    xp = pad_hw(x, (rh, rh, rw, rw))
    out = np.zeros_like(x)
    for i, j in zip(*np.nonzero(w)):
        out += w[i, j] * xp[:, i:i + x.shape[1], j:j + x.shape[2]]
    return out
