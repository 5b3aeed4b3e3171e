"""Check a layer's backward pass against central finite differences in float64.

For a random projection ``r`` of the output, the scalar ``L(x) = sum(layer(x) * r)``
has gradient ``dL/dx = layer.backward(r)``. Each entry is compared with
``(L(x + h e_i) - L(x - h e_i)) / 2h``, and likewise for every parameter.
Use it on your own layers: a wrong backward shows up as a large relative error.
"""
from __future__ import annotations

import numpy as np


def numeric_gradient(f, a: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar function ``f()`` with respect to array ``a`` (perturbed in place)."""
    grad = np.zeros_like(a)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


def relative_error(a, b) -> float:
    """``||a - b|| / max(||a||, ||b||)`` (0 when both are zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else 0.0


def check_layer(layer, x, training=True, seed=0, h=1e-6) -> dict[str, float]:
    """Relative error of the analytic gradients of ``layer`` at ``x`` (float64), keyed ``"input"`` and by parameter.

    The layer is built for ``x`` in float64 if it is not built yet. Layers with
    randomness (dropout) are checked with a fixed mask by re-seeding their generator.
    """
    x = np.array(x, dtype=np.float64)
    if not layer.built:
        layer.build(x.shape[1:], rng=np.random.default_rng(seed), dtype=np.float64)
    rng_state = layer.rng.bit_generator.state

    def run():
        layer.rng.bit_generator.state = rng_state          # the same dropout mask every call
        return layer.forward(x, training=training)

    r = np.random.default_rng(seed + 1).standard_normal(run().shape)
    loss = lambda: float(np.sum(run() * r))                # noqa: E731
    run()
    dx = layer.backward(r)
    analytic = {"input": dx} if dx is not None else {}
    analytic.update({k: g.copy() for k, g in layer.grads.items()})
    errors = {}
    if dx is not None:
        errors["input"] = relative_error(dx, numeric_gradient(loss, x, h))
    for k, p in layer.params.items():
        errors[k] = relative_error(analytic[k], numeric_gradient(loss, p, h))
    return errors
