"""File helpers shared by every part of cnnlab that writes or reads files.

Every file cnnlab writes goes through :func:`atomic_write`: the bytes land in a
temporary file in the same directory, are flushed to disk (``fsync``), and only
then replace the target with ``os.replace`` (atomic on POSIX and Windows); the
directory is flushed too, so after a crash of the machine the name points at the
old or the new file, never at a half-written one. A failed write (a full disk,
a quota, an I/O error, a read-only folder) removes the temporary file, leaves
the old file intact and raises :class:`WriteFailed`, whose one-line message says
what happened and to which file.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

PathLike = Union[str, "os.PathLike[str]"]


class CnnlabFileError(ValueError):
    """A file cnnlab was asked to read is missing, corrupt or of the wrong kind.

    The message always names the file and says what is wrong with it.
    """


class WriteFailed(OSError):
    """Writing a file failed (disk full, quota, I/O error, read-only folder, ...); the file named keeps its
    previous content. ``str()`` is one line: ``no space left on device while writing PATH`` (then ``note``)."""

    def __init__(self, error: OSError, path: Path):
        super().__init__(error.errno, error.strerror or str(error), str(path))
        self.path = Path(path)
        self.note = ""                                 # what is still intact, added by whoever knows

    def __str__(self):
        what = (self.strerror or "write error")
        return f"{what[:1].lower() + what[1:]} while writing {self.path}" + (f"; {self.note}" if self.note else "")


def atomic_write(path: PathLike, data: Union[bytes, str, Callable[[str], None]]) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    ``data`` is bytes, text (written as UTF-8), or a callable that receives a
    temporary file name and writes the content there itself (for libraries that
    only write to a path, such as matplotlib or safetensors). An ``OSError`` on
    the way is raised as :class:`WriteFailed` naming ``path``; no temporary file is left.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        _fill(fd, tmp, data)
        os.chmod(tmp, 0o666 & ~_umask())                  # mkstemp makes 0600; follow the umask like open() does
        os.replace(tmp, path)
        tmp = None
        fsync_directory(path.parent)
    except OSError as e:
        raise (e if isinstance(e, WriteFailed) else WriteFailed(e, path)) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    return path


def _fill(fd: int, tmp: str, data) -> None:
    """The content of the temporary file ``tmp`` (open as ``fd``, which this closes), flushed to disk."""
    if callable(data):
        os.close(fd)
        data(tmp)
        fd = os.open(tmp, os.O_RDONLY)                  # fsync through a descriptor of our own
    else:
        if isinstance(data, str):
            data = data.encode("utf-8")
        view = memoryview(data)
        while view:                                    # os.write may write less than asked
            view = view[os.write(fd, view):]
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(folder: PathLike) -> None:
    """Flush a directory's entries to disk (a rename inside it survives a crash of the machine); a no-op
    where directories cannot be opened or flushed (Windows, some network filesystems)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EROFS):
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_safetensors(path: PathLike, what: str = "file") -> tuple[dict, dict]:
    """``(tensors, metadata)`` of a safetensors file; a missing or damaged file raises :class:`CnnlabFileError`."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise CnnlabFileError(f"{what} {path} does not exist")
    try:
        with safe_open(str(path), framework="np") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise CnnlabFileError(f"{what} {path} is not a readable safetensors file: {e}") from None


def read_json(path: PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file; a missing or malformed file raises :class:`CnnlabFileError`."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabFileError(f"{what} {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CnnlabFileError(f"{what} {path} is not UTF-8 text: {e}") from None
    return parse_json(text, f"{what} {path}")


def parse_json(text: str, what: str) -> Any:
    """``json.loads`` whose every failure is a :class:`CnnlabFileError` naming ``what``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CnnlabFileError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise CnnlabFileError(f"{what} is nested too deeply to be read as JSON") from None
