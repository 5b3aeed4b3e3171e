"""Optional dependencies: imported when a feature needs them, with a one-line message when absent.

    onnx = require("onnx", extra="onnx")     # raises MissingExtra: ... pip install "cnnlab[onnx]"
"""
from __future__ import annotations

import importlib


class MissingExtra(ImportError):
    """An optional package a feature needs is not installed; the message says how to install it."""


def require(module: str, extra: str, feature: str | None = None):
    """Import and return ``module``, or raise :class:`MissingExtra` naming the ``cnnlab[extra]`` to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module.split(".")[0]:
            raise
        what = feature or extra
        raise MissingExtra(f"{what} needs the {module.split('.')[0]!r} package, which is not installed: "
                           f'pip install "cnnlab[{extra}]"') from None
