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
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

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
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number, got {value!r}")
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

def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every pixel, each of shape (H, W), as float64."""
    ys, xs = np.mgrid[0:height, 0:width]
    return ys.astype(np.float64), xs.astype(np.float64)


def _sample_bilinear(x: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """Read images ``x`` (N, H, W, C) at fractional positions, bilinearly.

    ``src_y`` and ``src_x`` have shape (N, Ho, Wo): output pixel ``(n, i, j)``
    takes the value of image ``n`` at row ``src_y[n, i, j]``, column
    ``src_x[n, i, j]``. Each of the four neighbouring pixels that lies outside
    the image counts as 0 (zero fill). At integer positions the result is the
    pixel value exactly. Returns shape (N, Ho, Wo, C), dtype of ``x``.
    """
    n, h, w, c = x.shape
    if src_y.shape != src_x.shape or src_y.ndim != 3 or src_y.shape[0] != n:
        raise ValueError(
            f"source coordinates must both have shape (N, Ho, Wo) with N = {n}, "
            f"got {src_y.shape} and {src_x.shape}"
        )
    # Positions further out than one pixel beyond the border read only zeros;
    # clipping them keeps the integer conversion below in range.
    src_y = np.clip(src_y, -2.0, h + 1.0)
    src_x = np.clip(src_x, -2.0, w + 1.0)
    y0 = np.floor(src_y)
    x0 = np.floor(src_x)
    frac_y = src_y - y0
    frac_x = src_x - x0
    y0 = y0.astype(np.intp)
    x0 = x0.astype(np.intp)
    # (N,) -> (N, 1, 1): the image index broadcasts against the (N, Ho, Wo) row/column indices
    batch = np.arange(n)[:, None, None]
    out = np.zeros(src_y.shape + (c,), dtype=x.dtype)
    for dy, weight_y in ((0, 1.0 - frac_y), (1, frac_y)):
        for dx, weight_x in ((0, 1.0 - frac_x), (1, frac_x)):
            rows = y0 + dy
            cols = x0 + dx
            inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
            weight = np.where(inside, weight_y * weight_x, 0.0).astype(x.dtype)
            values = x[batch, np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)]  # (N, Ho, Wo, C)
            # (N, Ho, Wo) -> (N, Ho, Wo, 1): one weight per pixel, shared by all channels
            out += weight[..., None] * values
    return out


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


def warp_affine(x: Any, matrices: Any) -> np.ndarray:
    """Resample images (N, H, W, C) through per-image inverse maps (N, 2, 3).

    Output pixel ``(y, x)`` of image ``n`` reads the source at
    ``matrices[n] @ [x, y, 1]`` (bilinear, zero outside).
    """
    x = _check_images(x)
    n, h, w, _ = x.shape
    matrices = np.asarray(matrices, dtype=np.float64)
    if matrices.shape != (n, 2, 3):
        raise ValueError(f"expected matrices of shape ({n}, 2, 3), got {matrices.shape}")
    ys, xs = _pixel_grid(h, w)
    # (N, 2, 3) -> (N, 2, 3, 1, 1): each matrix entry broadcasts over the (H, W) pixel grid
    m = matrices[:, :, :, None, None]
    src_x = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]  # (N, H, W)
    src_y = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]  # (N, H, W)
    return _sample_bilinear(x, src_y, src_x)


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
    out = a.copy()
    if sigma == 0:
        return out
    kernel = _gaussian_kernel(sigma)
    for axis in axes:
        matrix = _blur_matrix(out.shape[axis], kernel).astype(a.dtype)
        # move the blurred axis last, so each line along it is a row vector: (..., size)
        lines = np.moveaxis(out, axis, -1)
        # (..., size) @ (size, size) -> (..., size), then the axis goes back to its place
        out = np.moveaxis(lines @ matrix.T, -1, axis)
    return np.ascontiguousarray(out)


def warp_displacement(x: Any, dy: Any, dx: Any) -> np.ndarray:
    """Resample images so output pixel ``(y, x)`` reads the source at ``(y + dy, x + dx)``.

    ``dy`` and ``dx`` are displacement fields of shape (N, H, W), in pixels;
    bilinear sampling, zero outside.
    """
    x = _check_images(x)
    n, h, w, _ = x.shape
    dy = np.asarray(dy, dtype=np.float64)
    dx = np.asarray(dx, dtype=np.float64)
    if dy.shape != (n, h, w) or dx.shape != (n, h, w):
        raise ValueError(
            f"displacement fields must have shape {(n, h, w)}, got {dy.shape} and {dx.shape}"
        )
    ys, xs = _pixel_grid(h, w)
    return _sample_bilinear(x, ys + dy, xs + dx)


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
    them with a Gaussian of std ``sigma`` (:func:`gaussian_blur`), multiply by
    ``alpha`` and resample the image at ``(y + dy, x + dx)``. All channels of
    an image share one field. ``alpha=0`` returns the input unchanged.
    ``params`` holds the fields ``dy`` and ``dx``, each (N, H, W).
    """
    x = _check_images(x)
    _check_generator(rng)
    alpha = _check_kind(alpha, "float>=0", "alpha")
    sigma = _check_kind(sigma, "float>=0", "sigma")
    n, h, w, _ = x.shape
    # one field per image, the (dy, dx) pair on the last axis: (N, H, W, 2)
    field = rng.uniform(-1.0, 1.0, size=(n, h, w, 2))
    field = alpha * gaussian_blur(field, sigma, axes=(1, 2))
    params = {"dy": field[..., 0], "dx": field[..., 1]}
    out = warp_displacement(x, params["dy"], params["dx"])
    return (out, params) if return_params else out


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
    flipped = rng.random(x.shape[0]) < p
    # (N,) -> (N, 1, 1, 1): one choice per image, broadcast over its pixels
    out = np.where(flipped[:, None, None, None], x[:, :, ::-1], x)
    return (out, {"flipped": flipped}) if return_params else out


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
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = rng.integers(0, 2 * padding + 1, size=(n, 2))  # column 0: y, column 1: x
    # (N,) -> (N, 1) + (H,) -> (N, H): the padded row read by every output row of every image
    rows = offsets[:, 0][:, None] + np.arange(h)
    cols = offsets[:, 1][:, None] + np.arange(w)  # (N, W), likewise for columns
    # (N,) -> (N, 1, 1), (N, H) -> (N, H, 1), (N, W) -> (N, 1, W): they broadcast to (N, H, W)
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
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
    # (N, H, W) -> (N, H, W, 1): the square covers every channel
    out = np.where(mask[..., None], x.dtype.type(0), x)
    params = {"center_y": center_y, "center_x": center_x, "applied": applied}
    return (out, params) if return_params else out


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


def _affine_call(steps: list[Step]) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
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
    return lambda x, rng: random_affine(x, rng, **kwargs)


def _step_call(step: Step) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    kw = step.kwargs
    if step.name == "elastic":
        return lambda x, rng: elastic_distortion(x, rng, kw["alpha"], kw["sigma"])
    if step.name == "hflip":
        return lambda x, rng: random_flip_horizontal(x, rng, kw["p"])
    if step.name == "crop":
        return lambda x, rng: random_crop(x, rng, kw["padding"])
    if step.name == "cutout":
        return lambda x, rng: cutout(x, rng, kw["size"], kw["p"])
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

    def _plan(self) -> list[Callable[[np.ndarray, np.random.Generator], np.ndarray]]:
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
        out = x.astype(np.float32, copy=True)  # a new array: the input is never touched
        for call in self._calls:
            out = call(out, rng)
        return out

    def __len__(self) -> int:
        return len(self.steps)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Augmenter) and self.steps == other.steps

    def __hash__(self) -> int:
        return hash(self.steps)

    def __repr__(self) -> str:
        return f"Augmenter.from_spec({self.to_spec()!r})"
