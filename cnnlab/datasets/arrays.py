"""Validation of image and label arrays held in memory."""
from __future__ import annotations

import numpy as np


def from_arrays(x, y, num_classes: int | None = None):
    """Check and convert arrays to the project's conventions.

    ``x`` is (N, H, W, C) or (N, H, W) (a channel axis is added); uint8 pixels
    are divided by 255, floating-point pixels must already lie in [0, 1].
    ``y`` holds N integer labels, non-negative and below ``num_classes`` when
    it is given. Returns ``(x, y)`` as float32 and int64 arrays; a problem
    raises ValueError quoting what was received.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or 0 in x.shape:
        raise ValueError(f"x must have shape (N, H, W, C) or (N, H, W) with no empty axis; got shape {x.shape}")
    if x.shape[1] in (1, 3) and x.shape[3] not in (1, 3, 4):
        raise ValueError(f"x has shape {x.shape}, which looks channels-first; channels must come last (N, H, W, C)")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255
    elif x.dtype.kind == "f":
        lo, hi = float(x.min()), float(x.max())
        if not (0.0 <= lo and hi <= 1.0):
            raise ValueError(f"x must lie in [0, 1]; got values from {lo} to {hi} (divide 0..255 pixels by 255)")
        x = x.astype(np.float32)
    else:
        raise ValueError(f"x must be uint8 or floating point; got dtype {x.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"y must be a 1-D array of integer labels; got dtype {y.dtype} with shape {y.shape}")
    if len(y) != len(x):
        raise ValueError(f"x has {len(x)} images but y has {len(y)} labels")
    if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
        allowed = f"0..{num_classes - 1}" if num_classes is not None else "non-negative"
        raise ValueError(f"labels must be {allowed}; got values from {y.min()} to {y.max()}")
    return np.ascontiguousarray(x), y.astype(np.int64)
