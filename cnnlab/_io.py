"""File helpers shared by every part of cnnlab that writes or reads files.

Every file cnnlab writes goes through :func:`atomic_write`: the bytes land in a
temporary file in the same directory, are flushed to disk, and only then replace
the target with ``os.replace`` (atomic on POSIX and Windows). A crash mid-write
leaves the old file intact.
"""
from __future__ import annotations

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


def atomic_write(path: PathLike, data: Union[bytes, str, Callable[[str], None]]) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    ``data`` is bytes, text (written as UTF-8), or a callable that receives a
    temporary file name and writes the content there itself (for libraries that
    only write to a path, such as matplotlib or safetensors).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            if isinstance(data, str):
                data = data.encode("utf-8")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())                  # mkstemp makes 0600; follow the umask like open() does
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


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
