"""``load_dataset``: one entry point for named datasets and dataset folders."""
from __future__ import annotations

from pathlib import Path

from .._io import CnnlabFileError, PathLike
from .cifar import find_cifar10_files, load_cifar10_files
from .folder import load_folder_dataset
from .official import (CIFAR10_CLASSES, FASHION_MNIST_CLASSES, MNIST_CLASSES, find_idx_files,
                       load_cifar10, load_fashion_mnist, load_idx_folder, load_mnist)
from .shapes import SHAPES_CLASSES, load_shapes

DATASETS = {
    "mnist": (load_mnist, MNIST_CLASSES),
    "fashion-mnist": (load_fashion_mnist, FASHION_MNIST_CLASSES),
    "cifar10": (load_cifar10, CIFAR10_CLASSES),
    "shapes": (lambda data_dir, **kw: load_shapes(**kw), SHAPES_CLASSES),
}


def _load_path(path: Path, **kw):
    """Load a folder of IDX files, CIFAR-10 binary files or class subfolders of images."""
    if not path.is_dir():
        raise CnnlabFileError(f"dataset path {path} is not a folder")
    idx_files = find_idx_files(path, partial=True)
    if idx_files:
        return (*load_idx_folder(idx_files, **kw), [str(i) for i in range(kw.get("num_classes", 10))])
    cifar_files = find_cifar10_files(path)
    if cifar_files:
        return (*load_cifar10_files(*cifar_files, **kw), CIFAR10_CLASSES)
    return load_folder_dataset(path, **kw)


def load_dataset(name_or_path: PathLike, data_dir: PathLike | None = None, **kw):
    """Load a dataset by name or from a folder.

    Names: ``mnist``, ``fashion-mnist``, ``cifar10`` (looked up in ``data_dir``,
    ``$CNNLAB_DATA``, the cache, else downloaded) and ``shapes`` (generated;
    ``kw`` go to :func:`load_shapes`). Any other value is a folder path: MNIST-
    style IDX files, CIFAR-10 binary batches, or an image folder (``kw`` go to
    :func:`load_folder_dataset`). Returns ``((x_train, y_train), (x_test,
    y_test), info)`` with ``info = {"name", "class_names", "input_shape"}``.
    """
    key = str(name_or_path).lower().replace("_", "-")
    if key in DATASETS:
        loader, class_names = DATASETS[key]
        train, test = loader(data_dir, **kw)
        name = key
    elif Path(name_or_path).exists():
        path = Path(name_or_path)
        train, test, class_names = _load_path(path, **kw)
        name = path.resolve().name
    else:
        raise ValueError(
            f"unknown dataset {str(name_or_path)!r}: valid names are {', '.join(DATASETS)}, "
            "or the path of a folder (image folder, IDX files or CIFAR-10 binary files)"
        )
    info = {"name": name, "class_names": list(class_names), "input_shape": tuple(train[0].shape[1:])}
    return train, test, info
