"""Datasets for cnnlab: readers for the standard file formats, the official
MNIST, Fashion-MNIST and CIFAR-10 (found on disk or downloaded), image
folders, arrays in memory and the generated ``shapes`` dataset.

Images are float32 arrays (N, H, W, C) in [0, 1], channels last; labels are
int64 arrays (N,). Every unreadable file raises
:class:`cnnlab._io.CnnlabFileError` naming the file.
"""
from .arrays import from_arrays
from .cifar import find_cifar10_files, load_cifar10_files, read_cifar10_bin
from .download import DatasetNotFoundError, cache_dir, download_file, extract_tar
from .folder import load_folder_dataset, load_image_folder
from .idx import load_idx_pair, read_idx
from .official import (CIFAR10_CLASSES, FASHION_MNIST_CLASSES, MNIST_CLASSES, SOURCES, find_dataset,
                       find_idx_files, load_cifar10, load_fashion_mnist, load_mnist)
from .registry import DATASETS, load_dataset
from .shapes import SHAPES_CLASSES, load_shapes
from .split import split_seed_for, split_train_val

__all__ = [
    "from_arrays", "find_cifar10_files", "load_cifar10_files", "read_cifar10_bin",
    "DatasetNotFoundError", "cache_dir", "download_file", "extract_tar",
    "load_folder_dataset", "load_image_folder", "load_idx_pair", "read_idx",
    "CIFAR10_CLASSES", "FASHION_MNIST_CLASSES", "MNIST_CLASSES", "SOURCES", "find_dataset", "find_idx_files",
    "load_cifar10", "load_fashion_mnist", "load_mnist", "DATASETS", "load_dataset",
    "SHAPES_CLASSES", "load_shapes", "split_seed_for", "split_train_val",
]
