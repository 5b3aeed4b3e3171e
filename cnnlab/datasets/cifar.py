"""Reader for the binary version of CIFAR-10 (never the pickled one).

Each record is one label byte followed by 3072 pixel bytes: the 1024 red, then
the 1024 green, then the 1024 blue values of a 32x32 image, rows in order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from .._io import CnnlabFileError, PathLike

RECORD_BYTES = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
SUBFOLDER = "cifar-10-batches-bin"


def read_cifar10_bin(path: PathLike):
    """Read one CIFAR-10 binary batch file.

    Returns ``(x, y)``: ``x`` float32 (N, 32, 32, 3) in [0, 1], ``y`` int64 (N,).
    """
    path = Path(path)
    if not path.is_file():
        raise CnnlabFileError(f"CIFAR-10 batch file {path} does not exist")
    raw = path.read_bytes()
    if not raw or len(raw) % RECORD_BYTES:
        raise CnnlabFileError(
            f"CIFAR-10 batch file {path} is {len(raw)} bytes long, not a nonzero multiple of "
            f"{RECORD_BYTES} (1 label byte + 3072 pixel bytes per record)"
        )
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD_BYTES)
    y = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(y > 9)
    if bad.size:
        raise CnnlabFileError(
            f"CIFAR-10 batch file {path} has label {y[bad[0]]} in record {bad[0]}, "
            f"outside 0..9 ({bad.size} such records)"
        )
    x = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255
    return x, y


def load_cifar10_files(train_files: Iterable[PathLike], test_files: Iterable[PathLike]):
    """Load and concatenate CIFAR-10 binary batch files.

    Returns ``(x_train, y_train), (x_test, y_test)``.
    """
    def load(files, which):
        files = [files] if isinstance(files, (str, Path)) else list(files)
        if not files:
            raise ValueError(f"no CIFAR-10 {which} files were given")
        parts = [read_cifar10_bin(f) for f in files]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return load(train_files, "training"), load(test_files, "test")


def find_cifar10_files(folder: PathLike):
    """Return ``(train_files, test_files)`` found in ``folder``, or None.

    Recognises the official layout (``data_batch_1.bin`` .. ``data_batch_5.bin``
    and ``test_batch.bin``, possibly in a ``cifar-10-batches-bin`` subfolder)
    and samples of it (files matching ``data_batch_*.bin`` and
    ``test_batch*.bin``). An official layout missing some batches is an error.
    """
    folder = Path(folder)
    for d in (folder, folder / SUBFOLDER):
        present = [name for name in TRAIN_FILES if (d / name).is_file()]
        if present:
            missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (d / name).is_file()]
            if missing:
                raise CnnlabFileError(
                    f"CIFAR-10 folder {d} has {', '.join(present)} but lacks {', '.join(missing)}; "
                    "the full dataset needs all five training batches and test_batch.bin"
                )
            return [d / name for name in TRAIN_FILES], [d / TEST_FILE]
        train, test = sorted(d.glob("data_batch_*.bin")), sorted(d.glob("test_batch*.bin"))
        if train and test:
            return train, test
    return None
