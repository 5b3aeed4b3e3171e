"""Downloads into the cache directory, with checksums and safe extraction.

Every file lands through :func:`cnnlab._io.atomic_write` and is verified before
it replaces anything: a failed or corrupt download leaves nothing behind.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .._io import CnnlabFileError, PathLike, atomic_write

CHUNK = 1 << 20


class DatasetNotFoundError(CnnlabFileError):
    """A dataset is neither on disk nor downloadable; the message says where to put it."""


def cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/cnnlab/<name>``, by default ``~/.cache/cnnlab/<name>``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnlab" / name


def _digest(path: Path, algorithm: str, gunzip: bool = False) -> str | None:
    """Hex digest of the file (or of its gzip-decompressed content; None if that fails)."""
    h = hashlib.new(algorithm)
    try:
        with (gzip.open if gunzip else open)(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return h.hexdigest()


def verify(path: PathLike, md5: str | None = None, content_sha256: str | None = None) -> bool:
    """True if the file's md5 is ``md5`` or its gunzipped content's sha256 is ``content_sha256``."""
    path = Path(path)
    return ((md5 is not None and _digest(path, "md5") == md5)
            or (content_sha256 is not None and _digest(path, "sha256", gunzip=True) == content_sha256))


def download_file(url: str, dest: PathLike, md5: str | None = None,
                  content_sha256: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically, with a progress bar.

    When a checksum is given the download must match it (see :func:`verify`),
    else :class:`CnnlabFileError` is raised and ``dest`` is left untouched.
    Network errors propagate as ``OSError`` (``urllib.error.URLError``).
    """
    dest = Path(dest)

    def write(tmp: str) -> None:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=not progress, leave=False) as bar:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
        if (md5 or content_sha256) and not verify(tmp, md5, content_sha256):
            expected = " or ".join(filter(None, [md5 and f"md5 {md5}",
                                                 content_sha256 and f"sha256 of the content {content_sha256}"]))
            raise CnnlabFileError(
                f"download of {url} for {dest} does not match its checksum: expected {expected}, "
                f"got md5 {_digest(Path(tmp), 'md5')}; nothing was saved"
            )

    return atomic_write(dest, write)


def extract_tar(archive: PathLike, dest: PathLike) -> None:
    """Extract the regular files of a tar archive under ``dest``.

    Members with absolute paths, ``..`` components, links or device entries
    are rejected before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = PurePosixPath(m.name).parts
                if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
                    raise CnnlabFileError(f"archive {archive} has an unsafe member {m.name!r}; nothing was extracted")
            for m in members:
                if m.isfile():
                    atomic_write(dest.joinpath(*PurePosixPath(m.name).parts), tar.extractfile(m).read())
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise CnnlabFileError(f"archive {archive} is corrupt: {e}") from None
