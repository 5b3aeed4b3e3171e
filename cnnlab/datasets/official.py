"""MNIST, Fashion-MNIST and CIFAR-10: finding them on disk or downloading them.

Each loader looks, in order, in the ``path`` it is given, in ``$CNNLAB_DATA``,
then in the cache directory ``~/.cache/cnnlab/<name>`` (``$XDG_CACHE_HOME``
is honoured); for ``path`` and ``$CNNLAB_DATA`` the subfolder named after the
dataset is tried before the folder itself. If the files are in none of these
they are downloaded from the official sources into the cache, checksums
verified.
"""
from __future__ import annotations

import http.client
import os
from dataclasses import dataclass
from pathlib import Path

from .._io import CnnlabFileError, PathLike
from .cifar import TEST_FILE, TRAIN_FILES, find_cifar10_files, load_cifar10_files
from .download import DatasetNotFoundError, cache_dir, download_file, extract_tar
from .idx import load_idx_pair

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class RemoteFile:
    """A file of an official distribution and the checksums it may match."""

    name: str
    md5: str | None = None
    content_sha256: str | None = None


@dataclass(frozen=True)
class Source:
    """Where a dataset is downloaded from and which files it needs on disk."""

    name: str
    title: str
    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    needed: tuple[str, ...]


SOURCES = {
    "mnist": Source(
        "mnist", "MNIST",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        (
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                       "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                       "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                       "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                       "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        ),
        tuple(f"{n}.gz" for n in IDX_FILES),
    ),
    "fashion-mnist": Source(
        "fashion-mnist", "Fashion-MNIST",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        (
            RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        tuple(f"{n}.gz" for n in IDX_FILES),
    ),
    "cifar10": Source(
        "cifar10", "CIFAR-10 (binary version)",
        ("https://www.cs.toronto.edu/~kriz/",),
        (RemoteFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1753b7e1a2a4b2a3f3"),),
        (*TRAIN_FILES, TEST_FILE),
    ),
}


def find_idx_files(folder: PathLike, partial: bool = False):
    """Paths of the four MNIST-style IDX files in ``folder`` (raw or ``.gz``), or None.

    With ``partial``, a folder holding some of the four but not all is an error naming the missing ones.
    """
    found, missing = [], []
    for name in IDX_FILES:
        variants = (name, name.replace("-idx", ".idx"))
        paths = [Path(folder) / (v + ext) for v in variants for ext in (".gz", "")]
        path = next((p for p in paths if p.is_file()), None)
        (found if path is not None else missing).append(path or name)
    if missing and found and partial:
        raise CnnlabFileError(f"IDX folder {folder} has {', '.join(p.name for p in found)} but lacks "
                              f"{', '.join(missing)} (raw or .gz)")
    return None if missing else found


def load_idx_folder(files, num_classes: int = 10):
    """Load the four IDX files returned by :func:`find_idx_files`."""
    return load_idx_pair(files[0], files[1], num_classes), load_idx_pair(files[2], files[3], num_classes)


def search_dirs(name: str, path: PathLike | None = None) -> list:
    """Where dataset ``name`` is looked for, in order: ``path`` (and ``path/name``), ``$CNNLAB_DATA`` (and
    ``$CNNLAB_DATA/name``), then the cache folder (where downloads go)."""
    dirs = []
    for base in (path, os.environ.get("CNNLAB_DATA")):
        if base:
            dirs += [Path(base) / name, Path(base)]
    return [*dirs, cache_dir(name)]


def _download(source: Source, dest: Path) -> None:
    """Fetch the missing files of ``source`` into ``dest``, unpacking archives."""
    for f in source.files:
        target = dest / f.name
        if not target.is_file():
            errors = []
            for mirror in source.mirrors:
                try:
                    download_file(mirror + f.name, target, f.md5, f.content_sha256)
                    break
                except (OSError, http.client.HTTPException) as e:
                    errors.append(f"{mirror + f.name}: {e}")
            else:
                raise OSError("; ".join(errors))
        if f.name.endswith((".tar.gz", ".tgz")):
            extract_tar(target, dest)
            target.unlink()


def _locate(key: str, path: PathLike | None, download: bool, finder):
    """Return what ``finder`` finds in the first folder that has the dataset."""
    source = SOURCES[key]
    if path is not None and not Path(path).is_dir():
        raise DatasetNotFoundError(f"{source.title} data folder {path} does not exist")
    dirs = search_dirs(source.name, path)
    for d in dirs:
        found = finder(d)
        if found:
            return found
    reason = "downloading is turned off"
    if download:
        try:
            _download(source, dirs[-1])
            found = finder(dirs[-1])
            if found:
                return found
            reason = f"the download did not contain {', '.join(source.needed)}"
        except OSError as e:
            reason = f"the download failed: {e}"
    raise DatasetNotFoundError(
        f"{source.title} was not found and {reason}. Put the files {', '.join(source.needed)} "
        f"(from {source.mirrors[0]}{source.files[0].name if len(source.files) == 1 else ''}) "
        f"in one of these folders: {', '.join(str(d) for d in dirs)}; or pass --data-dir DIR "
        f"or set $CNNLAB_DATA=DIR with the files in DIR/{source.name}/"
    )


def find_dataset(key: str, path: PathLike | None = None) -> Path | None:
    """The folder holding the named dataset ``key``'s files, looked up as the loaders look (``path``,
    ``$CNNLAB_DATA``, the cache), without reading or downloading them; ``None`` when absent."""
    finder = find_cifar10_files if key == "cifar10" else find_idx_files
    try:
        found = _locate(key, path, False, finder)
    except (DatasetNotFoundError, CnnlabFileError):
        return None
    first = found[0] if key != "cifar10" else found[1][0]
    return Path(first).parent


def load_mnist(path: PathLike | None = None, download: bool = True):
    """MNIST digits: ``(x_train, y_train), (x_test, y_test)``, 60000 and 10000 images (28, 28, 1)."""
    return load_idx_folder(_locate("mnist", path, download, find_idx_files))


def load_fashion_mnist(path: PathLike | None = None, download: bool = True):
    """Fashion-MNIST: ``(x_train, y_train), (x_test, y_test)``, 60000 and 10000 images (28, 28, 1)."""
    return load_idx_folder(_locate("fashion-mnist", path, download, find_idx_files))


def load_cifar10(path: PathLike | None = None, download: bool = True):
    """CIFAR-10 from its binary version: ``(x_train, y_train), (x_test, y_test)``, images (32, 32, 3).

    A folder holding a sample (``data_batch_*.bin`` and ``test_batch*.bin``
    files with fewer records) is loaded as well.
    """
    return load_cifar10_files(*_locate("cifar10", path, download, find_cifar10_files))
