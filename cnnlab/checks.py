"""Checks of plain values that arrive from users, configuration files and the command line.

One rule for what counts as an integer everywhere: Python and NumPy integers,
but not ``True``/``False`` (``bool`` is a subclass of ``int``, and ``epochs=True``
is a mistake, not 1). Numbers are finite reals, again without booleans. A pair
(a kernel size, strides, dilation, padding) is ``k``, ``(kh, kw)`` or, from the
command line, the text ``"k"``, ``"kh,kw"`` or ``"khxkw"``.
"""
from __future__ import annotations

import math

import numpy as np


def is_int(v) -> bool:
    """A Python or NumPy integer, not a ``bool``."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_number(v) -> bool:
    """A finite Python or NumPy real number, not a ``bool``."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and math.isfinite(v)


def _least(minimum) -> str:
    return {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")


def check_int(name: str, value, where: str | None = None, minimum: int = 1) -> int:
    """``int(value)`` when ``value`` is an integer >= ``minimum``; else ``ValueError`` naming ``where`` and ``name``
    and quoting the value received."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{where + ': ' if where else ''}{name} must be {_least(minimum)}, received {value!r}")
    return int(value)


def check_positive_int(name: str, value, where: str | None = None) -> int:
    """``check_int`` with ``minimum=1``."""
    return check_int(name, value, where, 1)


def check_pair(name: str, value, where: str | None = None, minimum: int = 1) -> tuple[int, int]:
    """``(a, b)`` from ``k`` (-> ``(k, k)``), a pair ``(a, b)`` or the text ``"k"``, ``"a,b"``, ``"axb"``;
    both integers >= ``minimum``, else ``ValueError`` naming ``where`` and ``name`` and quoting the value."""
    if isinstance(value, str):
        try:
            parts = [int(t) for t in value.lower().replace("x", ",").split(",")]
        except ValueError:
            parts = []
        value = parts * 2 if len(parts) == 1 else parts if len(parts) == 2 else value
    if not isinstance(value, (list, tuple, str)):
        value = (check_int(name, value, where, minimum),) * 2
    if isinstance(value, str) or len(value) != 2:
        raise ValueError(f"{where + ': ' if where else ''}{name} must be an int or a pair of ints, received {value!r}")
    return (check_int(name, value[0], where, minimum), check_int(name, value[1], where, minimum))
