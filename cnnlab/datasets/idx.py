"""Reader for the IDX format of MNIST, Fashion-MNIST, KMNIST and EMNIST.

An IDX file starts with a big-endian magic number whose first two bytes are
zero, whose third byte is the element type and whose fourth byte is the number
of dimensions. One big-endian uint32 per dimension follows, then the data in C
order. Files may be gzip-compressed.
"""
from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np

from .._io import CnnlabFileError, PathLike
from ..resources import available_memory

IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_maybe_gzip(path: PathLike, what: str, limit: int | None = None) -> bytes:
    """Return the content of ``path``, decompressed when it is gzip data, at most ``limit`` bytes of it.

    Decompression stops after ``limit`` bytes, so a small archive that inflates to more than a
    file of its kind can hold (a gzip bomb) is never inflated whole; a longer content is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CnnlabFileError(f"{what} {path} does not exist")
    raw = path.read_bytes()
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
                raw = f.read(-1 if limit is None else limit + 1)
        except (OSError, EOFError, zlib.error) as e:
            raise CnnlabFileError(f"{what} {path} is not a valid gzip file: {e}") from None
    if limit is not None and len(raw) > limit:
        raise CnnlabFileError(f"{what} {path} holds more than {limit:,} bytes, more than cnnlab reads "
                              f"(the memory available)")
    return raw


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``) into an array in native byte order."""
    path = Path(path)
    raw = _read_maybe_gzip(path, "IDX file", limit=available_memory() // 2)
    if len(raw) < 4:
        raise CnnlabFileError(f"IDX file {path} is {len(raw)} bytes long, too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0:
        raise CnnlabFileError(
            f"IDX file {path} has a bad magic number 0x{raw[:4].hex()}: "
            "its first two bytes must be zero (is it really an IDX file?)"
        )
    type_byte, ndim = raw[2], raw[3]
    if type_byte not in IDX_TYPES:
        known = ", ".join(f"0x{t:02X}" for t in IDX_TYPES)
        raise CnnlabFileError(f"IDX file {path} has unknown element type 0x{type_byte:02X} (known: {known})")
    if ndim == 0:
        raise CnnlabFileError(f"IDX file {path} declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CnnlabFileError(f"IDX file {path} is truncated inside its header ({len(raw)} of {header} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[type_byte]
    expected, got = math.prod(shape) * dtype.itemsize, len(raw) - header
    if got != expected:
        problem = "is truncated" if got < expected else "has extra bytes"
        raise CnnlabFileError(
            f"IDX file {path} {problem}: for shape {shape} of {dtype.name} "
            f"expected {expected} bytes of data, got {got}"
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def load_idx_pair(images_path: PathLike, labels_path: PathLike, num_classes: int = 10):
    """Load an IDX image file and its IDX label file.

    Returns ``(x, y)``: ``x`` float32 of shape (N, H, W, 1) in [0, 1] (uint8
    pixels divided by 255), ``y`` int64 of shape (N,) with values in
    ``0 .. num_classes - 1``.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CnnlabFileError(
            f"IDX image file {images_path} must hold uint8 images of shape (N, H, W); "
            f"it holds {images.dtype.name} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise CnnlabFileError(
            f"IDX label file {labels_path} must hold integer labels of shape (N,); "
            f"it holds {labels.dtype.name} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise CnnlabFileError(
            f"IDX image file {images_path} has {len(images)} images but "
            f"label file {labels_path} has {len(labels)} labels"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise CnnlabFileError(
            f"IDX label file {labels_path} has label {labels[bad[0]]} at index {bad[0]}, "
            f"outside 0..{num_classes - 1} ({bad.size} such labels)"
        )
    x = images[..., None].astype(np.float32) / 255
    return x, labels.astype(np.int64)
