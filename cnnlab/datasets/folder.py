"""Datasets stored as image files, one subfolder per class.

``root/cat/001.png, root/dog/xyz.jpg, ...``: the sorted subfolder names are the
class names and their positions the labels. Images are read by
:mod:`cnnlab.images` (transparency composited on white, 16-bit kept, one resize filter).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import CnnlabFileError, PathLike
from ..images import open_image, resize, to_array

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
COLOR_MODES = ("auto", "grayscale", "rgb")
_GRAY_MODES = ("1", "L", "LA", "La", "I", "F")          # prefixes: "I" covers I;16, I;16B...


def _read_image(file: Path, color_mode: str, size):
    """The image as float32 (H, W, 1) or (H, W, 3) in [0, 1], resized to ``size`` (H, W) if given (cnnlab.images)."""
    img = open_image(file)
    try:
        gray = color_mode == "grayscale" or (color_mode == "auto" and img.mode.startswith(_GRAY_MODES))
        x = to_array(img, 1 if gray else 3, f"image {file}")
    finally:
        img.close()
    return x if size is None else resize(x, size[0], size[1])


def _class_folders(root: Path):
    if not root.is_dir():
        raise CnnlabFileError(f"image folder {root} does not exist or is not a folder")
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise CnnlabFileError(f"image folder {root} has no class subfolders (expected one subfolder per class)")
    return classes


def load_image_folder(path: PathLike, image_size=None, color_mode: str = "auto"):
    """Load every image under ``path/<class_name>/``.

    ``image_size`` is (H, W) or an int for square images; without it all
    images must have the size of the first one. ``color_mode`` "grayscale"
    gives C=1, "rgb" C=3, "auto" C=1 when every image is grayscale, else C=3.
    Returns ``(x, y, class_names)``: float32 (N, H, W, C) in [0, 1], int64 (N,),
    list of str.
    """
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {COLOR_MODES}; got {color_mode!r}")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    classes = _class_folders(Path(path))
    images, labels, first = [], [], None
    for label, folder in enumerate(classes):
        files = sorted(f for f in folder.iterdir()
                       if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file() and not f.name.startswith("."))
        if not files:
            raise CnnlabFileError(
                f"class folder {folder} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        for file in files:
            img = _read_image(file, color_mode, image_size)
            if first is None:
                first = file
            elif img.shape[:2] != images[0].shape[:2]:
                raise CnnlabFileError(
                    f"image {file} is {img.shape[1]}x{img.shape[0]} but {first} is "
                    f"{images[0].shape[1]}x{images[0].shape[0]}; pass image_size to resize them all"
                )
            images.append(img)
            labels.append(label)
    if any(img.shape[2] == 3 for img in images):
        images = [img if img.shape[2] == 3 else np.repeat(img, 3, axis=2) for img in images]
    return np.stack(images), np.array(labels, dtype=np.int64), [d.name for d in classes]


def load_folder_dataset(path: PathLike, image_size=None, color_mode: str = "auto",
                        test_fraction: float = 0.2, seed: int = 0):
    """Load an image-folder dataset split into training and test sets.

    With ``train/`` and ``test/`` subfolders (each one subfolder per class)
    those are the two sets. Otherwise the single image folder is split
    deterministically: in each class, a seeded shuffle puts ``test_fraction``
    of the images into the test set.
    Returns ``((x_train, y_train), (x_test, y_test), class_names)``.
    """
    root = Path(path)
    if (root / "train").is_dir() and (root / "test").is_dir():
        x_tr, y_tr, names = load_image_folder(root / "train", image_size, color_mode)
        x_te, y_te, test_names = load_image_folder(root / "test", image_size or x_tr.shape[1:3], color_mode)
        if test_names != names:
            raise CnnlabFileError(
                f"image folder {root}: the class folders of train/ {names} and test/ {test_names} differ"
            )
        if x_tr.shape[3] != x_te.shape[3]:
            x_tr, x_te = (np.repeat(x, 3, axis=3) if x.shape[3] == 1 else x for x in (x_tr, x_te))
        return (x_tr, y_tr), (x_te, y_te), names
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1; got {test_fraction}")
    x, y, names = load_image_folder(root, image_size, color_mode)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for label in range(len(names)):
        idx = rng.permutation(np.flatnonzero(y == label))
        test[idx[:int(round(len(idx) * test_fraction))]] = True
    return (x[~test], y[~test]), (x[test], y[test]), names
