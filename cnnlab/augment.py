"""Data augmentation for image batches, vectorized over the batch and seeded.

Images are float arrays of shape ``(N, H, W, C)``, channels last, values
usually in [0, 1]. Every transform returns a new array of the same shape and
dtype and never modifies its input. No transform loops over the images in
Python: the random parameters of the whole batch are drawn at once and applied
in one broadcast. Every random number comes from the ``np.random.Generator``
passed in, so the same generator state always gives the same output.

Geometric transforms: one mechanism
-----------------------------------
Translation, rotation, scaling and shear are all the same operation. For each
image we build a 2x3 matrix ``A`` that maps an *output* pixel to the *source*
position it reads from (inverse mapping: every output pixel gets exactly one
value, so there are no holes)::

    [src_x, src_y] = A @ [x, y, 1]

The source positions of all ``N * H * W`` output pixels are computed in one
broadcast and read with bilinear interpolation (:func:`_sample_bilinear`);
positions outside the image read as 0.

Coordinates: ``x`` is the column index, ``y`` the row index, row 0 at the top.
Every transform acts about the image centre ``((W - 1) / 2, (H - 1) / 2)``:

* ``degrees > 0`` turns the content **counter-clockwise** as displayed;
  ``degrees=90`` on a square image equals ``np.rot90(x, 1, axes=(1, 2))``.
* ``shift_x > 0`` moves the content right, ``shift_y > 0`` moves it down.
  Integer shifts are exact: the same as ``np.roll`` with zero fill.
* ``scale > 1`` enlarges the content.
* ``shear > 0`` (degrees, ``|shear| < 90``) slants the content: rows below the
  centre move right, rows above move left.

The forward map is ``out = R(degrees) @ Sh(shear) @ S(scale) @ (src - c) + c + t``
(``c`` the centre, ``t = (shift_x, shift_y)``); ``A`` is its inverse.

The transforms
--------------
* :func:`random_affine` -- draws a rotation, shift, scale and shear per image
  and applies all of them in a single resampling.
* :func:`random_translate`, :func:`random_rotate`, :func:`random_scale` --
  :func:`random_affine` with only that one component switched on; they draw
  from the generator exactly as :func:`random_affine` does.
* :func:`elastic_distortion` -- Simard, Steinkraus & Platt (2003), "Best
  practices for convolutional neural networks applied to visual document
  analysis": per image, a displacement field uniform in [-1, 1] per pixel and
  axis is smoothed by a Gaussian of std ``sigma`` (:func:`gaussian_blur`),
  scaled by ``alpha``, and the image is resampled at ``(y + dy, x + dx)`` with
  the same bilinear sampler.
* :func:`random_flip_horizontal` -- mirror left-right with probability ``p``.
* :func:`random_crop` -- zero-pad by ``padding`` on every side, then cut a
  random ``H x W`` window out of the padded image.
* :func:`cutout` -- DeVries & Taylor (2017), "Improved regularization of
  convolutional neural networks with cutout": zero a ``size x size`` square
  centred on a uniformly drawn pixel. The square is clipped at the border, so
  near an edge fewer than ``size * size`` pixels are zeroed.

Every ``random_*`` function (and :func:`elastic_distortion`, :func:`cutout`)
accepts ``return_params=True`` and then returns ``(images, params)``, where
``params`` holds the per-image draws; the deterministic functions
(:func:`affine`, :func:`warp_displacement`, ...) reproduce the result from them.

Speed
-----
The transforms run on every training batch, so they are written to cost
little next to a training step. Resampling computes positions and weights in
float32 (float64 only for float64 images): all source positions of an affine
warp come from one matrix product with a cached pixel grid, and the bilinear
sampler reads a copy of the batch with a zero border, so its four taps are
four gathers at flat indices with no masks for the outside. Whole-pixel
translations (the default ``translate``) and crops are copies of pixels
through a strided view of all windows, exact. The elastic blur is two matrix
products over the whole batch. Temporaries live in per-thread buffers kept
from call to call (:class:`_Scratch`): touching fresh memory costs more than
the arithmetic. Inside an :class:`Augmenter`, flip and cutout work in place on
the pipeline's own intermediate array.

Augmenter and spec strings
--------------------------
:class:`Augmenter` applies a list of steps in order. It is built from a spec
string such as ``"translate=2,rotate=10,elastic"`` (the ``--augment`` flag of
the command line): comma-separated steps, each ``name`` or ``name=V1[:V2]``;
omitted values take the defaults listed in :data:`SPEC_HELP`. A run of
consecutive geometric steps (translate, rotate, scale, shear) is applied as one
:func:`random_affine` call, so the image is resampled once, not once per step;
their order inside the run does not matter. Presets: ``none``, ``mnist``
(``rotate=10,translate=2,scale=0.9:1.1``; add ``,elastic`` for elastic
distortion on top) and ``cifar`` (``crop=4,hflip=0.5``).
:meth:`Augmenter.to_spec` writes the steps back with every value explicit, so a
saved spec does not depend on defaults.
"""
from __future__ import annotations

import numbers
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .checks import is_number

__all__ = [
    "Augmenter",
    "PRESETS",
    "SPEC_HELP",
    "Step",
    "affine",
    "affine_matrices",
    "cutout",
    "elastic_distortion",
    "gaussian_blur",
    "random_affine",
    "random_crop",
    "random_flip_horizontal",
    "random_rotate",
    "random_scale",
    "random_translate",
    "warp_affine",
    "warp_displacement",
]


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------

def _check_images(x: Any) -> np.ndarray:
    """Return ``x`` as an ndarray after checking it is a float (N, H, W, C) batch."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"expected images of shape (N, H, W, C), got an array of shape {x.shape}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"expected a float array of images, got dtype {x.dtype} with shape {x.shape}"
        )
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"images must have a height and width of at least 1, got shape {x.shape}")
    return x


def _check_generator(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "rng must be a numpy.random.Generator (for example np.random.default_rng(0)), "
            f"got {type(rng).__name__}"
        )


def _check_kind(value: Any, kind: str, what: str) -> Any:
    """Check ``value`` against a parameter kind and return it in canonical type.

    Kinds: ``"int>=0"``, ``"int>=1"``, ``"float>=0"``, ``"float>0"``,
    ``"prob"`` (float in [0, 1]) and ``"shift"`` (an int number of pixels >= 0,
    or a float fraction of the image size in [0, 1]).
    """
    if not is_number(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    if kind == "shift":
        if isinstance(value, numbers.Integral):
            if value < 0:
                raise ValueError(f"{what} must be >= 0 pixels, got {value}")
            return int(value)
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"{what} as a float is a fraction of the image size and must be in [0, 1], "
                f"got {value!r}; use an int for a number of pixels"
            )
        return value
    if kind in ("int>=0", "int>=1"):
        if not isinstance(value, numbers.Integral):
            raise ValueError(f"{what} must be an integer, got {value!r}")
        low = int(kind[-1])
        if value < low:
            raise ValueError(f"{what} must be >= {low}, got {value}")
        return int(value)
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if kind == "float>=0" and value < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    if kind == "float>0" and value <= 0:
        raise ValueError(f"{what} must be > 0, got {value!r}")
    if kind == "prob" and not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a probability in [0, 1], got {value!r}")
    return value


def _symmetric_range(value: Any, what: str) -> tuple[float, float]:
    """``d`` -> ``(-d, d)``; a pair ``(low, high)`` is returned as is (checked)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what} must be a number or a (low, high) pair, got {value!r}")
        low = float(value[0])
        high = float(value[1])
        if not (np.isfinite(low) and np.isfinite(high) and low <= high):
            raise ValueError(f"{what} range must be finite with low <= high, got {value!r}")
        return low, high
    limit = _check_kind(value, "float>=0", what)
    return -limit, limit


def _scale_range(value: Any) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"scale must be a (min_scale, max_scale) pair, got {value!r}")
    low = _check_kind(value[0], "float>0", "min_scale")
    high = _check_kind(value[1], "float>0", "max_scale")
    if low > high:
        raise ValueError(f"min_scale must be <= max_scale, got {low!r} > {high!r}")
    return low, high


# ---------------------------------------------------------------------------
# The shared sampler
# ---------------------------------------------------------------------------

def _work_dtype(dtype: np.dtype) -> np.dtype:
    """The float type the samplers compute in: float32, or the image's type if wider."""
    return np.promote_types(dtype, np.float32)


class _Scratch(threading.local):
    """Per-thread buffers for temporaries, kept from one call to the next.

    Memory fresh from the system costs a page fault per 4 KiB the first time
    it is touched, and the temporaries of one call (a few hundred KiB each) are
    large enough for the allocator to return them to the system when they are
    freed, so every call would pay those faults again -- more than the
    arithmetic done in the buffers costs. A buffer is reused while its shape
    and dtype stay the same. Only temporaries live here: nothing handed back
    to a caller is, or is a view of, a scratch buffer.
    """

    max_bytes = 64 * 2**20  # larger temporaries are allocated per call, not kept

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """The buffer ``name`` with this shape and dtype; its contents are arbitrary."""
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = np.empty(shape, dtype=dtype)
            if buffer.nbytes <= self.max_bytes:
                self.buffers[name] = buffer
        return buffer


_scratch = _Scratch()


def _bordered(
    x: np.ndarray, pad_y: tuple[int, int], pad_x: tuple[int, int], dtype: Any, name: str
) -> np.ndarray:
    """``x`` (N, H, W, C) inside a border of zeros, in the scratch buffer ``name``.

    ``pad_y = (rows before, rows after)``, ``pad_x`` likewise for columns.
    Returns a C-contiguous (N, H + sum(pad_y), W + sum(pad_x), C) array; it is
    a temporary of the caller, overwritten by the next call.
    """
    n, h, w, c = x.shape
    top, left = pad_y[0], pad_x[0]
    out = _scratch.get(name, (n, h + sum(pad_y), w + sum(pad_x), c), np.dtype(dtype))
    out[:, :top] = 0
    out[:, top + h :] = 0
    out[:, top : top + h, :left] = 0
    out[:, top : top + h, left + w :] = 0
    out[:, top : top + h, left : left + w] = x
    return out


# The bilinear sampler reads from a copy of the images with one row and column
# of zeros before them and two after: a position p in image coordinates is
# p + 1 in the bordered copy.
_BORDER_BEFORE = 1
_SAMPLER_BORDER = (_BORDER_BEFORE, 2)


def _sampler_copy(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The zero-bordered copy of ``x`` that :func:`_bilinear_bordered` reads (scratch)."""
    return _bordered(x, _SAMPLER_BORDER, _SAMPLER_BORDER, dtype, "sampler_copy")


@lru_cache(maxsize=32)
def _output_grid(height: int, width: int, dtype: str) -> np.ndarray:
    """``(3, H * W)``: column, row and 1 of every output pixel, row by row; read-only."""
    rows, columns = np.mgrid[0:height, 0:width]
    ones = np.ones(height * width, dtype=int)
    grid = np.stack([columns.ravel(), rows.ravel(), ones]).astype(dtype)
    grid.flags.writeable = False
    return grid


@lru_cache(maxsize=32)
def _image_starts(n: int, image_size: int, dtype: str) -> np.ndarray:
    """``(N, 1, 1)``: the flat index of the first pixel of each image, read-only."""
    starts = (np.arange(n, dtype=dtype) * image_size)[:, None, None]
    starts.flags.writeable = False
    return starts


def _bilinear_bordered(padded: np.ndarray, pos_y: np.ndarray, pos_x: np.ndarray) -> np.ndarray:
    """Bilinear reads from a zero-bordered batch (:func:`_sampler_copy`).

    ``pos_y`` and ``pos_x`` have shape (N, Ho, Wo) and the dtype of
    ``padded``; they are positions in the bordered copy (image coordinate + 1)
    and are overwritten. Returns a new array (N, Ho, Wo, C).

    Every position is clipped into ``[0, size - 2]`` of the bordered copy: a
    position beyond the first zero row or column reads only zeros, and so does
    the clipped one. The four taps are then always inside the copy, so they
    are read with four plain gathers at flat indices -- no masks -- and the
    zero border supplies the zero fill. The taps are combined as three linear
    interpolations, ``a + f * (b - a)``; at an integer position ``f = 0`` and
    the pixel is returned exactly.
    """
    n, hp, wp, c = padded.shape
    shape = pos_y.shape
    np.clip(pos_y, 0, hp - 2, out=pos_y)
    np.clip(pos_x, 0, wp - 2, out=pos_x)
    row = np.floor(pos_y, out=_scratch.get("sampler_row", shape, padded.dtype))
    col = np.floor(pos_x, out=_scratch.get("sampler_col", shape, padded.dtype))
    pos_y -= row  # from here on the fractional parts, in [0, 1)
    pos_x -= col
    # Flat index of the top-left tap, image start + row * wp + col, summed in
    # floating point: exact, as every value is an integer below 2**24 (or the
    # sum is done in float64).
    total = row
    if n * hp * wp >= 2**24 and row.dtype.itemsize < 8:
        total = row.astype(np.float64)
    total *= wp
    total += col
    total += _image_starts(n, hp * wp, total.dtype.str)
    index = _scratch.get("sampler_index", shape, np.dtype(np.intp))
    np.copyto(index, total, casting="unsafe")
    if c == 1:
        flat = padded.reshape(-1)
        frac_y, frac_x = pos_y, pos_x
        spare = (col, row)  # free now: the gathers below write into them
    else:
        flat = padded.reshape(-1, c)
        # (N, Ho, Wo) -> (N, Ho, Wo, 1): one weight per pixel, shared by all channels
        frac_y, frac_x = pos_y[..., None], pos_x[..., None]
        spare = tuple(
            _scratch.get(name, shape + (c,), padded.dtype) for name in ("sampler_a", "sampler_b")
        )

    def tap(offset: int, out: np.ndarray | None = None) -> np.ndarray:
        # the neighbour at (+dy, +dx) sits at flat index + dy * wp + dx: read through a shifted view
        return np.take(flat[offset:], index, axis=0, out=out, mode="clip")

    top = tap(0)  # a new array: it becomes the result
    other = tap(1, spare[0])
    other -= top
    other *= frac_x
    top += other  # the upper row, interpolated along x
    bottom = tap(wp, spare[1])
    other = tap(wp + 1, spare[0])
    other -= bottom
    other *= frac_x
    bottom += other  # the lower row, interpolated along x
    bottom -= top
    bottom *= frac_y
    top += bottom
    return top.reshape(shape + (c,))


def _sample_bilinear(x: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """Read images ``x`` (N, H, W, C) at fractional positions, bilinearly.

    ``src_y`` and ``src_x`` have shape (N, Ho, Wo): output pixel ``(n, i, j)``
    takes the value of image ``n`` at row ``src_y[n, i, j]``, column
    ``src_x[n, i, j]``. Each of the four neighbouring pixels that lies outside
    the image counts as 0 (zero fill). At integer positions the result is the
    pixel value exactly. Returns shape (N, Ho, Wo, C), dtype of ``x``.
    Positions and weights are computed in float32 (in float64 for float64
    images).
    """
    n, h, w, c = x.shape
    src_y = np.asarray(src_y)
    src_x = np.asarray(src_x)
    if src_y.shape != src_x.shape or src_y.ndim != 3 or src_y.shape[0] != n:
        raise ValueError(
            f"source coordinates must both have shape (N, Ho, Wo) with N = {n}, "
            f"got {src_y.shape} and {src_x.shape}"
        )
    work = _work_dtype(x.dtype)
    pos_y = np.add(src_y, _BORDER_BEFORE, dtype=work)
    pos_x = np.add(src_x, _BORDER_BEFORE, dtype=work)
    out = _bilinear_bordered(_sampler_copy(x, work), pos_y, pos_x)
    return out.astype(x.dtype, copy=False)


def _windows(
    padded: np.ndarray, top: np.ndarray, left: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Cut the ``height x width`` window at ``(top[n], left[n])`` out of every image ``padded[n]``.

    One gather through a strided view of all windows of the batch; the result
    is a new C-contiguous array (N, height, width, C).
    """
    n, hp, wp, c = padded.shape
    sn, sh, sw, sc = padded.strides
    # (N, top, left, row, column, channel): window (top, left) of image n, for every top-left corner
    windows = as_strided(
        padded,
        shape=(n, hp - height + 1, wp - width + 1, height, width, c),
        strides=(sn, sh, sw, sh, sw, sc),
        writeable=False,
    )
    return windows[np.arange(n), top, left]


def _shift_whole_pixels(x: np.ndarray, src_dy: np.ndarray, src_dx: np.ndarray) -> np.ndarray:
    """Output pixel ``(y, x)`` of image n is source ``(y + src_dy[n], x + src_dx[n])``, 0 outside.

    ``src_dy``, ``src_dx``: integer-valued arrays (N,). A plain copy of pixels,
    exact, equal to what the bilinear sampler gives at integer positions.
    """
    n, h, w, _ = x.shape
    # a shift by the whole size or more leaves nothing: cap it there
    dy = np.clip(src_dy, -h, h).astype(np.intp)
    dx = np.clip(src_dx, -w, w).astype(np.intp)
    pad_y = int(np.abs(dy).max(initial=0))
    pad_x = int(np.abs(dx).max(initial=0))
    padded = _bordered(x, (pad_y, pad_y), (pad_x, pad_x), x.dtype, "shift_copy")
    return _windows(padded, dy + pad_y, dx + pad_x, h, w)


# ---------------------------------------------------------------------------
# Affine warps
# ---------------------------------------------------------------------------

def affine_matrices(
    n: int,
    height: int,
    width: int,
    *,
    degrees: Any = 0.0,
    shift_y: Any = 0.0,
    shift_x: Any = 0.0,
    scale: Any = 1.0,
    shear: Any = 0.0,
) -> np.ndarray:
    """Build the (N, 2, 3) inverse maps ``output (x, y, 1) -> source (x, y)``.

    Each parameter is a scalar (same for every image) or an array of shape
    (N,). See the module docstring for the conventions. With the identity
    parameters the matrices are exactly ``[[1, 0, 0], [0, 1, 0]]``.
    """
    degrees, shift_y, shift_x, scale, shear = (
        np.broadcast_to(np.asarray(p, dtype=np.float64), (n,))
        for p in (degrees, shift_y, shift_x, scale, shear)
    )
    if np.any(~(scale > 0)):
        raise ValueError(f"scale must be > 0, got {scale[~(scale > 0)][0]!r}")
    if np.any(~(np.abs(shear) < 90)):
        bad = shear[~(np.abs(shear) < 90)][0]
        raise ValueError(f"shear must be in (-90, 90) degrees, got {bad!r}")
    theta = np.deg2rad(degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    tan = np.tan(np.deg2rad(shear))
    # Forward linear part (x right, y down): L = R @ Sh @ S with
    #   R = [[cos, sin], [-sin, cos]]   (counter-clockwise as displayed)
    #   Sh = [[1, tan], [0, 1]]          S = scale * I
    # Inverse: L^-1 = S^-1 @ Sh^-1 @ R^-1
    #             = (1 / scale) [[1, -tan], [0, 1]] @ [[cos, -sin], [sin, cos]]
    matrices = np.empty((n, 2, 3), dtype=np.float64)
    matrices[:, 0, 0] = (cos - tan * sin) / scale
    matrices[:, 0, 1] = (-sin - tan * cos) / scale
    matrices[:, 1, 0] = sin / scale
    matrices[:, 1, 1] = cos / scale
    # src = L^-1 (out - c - t) + c = L^-1 out + (c - L^-1 (c + t)), c the centre
    center_x, center_y = (width - 1) / 2, (height - 1) / 2
    target_x = center_x + shift_x  # where the source centre lands in the output
    target_y = center_y + shift_y
    matrices[:, 0, 2] = center_x - (matrices[:, 0, 0] * target_x + matrices[:, 0, 1] * target_y)
    matrices[:, 1, 2] = center_y - (matrices[:, 1, 0] * target_x + matrices[:, 1, 1] * target_y)
    return matrices


def _whole_pixel_shifts(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(src_dy, src_dx)`` if every map is a pure translation by whole pixels, else None."""
    linear_is_identity = np.all(matrices[:, :, :2] == np.eye(2))
    offsets = matrices[:, :, 2]
    if linear_is_identity and np.all(np.isfinite(offsets)) and np.all(offsets == np.round(offsets)):
        return offsets[:, 1], offsets[:, 0]
    return None


def warp_affine(x: Any, matrices: Any) -> np.ndarray:
    """Resample images (N, H, W, C) through per-image inverse maps (N, 2, 3).

    Output pixel ``(y, x)`` of image ``n`` reads the source at
    ``matrices[n] @ [x, y, 1]`` (bilinear, zero outside). Source positions are
    computed in float32 (float64 for float64 images). Maps that are all
    translations by whole pixels are applied as an exact copy of pixels.
    """
    x = _check_images(x)
    n, h, w, _ = x.shape
    matrices = np.asarray(matrices, dtype=np.float64)
    if matrices.shape != (n, 2, 3):
        raise ValueError(f"expected matrices of shape ({n}, 2, 3), got {matrices.shape}")
    shifts = _whole_pixel_shifts(matrices)
    if shifts is not None:
        return _shift_whole_pixels(x, *shifts)
    work = _work_dtype(x.dtype)
    # (N, 2, 3) -> (2, N, 3): the maps of source x, then those of source y, as
    # rows of one matrix; + 1 moves the positions into the zero-bordered copy
    rows = matrices.transpose(1, 0, 2).copy()
    rows[:, :, 2] += _BORDER_BEFORE
    # one matrix product gives every position: (2 * N, 3) @ (3, H * W) -> (2, N, H, W)
    pos = _scratch.get("affine_positions", (2, n, h, w), work)
    grid = _output_grid(h, w, work.str)
    np.matmul(rows.reshape(2 * n, 3).astype(work), grid, out=pos.reshape(2 * n, h * w))
    out = _bilinear_bordered(_sampler_copy(x, work), pos[1], pos[0])
    return out.astype(x.dtype, copy=False)


def affine(
    x: Any,
    *,
    degrees: Any = 0.0,
    shift_y: Any = 0.0,
    shift_x: Any = 0.0,
    scale: Any = 1.0,
    shear: Any = 0.0,
) -> np.ndarray:
    """Rotate, shift, scale and shear images with given (scalar or per-image) parameters.

    ``degrees > 0`` is counter-clockwise, ``shift_x > 0`` moves right,
    ``shift_y > 0`` moves down, ``scale > 1`` enlarges, ``shear > 0`` moves the
    rows below the centre to the right.
    """
    x = _check_images(x)
    n, h, w, _ = x.shape
    matrices = affine_matrices(
        n, h, w, degrees=degrees, shift_y=shift_y, shift_x=shift_x, scale=scale, shear=shear
    )
    return warp_affine(x, matrices)


def random_affine(
    x: Any,
    rng: np.random.Generator,
    degrees: Any = 0.0,
    translate: Any = 0,
    scale: Any = (1.0, 1.0),
    shear: Any = 0.0,
    *,
    return_params: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Random rotation, translation, scaling and shear, one resampling per image.

    ``degrees``: angles are uniform in ``[-degrees, degrees]`` (or a
    ``(low, high)`` pair). ``translate``: an int is a maximum shift in pixels
    and the shifts are whole pixels drawn uniformly from
    ``-translate .. translate`` (so a pure translation does not blur); a float
    in [0, 1] is a fraction of the height (for ``shift_y``) and width (for
    ``shift_x``) and the shifts are continuous. ``scale``: factors uniform in
    ``[min_scale, max_scale]``. ``shear``: angles uniform in ``[-shear, shear]``
    (or a pair), ``|shear| < 90``.

    The draws are made in a fixed order -- angle, (shift_y, shift_x), scale,
    shear -- whatever is switched on. ``params`` holds ``degrees``, ``shift_y``,
    ``shift_x``, ``scale`` and ``shear``, each of shape (N,).
    """
    x = _check_images(x)
    _check_generator(rng)
    n, h, w, _ = x.shape
    degrees_low, degrees_high = _symmetric_range(degrees, "degrees")
    shear_low, shear_high = _symmetric_range(shear, "shear")
    if not (-90 < shear_low and shear_high < 90):
        raise ValueError(f"shear must stay inside (-90, 90) degrees, got {shear!r}")
    scale_low, scale_high = _scale_range(scale)
    max_shift = _check_kind(translate, "shift", "translate")

    angles = rng.uniform(degrees_low, degrees_high, size=n)
    if isinstance(max_shift, int):
        shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2)).astype(np.float64)
    else:
        limits = np.array([max_shift * h, max_shift * w])
        shifts = rng.uniform(-limits, limits, size=(n, 2))  # column 0: y, column 1: x
    factors = rng.uniform(scale_low, scale_high, size=n)
    slants = rng.uniform(shear_low, shear_high, size=n)

    params = {
        "degrees": angles,
        "shift_y": shifts[:, 0],
        "shift_x": shifts[:, 1],
        "scale": factors,
        "shear": slants,
    }
    out = affine(x, **params)
    return (out, params) if return_params else out


def random_translate(
    x: Any, rng: np.random.Generator, max_shift: Any, *, return_params: bool = False
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Shift each image by a random amount, filling with 0.

    ``max_shift``: an int is pixels (whole-pixel shifts, exact); a float in
    [0, 1] is a fraction of the image size (continuous shifts).
    Same as ``random_affine(x, rng, translate=max_shift)``.
    """
    return random_affine(x, rng, translate=max_shift, return_params=return_params)


def random_rotate(
    x: Any, rng: np.random.Generator, max_degrees: Any, *, return_params: bool = False
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rotate each image about its centre by an angle uniform in ``[-max_degrees, max_degrees]``.

    Positive angles are counter-clockwise. Same as
    ``random_affine(x, rng, degrees=max_degrees)``.
    """
    return random_affine(x, rng, degrees=max_degrees, return_params=return_params)


def random_scale(
    x: Any,
    rng: np.random.Generator,
    min_scale: float,
    max_scale: float,
    *,
    return_params: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Scale each image about its centre by a factor uniform in ``[min_scale, max_scale]``.

    Same as ``random_affine(x, rng, scale=(min_scale, max_scale))``.
    """
    return random_affine(x, rng, scale=(min_scale, max_scale), return_params=return_params)


# ---------------------------------------------------------------------------
# Elastic distortion
# ---------------------------------------------------------------------------

def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised 1-D Gaussian taps over ``-r .. r`` with ``r = int(truncate * sigma + 0.5)``."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _mirror_index(index: np.ndarray, size: int) -> np.ndarray:
    """Fold any integer index into ``0 .. size - 1`` by whole-sample mirroring.

    The extended axis reads ``... c b a | a b c ... | ... c b a | a b ...``:
    it repeats with period ``2 * size``, the second half reversed.
    """
    index = np.mod(index, 2 * size)
    return np.where(index < size, index, 2 * size - 1 - index)


def _blur_matrix(size: int, kernel: np.ndarray) -> np.ndarray:
    """The (size, size) matrix ``B`` with ``blurred = B @ line`` for one axis.

    Row ``i`` holds the kernel centred on ``i``; taps that fall outside the
    axis are mirrored back in (:func:`_mirror_index`) and add to the weight of
    the pixel they land on, so every row sums to 1.
    """
    radius = len(kernel) // 2
    taps = np.arange(-radius, radius + 1)
    # (size, 1) + (1, taps) -> (size, taps): the source index read by each tap of each output
    sources = _mirror_index(np.arange(size)[:, None] + taps[None, :], size)
    # (size,) -> (size, taps): the output row each tap belongs to
    rows = np.broadcast_to(np.arange(size)[:, None], sources.shape)
    # (taps,) -> (size, taps): the tap weights, the same for every output
    weights = np.broadcast_to(kernel[None, :], sources.shape)
    matrix = np.zeros((size, size), dtype=kernel.dtype)
    np.add.at(matrix, (rows, sources), weights)
    return matrix


@lru_cache(maxsize=32)
def _cached_blur_matrix(size: int, sigma: float, dtype: str) -> np.ndarray:
    """:func:`_blur_matrix` for a Gaussian of std ``sigma`` in ``dtype``, read-only, cached."""
    matrix = _blur_matrix(size, _gaussian_kernel(sigma)).astype(dtype)
    matrix.flags.writeable = False
    return matrix


def gaussian_blur(a: Any, sigma: float, axes: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Separable Gaussian blur of ``a`` along ``axes`` (default: H and W of a batch).

    The kernel has std ``sigma`` and is cut at ``r = int(4 * sigma + 0.5)``
    taps either side. Borders are extended by whole-sample mirroring
    (``c b a | a b c | c b a``), repeated as often as needed -- the convention
    of ``scipy.ndimage.gaussian_filter``. Blurring one axis is a linear map, so
    it is done as one matrix product with :func:`_blur_matrix` that covers
    every other axis (batch, channels) at once. ``sigma=0`` returns a copy.
    The result has the float dtype of ``a`` (float64 for non-float input).
    """
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    sigma = _check_kind(sigma, "float>=0", "sigma")
    if sigma == 0:
        return a.copy()
    out = a
    for axis in axes:
        matrix = _cached_blur_matrix(out.shape[axis], sigma, a.dtype.str)
        # (size, size) . (..., size, ...) over the blurred axis -> (size, ...); the axis goes back
        out = np.moveaxis(np.tensordot(matrix, out, axes=(1, axis)), 0, axis)
    return np.ascontiguousarray(out)


def _warp_displacement(x: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """:func:`warp_displacement` without the checks; the fields may be any float type."""
    n, h, w, _ = x.shape
    work = _work_dtype(x.dtype)
    # source position in the zero-bordered copy: field + (row or column) + 1, (N, H, W)
    rows = np.arange(_BORDER_BEFORE, h + _BORDER_BEFORE, dtype=work)[:, None]
    columns = np.arange(_BORDER_BEFORE, w + _BORDER_BEFORE, dtype=work)
    pos_y = np.add(dy, rows, out=_scratch.get("displaced_rows", (n, h, w), work), dtype=work)
    pos_x = np.add(dx, columns, out=_scratch.get("displaced_columns", (n, h, w), work), dtype=work)
    out = _bilinear_bordered(_sampler_copy(x, work), pos_y, pos_x)
    return out.astype(x.dtype, copy=False)


def warp_displacement(x: Any, dy: Any, dx: Any) -> np.ndarray:
    """Resample images so output pixel ``(y, x)`` reads the source at ``(y + dy, x + dx)``.

    ``dy`` and ``dx`` are displacement fields of shape (N, H, W), in pixels;
    bilinear sampling, zero outside. Positions are computed in float32
    (float64 for float64 images).
    """
    x = _check_images(x)
    n, h, w, _ = x.shape
    dy = np.asarray(dy)
    dx = np.asarray(dx)
    if dy.shape != (n, h, w) or dx.shape != (n, h, w):
        raise ValueError(
            f"displacement fields must have shape {(n, h, w)}, got {dy.shape} and {dx.shape}"
        )
    return _warp_displacement(x, dy, dx)


def elastic_distortion(
    x: Any,
    rng: np.random.Generator,
    alpha: float = 34.0,
    sigma: float = 4.0,
    *,
    return_params: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Elastic distortion of Simard, Steinkraus & Platt (2003).

    Per image, draw ``dy`` and ``dx`` uniform in [-1, 1] at every pixel, blur
    them with a Gaussian of std ``sigma`` (as :func:`gaussian_blur` does),
    multiply by ``alpha`` and resample the image at ``(y + dy, x + dx)``. All
    channels of an image share one field. ``alpha=0`` returns the input
    unchanged. ``params`` holds the fields ``dy`` and ``dx``, each (N, H, W),
    in float32 (float64 for float64 images).
    """
    x = _check_images(x)
    _check_generator(rng)
    alpha = _check_kind(alpha, "float>=0", "alpha")
    sigma = _check_kind(sigma, "float>=0", "sigma")
    n, h, w, _ = x.shape
    work = _work_dtype(x.dtype)
    # one field per image, the (dy, dx) pair on the last axis: (N, H, W, 2). The
    # numbers are those of rng.uniform(-1, 1, size): -1 + 2 * rng.random(),
    # formed in float64 and then rounded to the working type.
    draws = rng.random(out=_scratch.get("elastic_draws", (n, h, w, 2), np.float64))
    draws *= 2.0
    # The blur is two matrix products, one per axis, each over the whole batch
    # at once; the layout (H, N, 2, W) makes both of them a single plain product.
    field = _scratch.get("elastic_field", (h, n, 2, w), work)
    np.subtract(draws.transpose(1, 0, 3, 2), 1.0, out=field, casting="same_kind")
    if sigma > 0:
        # along the columns: (H, H) @ (H, N * 2 * W)
        blurred = _scratch.get("elastic_blurred", (h, n * 2 * w), work)
        np.matmul(_cached_blur_matrix(h, sigma, work.str), field.reshape(h, -1), out=blurred)
        # along the rows: (H * N * 2, W) @ (W, W), back into the first buffer
        along_rows = _cached_blur_matrix(w, sigma, work.str).T
        np.matmul(blurred.reshape(-1, w), along_rows, out=field.reshape(-1, w))
    field *= alpha
    # (H, N, W) -> (N, H, W) views of the two fields
    dy = field[:, :, 0].transpose(1, 0, 2)
    dx = field[:, :, 1].transpose(1, 0, 2)
    out = _warp_displacement(x, dy, dx)
    if not return_params:
        return out
    # the field lives in a scratch buffer: hand out copies
    return out, {"dy": np.array(dy, order="C"), "dx": np.array(dx, order="C")}


# ---------------------------------------------------------------------------
# Flip, crop, cutout
# ---------------------------------------------------------------------------

def random_flip_horizontal(
    x: Any, rng: np.random.Generator, p: float = 0.5, *, return_params: bool = False
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Mirror each image left-right with probability ``p``.

    ``params["flipped"]`` is a boolean array of shape (N,).
    """
    x = _check_images(x)
    _check_generator(rng)
    p = _check_kind(p, "prob", "p")
    out, flipped = _random_flip(x, rng, p, in_place=False)
    return (out, {"flipped": flipped}) if return_params else out


def _random_flip(
    x: np.ndarray, rng: np.random.Generator, p: float, in_place: bool
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`random_flip_horizontal` on checked arguments; ``in_place`` mirrors inside ``x``."""
    flipped = rng.random(x.shape[0]) < p
    out = x if in_place else np.array(x, order="C")
    chosen = np.flatnonzero(flipped)
    if chosen.size:
        gathered = _scratch.get("flip_gathered", out.shape, out.dtype)[: chosen.size]
        np.take(out, chosen, axis=0, out=gathered, mode="clip")
        mirrored = _scratch.get("flip_mirrored", out.shape, out.dtype)[: chosen.size]
        # one strided copy per channel: reversing whole pixels of c values at
        # once would copy in runs of c, which is several times slower
        for channel in range(out.shape[3]):
            mirrored[..., channel] = gathered[:, :, ::-1, channel]
        out[chosen] = mirrored
    return out, flipped


def random_crop(
    x: Any, rng: np.random.Generator, padding: int = 4, *, return_params: bool = False
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Zero-pad by ``padding`` on every side, then cut a random window of the original size.

    The window's top-left corner in the padded image, ``(offset_y, offset_x)``,
    is uniform over ``0 .. 2 * padding`` on each axis; ``offset = padding`` is
    the original image. ``params`` holds ``offset_y`` and ``offset_x``, (N,).
    """
    x = _check_images(x)
    _check_generator(rng)
    padding = _check_kind(padding, "int>=0", "padding")
    n, h, w, _ = x.shape
    padded = _bordered(x, (padding, padding), (padding, padding), x.dtype, "crop_copy")
    offsets = rng.integers(0, 2 * padding + 1, size=(n, 2))  # column 0: y, column 1: x
    out = _windows(padded, offsets[:, 0], offsets[:, 1], h, w)
    params = {"offset_y": offsets[:, 0], "offset_x": offsets[:, 1]}
    return (out, params) if return_params else out


def cutout(
    x: Any, rng: np.random.Generator, size: int, p: float = 1.0, *, return_params: bool = False
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Zero a ``size x size`` square per image, with probability ``p`` (DeVries & Taylor 2017).

    The square's centre pixel is uniform over the image; it covers rows
    ``center_y - size // 2`` to ``center_y - size // 2 + size - 1`` (same for
    columns), clipped at the border. ``params`` holds ``center_y``,
    ``center_x`` and ``applied`` (boolean), each (N,).
    """
    x = _check_images(x)
    _check_generator(rng)
    size = _check_kind(size, "int>=1", "size")
    p = _check_kind(p, "prob", "p")
    out, params = _cutout(x, rng, size, p, in_place=False)
    return (out, params) if return_params else out


def _cutout(
    x: np.ndarray, rng: np.random.Generator, size: int, p: float, in_place: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`cutout` on checked arguments; ``in_place`` zeroes the squares inside ``x``."""
    n, h, w, _ = x.shape
    applied = rng.random(n) < p
    center_y = rng.integers(0, h, size=n)
    center_x = rng.integers(0, w, size=n)
    top = center_y - size // 2
    left = center_x - size // 2
    # (N,) -> (N, 1) against (H,): which rows of each image the square covers, (N, H)
    in_rows = (np.arange(h) >= top[:, None]) & (np.arange(h) < top[:, None] + size)
    in_cols = (np.arange(w) >= left[:, None]) & (np.arange(w) < left[:, None] + size)  # (N, W)
    # (N, H) -> (N, H, 1) and (N, W) -> (N, 1, W) give the square; (N,) -> (N, 1, 1) switches it off
    mask = in_rows[:, :, None] & in_cols[:, None, :] & applied[:, None, None]
    out = x if in_place else np.array(x, order="C")
    out[mask] = 0  # the (N, H, W) mask selects whole pixels: every channel
    return out, {"center_y": center_y, "center_x": center_x, "applied": applied}


# ---------------------------------------------------------------------------
# Augmenter: a pipeline built from a spec string
# ---------------------------------------------------------------------------

# name -> ((parameter, kind, default), ...), in the order the values appear in a spec
_STEP_PARAMS: dict[str, tuple[tuple[str, str, Any], ...]] = {
    "translate": (("max_shift", "shift", 2),),
    "rotate": (("max_degrees", "float>=0", 10.0),),
    "scale": (("min_scale", "float>0", 0.9), ("max_scale", "float>0", 1.1)),
    "shear": (("max_degrees", "float>=0", 10.0),),
    "elastic": (("alpha", "float>=0", 34.0), ("sigma", "float>=0", 4.0)),
    "hflip": (("p", "prob", 0.5),),
    "crop": (("padding", "int>=0", 4),),
    "cutout": (("size", "int>=1", 8), ("p", "prob", 1.0)),
}

# steps that are fused into one random_affine call when they are adjacent
_GEOMETRIC = ("translate", "rotate", "scale", "shear")

PRESETS: dict[str, str] = {
    "none": "",
    "mnist": "rotate=10,translate=2,scale=0.9:1.1",
    "cifar": "crop=4,hflip=0.5",
}

SPEC_HELP = """\
Augmentation spec: comma-separated steps, each NAME or NAME=V1[:V2], applied in order.
  translate=MAX_SHIFT        int: pixels; float in [0, 1]: fraction of the size   (default 2)
  rotate=MAX_DEGREES         uniform in [-MAX, MAX], positive = counter-clockwise (default 10)
  scale=MIN:MAX              factor uniform in [MIN, MAX]                         (default 0.9:1.1)
  shear=MAX_DEGREES          uniform in [-MAX, MAX]                               (default 10)
  elastic=ALPHA:SIGMA        Simard et al. 2003 elastic distortion                (default 34:4)
  hflip=P                    horizontal flip with probability P                   (default 0.5)
  crop=PADDING               zero-pad, then random crop of the original size      (default 4)
  cutout=SIZE:P              zero a SIZE x SIZE square with probability P         (default 8:1)
Adjacent translate/rotate/scale/shear steps are applied as one affine warp.
Presets: none; mnist = rotate=10,translate=2,scale=0.9:1.1 (add ",elastic" for
elastic distortion); cifar = crop=4,hflip=0.5. Example: "mnist,elastic"."""


def _format_value(value: Any, kind: str) -> str:
    if isinstance(value, int):
        return str(value)
    if kind == "shift":
        return repr(value)  # keeps the ".0" so that it reads back as a fraction
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _parse_number(text: str) -> int | float:
    """``"2"`` -> 2 (int), ``"0.1"`` -> 0.1 (float); the type matters for translate."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


@dataclass(frozen=True)
class Step:
    """One augmentation step: a name from :data:`SPEC_HELP` and its values.

    ``values`` lists the parameters in spec order; trailing ones may be left
    out and take their defaults, e.g. ``Step("elastic", (20,))`` has
    ``values == (20.0, 4.0)``. Values are checked and converted on creation.
    """

    name: str
    values: tuple = ()

    def __post_init__(self) -> None:
        if self.name not in _STEP_PARAMS:
            raise ValueError(
                f"unknown augmentation {self.name!r}; valid names: {', '.join(_valid_names())}"
            )
        spec = _STEP_PARAMS[self.name]
        values = tuple(self.values)
        if len(values) > len(spec):
            raise ValueError(
                f"{self.name} takes at most {len(spec)} value(s) "
                f"({':'.join(p for p, _, _ in spec)}), got {len(values)}"
            )
        values = values + tuple(default for _, _, default in spec[len(values):])
        values = tuple(
            _check_kind(value, kind, f"{self.name} {param}")
            for value, (param, kind, _) in zip(values, spec)
        )
        if self.name == "scale" and values[0] > values[1]:
            raise ValueError(f"scale min {values[0]!r} is larger than max {values[1]!r}")
        if self.name == "shear" and values[0] >= 90:
            raise ValueError(f"shear must be below 90 degrees, got {values[0]!r}")
        object.__setattr__(self, "values", values)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The values by parameter name."""
        return {param: value for value, (param, _, _) in zip(self.values, _STEP_PARAMS[self.name])}

    def to_token(self) -> str:
        """The step as it appears in a spec, every value explicit."""
        kinds = [kind for _, kind, _ in _STEP_PARAMS[self.name]]
        return self.name + "=" + ":".join(_format_value(v, k) for v, k in zip(self.values, kinds))


def _valid_names() -> list[str]:
    return list(_STEP_PARAMS) + list(PRESETS)


# A planned call: (images, rng, owned) -> images. ``owned`` says the images
# are a temporary of the Augmenter, which a step may then change in place.
_Call = Callable[[np.ndarray, np.random.Generator, bool], np.ndarray]


def _affine_call(steps: list[Step]) -> _Call:
    """One random_affine call doing the work of several adjacent geometric steps."""
    kwargs: dict[str, Any] = {}
    for step in steps:
        if step.name == "translate":
            kwargs["translate"] = step.values[0]
        elif step.name == "rotate":
            kwargs["degrees"] = step.values[0]
        elif step.name == "scale":
            kwargs["scale"] = step.values
        elif step.name == "shear":
            kwargs["shear"] = step.values[0]
    return lambda x, rng, owned: random_affine(x, rng, **kwargs)


def _step_call(step: Step) -> _Call:
    kw = step.kwargs
    if step.name == "elastic":
        return lambda x, rng, owned: elastic_distortion(x, rng, kw["alpha"], kw["sigma"])
    if step.name == "hflip":
        return lambda x, rng, owned: _random_flip(x, rng, kw["p"], in_place=owned)[0]
    if step.name == "crop":
        return lambda x, rng, owned: random_crop(x, rng, kw["padding"])
    if step.name == "cutout":
        return lambda x, rng, owned: _cutout(x, rng, kw["size"], kw["p"], in_place=owned)[0]
    # geometric steps never get here: they go through _affine_call
    raise AssertionError(f"no call for step {step.name!r}")


class Augmenter:
    """Apply augmentation steps in order to a batch: ``Augmenter(steps)(x, rng)``.

    ``steps`` are :class:`Step` objects or bare names (default values). The
    result is a new float32 array; the input is never modified. Adjacent
    geometric steps (translate, rotate, scale, shear) share one
    :func:`random_affine` call, so the batch is resampled once for them.
    """

    def __init__(self, steps: Iterable[Step | str] = ()) -> None:
        self.steps: tuple[Step, ...] = tuple(
            step if isinstance(step, Step) else Step(step) for step in steps
        )
        self._calls = self._plan()

    @classmethod
    def from_spec(cls, spec: str) -> "Augmenter":
        """Parse a spec such as ``"translate=2,rotate=10,elastic"`` (see :data:`SPEC_HELP`)."""
        if not isinstance(spec, str):
            raise TypeError(f"augmentation spec must be a string, got {type(spec).__name__}")
        if not spec.strip():
            raise ValueError("empty augmentation spec; use 'none' for no augmentation")
        tokens = [token.strip() for token in spec.split(",")]
        steps: list[Step] = []
        for token in tokens:
            if not token:
                raise ValueError(
                    f"empty step in augmentation spec {spec!r}; "
                    f"valid names: {', '.join(_valid_names())}"
                )
            name, has_values, value_text = token.partition("=")
            name = name.strip().lower()
            if name in PRESETS:
                if has_values:
                    raise ValueError(f"preset {name!r} takes no values, got {token!r}")
                if name == "none" and len(tokens) > 1:
                    raise ValueError(f"'none' cannot be combined with other steps, got {spec!r}")
                if PRESETS[name]:
                    steps.extend(cls.from_spec(PRESETS[name]).steps)
            elif name in _STEP_PARAMS:
                usage = name + "=" + ":".join(param.upper() for param, _, _ in _STEP_PARAMS[name])
                try:
                    texts = value_text.split(":") if has_values else []
                    values = [_parse_number(text) for text in texts]
                    steps.append(Step(name, tuple(values)))
                except ValueError as error:
                    raise ValueError(
                        f"bad augmentation step {token!r}: {error} (usage: {usage})"
                    ) from None
            else:
                raise ValueError(
                    f"unknown augmentation {name!r} in {token!r}; "
                    f"valid names: {', '.join(_valid_names())}"
                )
        return cls(steps)

    def to_spec(self) -> str:
        """The steps as a spec string with every value explicit; ``"none"`` when empty.

        ``Augmenter.from_spec(a.to_spec()) == a`` for every augmenter ``a``.
        """
        if not self.steps:
            return "none"
        return ",".join(step.to_token() for step in self.steps)

    def _plan(self) -> list[_Call]:
        """Group the steps into calls: runs of geometric steps become one affine call."""
        calls = []
        run: list[Step] = []
        for step in self.steps:
            if step.name in _GEOMETRIC and all(s.name != step.name for s in run):
                run.append(step)
                continue
            if run:
                calls.append(_affine_call(run))
                run = []
            if step.name in _GEOMETRIC:
                run.append(step)  # a repeated name starts a new run
            else:
                calls.append(_step_call(step))
        if run:
            calls.append(_affine_call(run))
        return calls

    def __call__(self, x: Any, rng: np.random.Generator) -> np.ndarray:
        x = _check_images(x)
        _check_generator(rng)
        out = x.astype(np.float32, copy=False)
        owned = out is not x  # the caller's array is never changed
        for call in self._calls:
            # flip and cutout work in place on an array of our own; every other
            # step returns a new array
            out = call(out, rng, owned)
            owned = out is not x
        return out if owned else out.copy()

    def __len__(self) -> int:
        return len(self.steps)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Augmenter) and self.steps == other.steps

    def __hash__(self) -> int:
        return hash(self.steps)

    def __repr__(self) -> str:
        return f"Augmenter.from_spec({self.to_spec()!r})"
