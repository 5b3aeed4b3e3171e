"""The one image reader of cnnlab: a file (or the bytes of one) -> a float32 array in [0, 1].

Every command that reads a picture (``predict``, ``explain --image``, image-folder
datasets, the web server's uploads) goes through :func:`read_image`, so a picture
means the same thing everywhere:

* **Only image formats, only a sane size.** Pillow opens PNG, JPEG (with MPO), GIF,
  BMP, TIFF, WebP and PPM, nothing else (no EPS, whose reader runs Ghostscript). The
  header's width x height is checked against :data:`MAX_PIXELS` *before* any pixel
  is decoded, so a decompression bomb (a 40000x40000 PNG of a few kB) is refused in
  microseconds; Pillow's own bomb check is turned from a warning into a refusal too.
* **Orientation** from the EXIF tag is applied (a phone photo is upright), and an
  animated image gives its first frame.
* **Every mode to float exactly once.** 8-bit modes are divided by 255; 16-bit
  grayscale (``I;16``, and ``I``, how 16-bit PNGs are also represented) by 65535, so
  no level is clipped; ``F`` (floating point) is taken as it is, in [0, 1], or
  divided by 255 when its largest value exceeds 1. ``1``, ``P``, ``CMYK``,
  ``YCbCr``... go through Pillow's conversion to ``L``/``RGB``.
* **Transparency is composited on white** (:data:`BACKGROUND`), the paper a drawing
  with a transparent background is shown on: ``out = a * colour + (1 - a) * 1``.
* **Grayscale from colour** is the ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B``
  (Pillow's own rule for ``convert("L")``), computed in float.
* **One resize filter**, Pillow's bilinear on float pixels: a triangle filter
  widened by the reduction factor when shrinking (so it averages, no aliasing),
  plain bilinear interpolation when enlarging; never outside the input's range.
* **One PNG writer**, :func:`encode_png`, for the pictures cnnlab writes or sends.

:func:`prepare_input` turns a picture into one input of a model, with the two rules
``predict`` and ``explain`` share and print (:func:`describe`):

* **Background.** Grayscale training data in cnnlab (MNIST, Fashion-MNIST, the
  built-in shapes) are light strokes on a dark background. A grayscale picture whose
  border is light (median > 0.5), the opposite, is inverted by default.
* **MNIST's normalization.** MNIST digits were size-normalized into a 20x20 box
  (aspect ratio kept) and centred by their centre of mass in a 28x28 field (LeCun et
  al. 1998). For a model trained on MNIST-style data (input 28x28x1, dataset MNIST or
  unknown) a picture gets the same treatment by default, so a digit drawn small in a
  corner reads as the same digit drawn in the middle.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ._io import CnnlabFileError

MAX_PIXELS = 64_000_000            # width x height; 8000 x 8000, far above any photo a phone takes
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
BACKGROUND = 1.0                   # transparency is composited on white
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
MNIST_BOX, MNIST_FIELD = 20, 28    # the digit's box and the image, in pixels
MNIST_STYLE_DATASETS = ("mnist",)  # trained on these (or on unknown 28x28x1 data): normalize as MNIST was made
LIGHT_BORDER = 0.5                 # a border whose median brightness exceeds this is a light background

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


class ImageTooLarge(CnnlabFileError):
    """A picture with more than :data:`MAX_PIXELS` pixels (a decompression bomb, or a picture to shrink first)."""


def _name(source, name) -> str:
    if name:
        return str(name)
    return "uploaded image" if isinstance(source, (bytes, bytearray, memoryview)) else f"image {source}"


def open_image(source: Source, name: Optional[str] = None):
    """The first frame of a picture as a decoded Pillow image, EXIF orientation applied.

    ``source`` is a path or the bytes of a file; ``name`` is how errors call it
    (default ``image PATH`` or ``uploaded image``). Every way a file can be
    missing, empty, not a picture, damaged or too large raises
    :class:`CnnlabFileError` with one line naming it.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError
    what = _name(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise CnnlabFileError(f"{what} is empty (0 bytes)")
        fp = io.BytesIO(data)
    else:
        path = Path(source)
        if not path.exists():
            raise CnnlabFileError(f"{what} does not exist")
        if not path.is_file():
            raise CnnlabFileError(f"{what} is not a file")
        if path.stat().st_size == 0:
            raise CnnlabFileError(f"{what} is empty (0 bytes)")
        fp = path
    Image.init()                                            # register every plugin FORMATS names
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=FORMATS)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageTooLarge(f"{what} is {w}x{h} = {w * h:,} pixels, more than the {MAX_PIXELS:,} "
                                      f"cnnlab reads (a decompression bomb, or a picture to shrink first)")
            if w < 1 or h < 1:
                raise CnnlabFileError(f"{what} is {w}x{h} pixels: nothing to read")
            img.seek(0)                                     # an animation's first frame
            img.load()
            upright = ImageOps.exif_transpose(img)
            if upright is not img:
                img.close()
                img = upright
    except CnnlabFileError:
        raise
    except UnidentifiedImageError:
        raise CnnlabFileError(f"{what} is not a picture cnnlab reads ({', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))           # Pillow refused it in Image.open already
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageTooLarge(f"{what} has {size}, more than the {MAX_PIXELS:,} cnnlab reads (a decompression "
                              f"bomb, or a picture to shrink first)") from None
    except MemoryError:
        raise CnnlabFileError(f"{what} does not fit in memory when decoded") from None
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many types (OSError, SyntaxError, struct.error...)
        raise CnnlabFileError(f"{what} is damaged or truncated: {type(e).__name__}: {e}") from None
    return img


def _planes(img, what) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``(colour, alpha)`` float32 in [0, 1]: colour (H, W) or (H, W, 3), alpha (H, W) or None."""
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img, np.float32) / 65535.0, None       # uint16 levels, none clipped
    if mode == "I":
        return np.clip(np.asarray(img, np.float32) / 65535.0, 0.0, 1.0), None
    if mode == "F":
        a = np.asarray(img, np.float32)
        if not np.all(np.isfinite(a)):
            raise CnnlabFileError(f"{what} holds non-finite pixel values (NaN or infinity)")
        return np.clip(a / 255.0 if a.max(initial=0.0) > 1.0 else a, 0.0, 1.0), None
    if mode == "P":
        mode = "PA" if "transparency" in img.info else "RGB"
    if mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"), np.float32) / 255.0
        return la[..., 0], la[..., 1]
    if mode in ("RGBA", "RGBa", "PA"):
        rgba = np.asarray(img.convert("RGBA"), np.float32) / 255.0
        return rgba[..., :3], rgba[..., 3]
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"), np.float32) / 255.0, None
    return np.asarray(img.convert("RGB"), np.float32) / 255.0, None


def to_array(img, channels: int = 1, name: str = "image") -> np.ndarray:
    """A Pillow image as float32 (H, W, channels) in [0, 1], by the rules of this module."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), received {channels!r}")
    colour, alpha = _planes(img, name)
    if alpha is not None:                                          # composite on the background
        a = alpha if colour.ndim == 2 else alpha[..., None]
        colour = a * colour + (1.0 - a) * BACKGROUND
    if channels == 1 and colour.ndim == 3:
        colour = colour @ LUMA
    if colour.ndim == 2:
        colour = colour[..., None]
    if channels == 3 and colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    return np.ascontiguousarray(colour, np.float32)


def resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize float (H, W, C) to (height, width, C) with the one filter (Pillow bilinear, per channel, in float)."""
    from PIL import Image
    if x.shape[:2] == (height, width):
        return x
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c], np.float32), "F")
                         .resize((int(width), int(height)), Image.Resampling.BILINEAR)) for c in range(x.shape[2])]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def encode_png(image) -> bytes:
    """PNG bytes of a Pillow image, a uint8 array (H, W), (H, W, 1) or (H, W, 3), or a float array in [0, 1]
    (rounded to 8 bits, values outside [0, 1] clipped)."""
    from PIL import Image
    if not isinstance(image, Image.Image):
        a = np.asarray(image)
        if a.dtype != np.uint8:
            a = (np.clip(a.astype(np.float64), 0.0, 1.0) * 255).round().astype(np.uint8)
        image = Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def read_image(source: Source, size=None, channels: int = 1, name: Optional[str] = None) -> np.ndarray:
    """A picture (path or bytes) as float32 (H, W, channels) in [0, 1].

    ``size`` is None (keep), an int (square) or ``(height, width)``. Errors are
    :class:`CnnlabFileError` naming the file (or ``name``).
    """
    img = open_image(source, name)
    try:
        x = to_array(img, channels, _name(source, name))
    finally:
        img.close()
    if size is not None:
        h, w = (size, size) if isinstance(size, (int, np.integer)) else size
        if int(h) < 1 or int(w) < 1:
            raise ValueError(f"image size must be positive, received {size!r}")
        x = resize(x, int(h), int(w))
    return x


# ---------------------------------------------------------------------------
# A picture as a model's input: the background rule and MNIST's normalization
# ---------------------------------------------------------------------------
def border_brightness(x: np.ndarray) -> float:
    """Median brightness of the outermost rows and columns of (H, W, C): the picture's background."""
    g = x.mean(axis=2) if x.ndim == 3 else x
    return float(np.median(np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])))


def mnist_normalize(x: np.ndarray, box: int = MNIST_BOX, field: int = MNIST_FIELD) -> Optional[np.ndarray]:
    """Size-normalize a light-on-dark drawing into a ``box`` square and centre it by mass in ``field``.

    ``x`` is (H, W) or (H, W, 1) at any resolution. The drawing is the bounding box
    of the pixels brighter than half-way between the background ``b`` (the border's
    median) and the brightest pixel; it is resized (aspect ratio kept) so its longer
    side is ``box`` pixels, and pasted on a ``field`` x ``field`` background of
    level ``b`` so that its centre of mass, weighted by ``max(x - b, 0)``, falls on
    the field's centre ``((field - 1) / 2, (field - 1) / 2)``, rounded to a whole
    pixel; whatever then lies outside the field is cut off. Returns (field, field, 1),
    or None when nothing stands out from the background.
    """
    g = x[..., 0] if x.ndim == 3 else x
    b = border_brightness(g[..., None])
    peak = float(g.max())
    if peak - b < 1e-3:
        return None
    rows, cols = np.nonzero(g > b + 0.5 * (peak - b))
    crop = g[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    ch, cw = crop.shape
    scale = box / max(ch, cw)
    nh, nw = max(1, round(ch * scale)), max(1, round(cw * scale))
    patch = resize(crop[..., None], nh, nw)[..., 0]
    weight = np.maximum(patch - b, 0.0)
    total = float(weight.sum())
    if total <= 0:
        return None
    cy = float((weight.sum(axis=1) * np.arange(nh)).sum()) / total      # centre of mass in the patch
    cx = float((weight.sum(axis=0) * np.arange(nw)).sum()) / total
    top, left = int(round((field - 1) / 2 - cy)), int(round((field - 1) / 2 - cx))
    out = np.full((field, field), b, np.float32)
    # Paste patch[r, c] at out[top + r, left + c], keeping only what lands inside the field.
    r0, c0 = max(0, -top), max(0, -left)
    r1, c1 = min(nh, field - top), min(nw, field - left)
    out[top + r0:top + r1, left + c0:left + c1] = patch[r0:r1, c0:c1]
    return out[..., None]


def is_mnist_style(input_shape, dataset=None) -> bool:
    """True for a model whose inputs are MNIST-style: 28x28x1 and trained on MNIST (or on data not recorded)."""
    if tuple(input_shape) != (MNIST_FIELD, MNIST_FIELD, 1):
        return False
    return dataset is None or str(dataset).lower() in MNIST_STYLE_DATASETS


# How the command line turns each rule off, quoted in the notes; another interface passes its own words.
UNDO_FLAGS = {"invert": "--keep-background keeps it as it is", "center": "--no-center skips this"}


def prepare_input(source: Source, input_shape, invert="auto", center="auto", dataset=None,
                  name: Optional[str] = None, undo: Optional[dict] = None) -> tuple[np.ndarray, list]:
    """One picture as one model input (H, W, C) float32, and the notes saying what was done to it.

    ``invert``: ``"auto"`` (grayscale models: invert a picture whose background is
    light, the opposite of the training data's dark one), ``"yes"`` or ``"no"``.
    ``center``: ``"auto"`` (MNIST's normalization for MNIST-style models, see
    :func:`is_mnist_style`; ``dataset`` is the training data's name when known),
    ``"yes"`` or ``"no"``. The notes are sentences for the user, one per rule applied,
    whose subject is ``name`` (e.g. "your drawing"); ``undo`` says how the user turns the
    ``"invert"`` and ``"center"`` rules off (default :data:`UNDO_FLAGS`, the command line's flags).
    """
    if invert not in ("auto", "yes", "no"):
        raise ValueError(f"invert must be 'auto', 'yes' or 'no', received {invert!r}")
    if center not in ("auto", "yes", "no"):
        raise ValueError(f"center must be 'auto', 'yes' or 'no', received {center!r}")
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise ValueError(f"pictures can be given to models taking (H, W, 1) or (H, W, 3) inputs; this one "
                         f"takes {shape}")
    h, w, c = shape
    what = _name(source, name)
    undo = {**UNDO_FLAGS, **(undo or {})}
    x = read_image(source, None, c, name)
    notes = []
    background = border_brightness(x)
    if invert == "yes" or (invert == "auto" and c == 1 and background > LIGHT_BORDER):
        x = 1.0 - x
        notes.append(f"{_capital(what)} was inverted: light strokes on a dark background, like the training images."
                     if invert == "yes" else
                     f"{_capital(what)} has a light background ({background:.2f} of white), the opposite of the "
                     f"training images' dark one, so it was inverted ({undo['invert']}).")
    if c == 1 and (center == "yes" or (center == "auto" and is_mnist_style(shape, dataset))):
        box = round(MNIST_BOX * min(h, w) / MNIST_FIELD)
        norm = mnist_normalize(x, box=box, field=min(h, w))
        if norm is None:
            notes.append(f"Nothing in {what} stands out from the background, so it was only resized.")
        else:
            x = norm if (h, w) == norm.shape[:2] else resize(norm, h, w)
            notes.append(f"{_capital(what)} was scaled into a {box}x{box} box and centred by its centre of mass, "
                         f"as MNIST digits are ({undo['center']}).")
            return x.astype(np.float32), notes
    return resize(x, h, w), notes


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def add_arguments(parser, invert_flag: bool = True) -> None:
    """``--keep-background`` and ``--no-center`` (and ``--invert``) for a command that reads a picture.

    ``invert_flag`` True gives ``--invert`` as a plain flag (``cnnlab predict``); False
    leaves ``--invert`` to the caller (``explain`` takes ``--invert auto|yes|no``).
    """
    if invert_flag:
        parser.add_argument("--invert", action="store_true",
                            help="invert the picture's brightness whatever its background")
    parser.add_argument("--keep-background", "--no-invert", dest="keep_background", action="store_true",
                        help="never invert; by default a grayscale picture with a light background (ink on paper) "
                             "is inverted to match training data drawn light on dark")
    parser.add_argument("--no-center", dest="no_center", action="store_true",
                        help="do not size-normalize and centre the drawing as MNIST was made (done by default for "
                             "models trained on MNIST-style 28x28x1 data)")


def options_from(args) -> dict:
    """``invert`` and ``center`` for :func:`prepare_input` from parsed arguments (``--invert`` flag or choice)."""
    inv = getattr(args, "invert", False)
    inv = "yes" if inv is True else "auto" if inv in (False, None) else str(inv)
    if getattr(args, "keep_background", False):
        if inv == "yes":
            raise ValueError("--invert and --keep-background contradict each other: give one")
        inv = "no"
    return {"invert": inv, "center": "no" if getattr(args, "no_center", False) else "auto"}
