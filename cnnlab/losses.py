r"""Classifier heads as losses: the standard classifier on top of the CNN's features.

Both take raw class scores (logits) of shape (N, K) and integer labels (N,),
return the mean loss over the batch, and give its gradient with respect to
the scores in ``backward()``.

* ``SoftmaxCrossEntropy``: ``p = softmax(z)``, ``loss = -sum_k t_k log p_k`` with
  targets ``t`` one-hot, optionally smoothed to ``(1 - eps) onehot + eps / K``.
  Fused with the softmax, the gradient is simply ``(p - t) / N``. Computed from
  ``z - max(z)`` with log-sum-exp, so it never overflows.
* ``MulticlassHinge``: the multiclass SVM (Weston & Watkins 1999, as in CS231n):
  ``loss = sum_{k != y} max(0, z_k - z_y + margin)``; the gradient is +1 for
  every violating class and minus their count for the true class.
"""
from __future__ import annotations

import numpy as np


def _check(logits, y, name):
    logits = np.asarray(logits)
    y = np.asarray(y)
    if logits.ndim != 2:
        raise ValueError(f"{name}: expected scores of shape (N, classes), received {logits.shape}")
    if y.shape != (logits.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name}: expected integer labels of shape ({logits.shape[0]},), received {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= logits.shape[1]):
        raise ValueError(f"{name}: labels must lie in [0, {logits.shape[1] - 1}], received values in "
                         f"[{y.min()}, {y.max()}]")
    return logits, y


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for any magnitude of ``z``."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class SoftmaxCrossEntropy:
    name = "softmax"

    def __init__(self, label_smoothing: float = 0.0):
        if not (isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing < 1):
            raise ValueError(f"SoftmaxCrossEntropy: label_smoothing must be in [0, 1), received {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits, y) -> float:
        z, y = _check(logits, y, "SoftmaxCrossEntropy")
        n, k = z.shape
        shifted = z - z.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))   # log-softmax
        eps = self.label_smoothing
        picked = log_p[np.arange(n), y]
        loss = -((1 - eps) * picked + eps * log_p.mean(axis=1)).mean()
        self._cache = (np.exp(log_p), y, z.dtype)
        return float(loss)

    def backward(self) -> np.ndarray:
        p, y, dtype = self._cache
        n, k = p.shape
        t = np.full_like(p, self.label_smoothing / k)
        t[np.arange(n), y] += 1 - self.label_smoothing
        return ((p - t) / n).astype(dtype)

    def get_config(self):
        return {"label_smoothing": self.label_smoothing}


class MulticlassHinge:
    name = "svm"

    def __init__(self, margin: float = 1.0):
        if not (isinstance(margin, (int, float)) and margin > 0):
            raise ValueError(f"MulticlassHinge: margin must be > 0, received {margin!r}")
        self.margin = float(margin)

    def forward(self, logits, y) -> float:
        z, y = _check(logits, y, "MulticlassHinge")
        n = z.shape[0]
        rows = np.arange(n)
        margins = z - z[rows, y][:, None] + self.margin
        margins[rows, y] = 0                                 # the true class is not a violation
        violated = margins > 0
        self._cache = (violated, y, z.dtype)
        return float(np.where(violated, margins, 0).sum() / n)

    def backward(self) -> np.ndarray:
        violated, y, dtype = self._cache
        n = violated.shape[0]
        g = violated.astype(dtype)
        g[np.arange(n), y] = -violated.sum(axis=1)
        return g / dtype.type(n)

    def get_config(self):
        return {"margin": self.margin}


LOSSES = {"softmax": SoftmaxCrossEntropy, "svm": MulticlassHinge}


def get(loss):
    """A loss object from ``"softmax"``, ``"svm"`` or an instance."""
    if isinstance(loss, (SoftmaxCrossEntropy, MulticlassHinge)):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[loss]()
