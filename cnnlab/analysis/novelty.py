"""How far an input is from a model's training data: a novelty score, calibrated on held-out data.

The measure. For an image ``x`` (H, W, C) in [0, 1], summaries ``z_k(x)`` are taken at
``K`` places: the input itself (its mean, standard deviation, fraction of pixels above 0.5,
and mean absolute difference between vertical and between horizontal neighbours) and the
output of every activation or pooling layer with feature maps (each channel's mean and
standard deviation over the positions). Over the training images each summary is modelled
as one Gaussian, mean ``mu_k`` and covariance ``S_k`` (shrunk towards its mean variance by
``1e-3``), and its Mahalanobis distance

    d_k(x) = sqrt((z_k(x) - mu_k)^T S_k^-1 (z_k(x) - mu_k))

is divided by its median ``m_k`` over held-out images of the same data. The score is the
largest ratio, and an input is *far from the training data* when it exceeds the threshold
``t``, the ``quantile`` (0.97) of the scores of held-out images::

    s(x) = max_k d_k(x) / m_k,        far(x) = s(x) > t

so about 3% of the model's own held-out images are flagged (at most 5% on other held-out
images in the tests), while uniform noise, blank pages, photographs, natural images or
pictures of another dataset differ in their pixel statistics or in what the filters respond
to, and are flagged. (The distance of the penultimate features alone was tried and flagged
almost none of them: a foreign image's features are small, near the origin, which lies
among the class means.)

Shapes: ``x`` is ``(N, H, W, C)``; summaries are ``(N, D_k)``; scores ``(N,)``.
"""
from __future__ import annotations

import numpy as np

SHRINK = 1e-3


def summary_layers(model) -> list[str]:
    """The layers whose outputs are summarized: activations and poolings with (H, W, C) outputs."""
    from ..layers import activations, pool
    kinds = (activations.Elementwise, pool.Pool2D, pool.Subsample)
    return [layer.name for layer in model.layers if isinstance(layer, kinds) and len(layer.output_shape) == 3]


def summaries(model, x, layers=None, batch_size=250) -> dict[str, np.ndarray]:
    """``{"input": (N, 5), layer: (N, 2 C), ...}``: the statistics of the measure, in batches."""
    layers = summary_layers(model) if layers is None else list(layers)
    out: dict[str, list] = {"input": [], **{name: [] for name in layers}}
    for s in range(0, len(x), batch_size):
        xb = np.asarray(x[s:s + batch_size], np.float32)
        _, got = model.forward(xb, capture=layers)
        a = xb.astype(np.float64)
        out["input"].append(np.stack([a.mean((1, 2, 3)), a.std((1, 2, 3)), (a > 0.5).mean((1, 2, 3)),
                                      np.abs(np.diff(a, axis=1)).mean((1, 2, 3)),
                                      np.abs(np.diff(a, axis=2)).mean((1, 2, 3))], 1))
        for name in layers:
            v = np.asarray(got[name], np.float64)
            out[name].append(np.concatenate([v.mean((1, 2)), v.std((1, 2))], 1))
    return {k: np.concatenate(v) for k, v in out.items()}


def gaussian(z) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, S^-1)`` of samples ``z`` (N, D), the covariance shrunk by ``SHRINK`` of its mean variance."""
    mu = z.mean(0)
    cov = np.atleast_2d(np.cov(z, rowvar=False))
    cov = cov + np.eye(len(cov)) * SHRINK * max(np.trace(cov) / len(cov), 1e-12)
    return mu, np.linalg.inv(cov)


def mahalanobis(z, mu, precision) -> np.ndarray:
    d = z - mu
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", d, precision, d), 0.0))


class Novelty:
    """The calibrated measure for one model (see the module's docstring). Build it with :meth:`fit`."""

    def __init__(self, model, layers, gaussians, medians, threshold, quantile):
        self.model, self.layers, self.gaussians, self.medians = model, layers, gaussians, medians
        self.threshold, self.quantile = float(threshold), float(quantile)

    @classmethod
    def fit(cls, model, x_train, x_heldout, quantile=0.97) -> "Novelty":
        """Gaussians from ``x_train``, medians and the threshold from ``x_heldout`` (the model's own data)."""
        if len(x_train) < 2 or len(x_heldout) < 2:
            raise ValueError(f"calibration needs images: received {len(x_train)} training and "
                             f"{len(x_heldout)} held-out ones")
        layers = summary_layers(model)
        gaussians = {k: gaussian(z) for k, z in summaries(model, x_train, layers).items()}
        held = summaries(model, x_heldout, layers)
        medians = {k: max(float(np.median(mahalanobis(z, *gaussians[k]))), 1e-12) for k, z in held.items()}
        novelty = cls(model, layers, gaussians, medians, 0.0, quantile)
        novelty.threshold = float(np.quantile(novelty.ratios(held).max(1), quantile))
        return novelty

    def ratios(self, z) -> np.ndarray:
        """``(N, K)``: ``d_k / m_k`` for summaries ``z``."""
        return np.stack([mahalanobis(z[k], *self.gaussians[k]) / self.medians[k] for k in self.gaussians], 1)

    def scores(self, x) -> np.ndarray:
        """``s(x)`` for images ``x`` (N, H, W, C)."""
        return self.ratios(summaries(self.model, x, self.layers)).max(1)

    def flags(self, x) -> np.ndarray:
        """``True`` where an image is far from the training data."""
        return self.scores(x) > self.threshold

    def judge(self, x) -> dict:
        """One image ``x`` (H, W, C): ``{"far", "score", "threshold", "where"}``; ``where`` names the
        summary with the largest ratio (``"input"`` for the pixel statistics, else a layer)."""
        ratios = self.ratios(summaries(self.model, np.asarray(x)[None], self.layers))[0]
        k = int(np.argmax(ratios))
        return {"far": bool(ratios[k] > self.threshold), "score": float(ratios[k]), "threshold": self.threshold,
                "where": list(self.gaussians)[k]}
