"""``shapes``: a built-in dataset of strokes, edges, corners and crosses.

Ten classes of grayscale line drawings, each at a random position, size,
aspect ratio, slight tilt, stroke width and brightness, with a little pixel
noise. The images are generated (no download), deterministic by seed, and
rendered from distance fields over the whole batch at once. Learning them
takes the local edge and corner detectors a convolution layer is made of,
while the random placement keeps position alone from telling them apart.
"""
from __future__ import annotations

import numpy as np

from ..checks import is_int

SHAPES_CLASSES = ["horizontal line", "vertical line", "diagonal \\", "diagonal /", "L-corner",
                  "plus cross", "x cross", "square", "circle", "T-junction"]

_H, _V = ((-1, 0), (1, 0)), ((0, -1), (0, 1))
_BACKSLASH, _SLASH = ((-1, -1), (1, 1)), ((-1, 1), (1, -1))
_BOX = [((-1, -1), (1, -1)), ((1, -1), (1, 1)), ((1, 1), (-1, 1)), ((-1, 1), (-1, -1))]
# Four segments per class in a unit frame (y pointing down), repeated when a
# shape has fewer. The circle is drawn as a ring; its box only bounds it.
_SEGMENTS = np.array([
    [_H] * 4, [_V] * 4, [_BACKSLASH] * 4, [_SLASH] * 4,
    [((-1, -1), (-1, 1)), ((-1, 1), (1, 1))] * 2,
    [_H, _V] * 2, [_BACKSLASH, _SLASH] * 2, _BOX, _BOX,
    [((-1, -1), (1, -1)), _V] * 2,
], dtype=np.float32)
_CIRCLE = 8
_CHUNK = 512


def _rotations(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2).astype(np.float32)


def _generate(n: int, size: int, rng: np.random.Generator):
    """``n`` images (n, size, size, 1) float32 and balanced labels (n,) int64."""
    y = rng.permutation(np.arange(n) % len(SHAPES_CLASSES))
    half = (rng.uniform(0.18, 0.33, n) * size).astype(np.float32)
    aspect = np.sqrt(rng.uniform(0.85, 1.18, n))
    tilt = np.deg2rad(rng.uniform(-10, 10, n))
    width = (rng.uniform(1.0, 2.6, n) * size / 28).astype(np.float32)
    bright = rng.uniform(0.6, 1.0, n).astype(np.float32)
    circle = y == _CIRCLE
    aspect[circle], tilt[circle] = 1.0, 0.0
    scale = np.stack([half * aspect, half / aspect], -1).astype(np.float32)
    transform = _rotations(tilt) * scale[:, None, :]
    pts = np.einsum("nij,nsej->nsei", transform, _SEGMENTS[y])  # (n, 4, 2 ends, 2 coords)
    lo, hi = pts.min(axis=(1, 2)), pts.max(axis=(1, 2))
    margin = (width / 2 + 0.5)[:, None]
    room = np.maximum(size - 1 - 2 * margin - (hi - lo), 0)
    shift = (margin - lo + rng.uniform(0, 1, (n, 2)) * room).astype(np.float32)
    pts += shift[:, None, None, :]
    noise = rng.standard_normal((n, size * size), dtype=np.float32) * 0.04

    gy, gx = np.mgrid[0:size, 0:size].astype(np.float32).reshape(2, 1, 1, -1)
    x = np.empty((n, size * size), np.float32)
    for i in range(0, n, _CHUNK):
        s = slice(i, i + _CHUNK)
        a, ab = pts[s, :, 0, :, None], pts[s, :, 1, :, None] - pts[s, :, 0, :, None]
        px, py = gx - a[:, :, 0], gy - a[:, :, 1]
        t = np.clip((px * ab[:, :, 0] + py * ab[:, :, 1]) / (ab ** 2).sum(2).clip(1e-6), 0, 1)
        d = np.sqrt(((px - t * ab[:, :, 0]) ** 2 + (py - t * ab[:, :, 1]) ** 2).min(1))
        ring = np.abs(np.hypot(gx[0] - shift[s, 0, None], gy[0] - shift[s, 1, None]) - half[s, None])
        d = np.where(circle[s, None], ring, d)
        x[s] = np.clip(width[s, None] / 2 + 0.5 - d, 0, 1) * bright[s, None]
    x = np.clip(x + noise, 0, 1)
    return x.reshape(n, size, size, 1), y.astype(np.int64)


def load_shapes(n_train: int = 6000, n_test: int = 1000, image_size: int = 28, seed: int = 0):
    """Generate the ``shapes`` dataset: ``(x_train, y_train), (x_test, y_test)``.

    Images are float32 (N, image_size, image_size, 1) in [0, 1], labels int64
    indexing :data:`SHAPES_CLASSES`, every class equally often (up to rounding).
    The training and test sets come from independent streams of the same seed,
    so one does not change with the size of the other.
    """
    for name, value, least in (("image_size", image_size, 12), ("n_train", n_train, 1), ("n_test", n_test, 1),
                               ("seed", seed, 0)):
        if not is_int(value) or value < least:
            raise ValueError(f"shapes: {name} must be an integer >= {least}; got {value!r}")
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    return _generate(n_train, image_size, train_rng), _generate(n_test, image_size, test_rng)
