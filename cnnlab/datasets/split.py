"""Holding out a validation set: one rule for ``cnnlab train`` and ``Sequential.fit(validation_split=...)``.

The held-out images are chosen by a permutation from their own generator,
seeded by ``split_seed_for(seed)``: the split depends only on the seed and the
number of images, never on how far the model's own generator has run, so a
resumed run holds out the same images as before.
"""
from __future__ import annotations

import numpy as np


def split_seed_for(seed: int) -> int:
    """The seed of the validation split: derived from the run's seed, independent of the model's generator."""
    return int(np.random.SeedSequence([int(seed), 0x5B117]).generate_state(1)[0])


def split_train_val(x, y, val_split, split_seed):
    """``(x_train, y_train), (x_val, y_val)``: hold out ``val_split`` of (x, y) after a shuffle seeded by ``split_seed``.

    ``n_val = max(1, round(N * val_split))`` images are held out; both parts keep the original order.
    ``val_split = 0`` returns ``(x, y), None``.
    """
    if not val_split:
        return (x, y), None
    n = len(x)
    n_val = max(1, int(round(n * val_split)))
    if n_val >= n:
        raise ValueError(f"a validation split of {val_split} leaves no training images out of {n}")
    order = np.random.default_rng(split_seed).permutation(n)
    tr, va = np.sort(order[n_val:]), np.sort(order[:n_val])
    return (x[tr], y[tr]), (x[va], y[va])
