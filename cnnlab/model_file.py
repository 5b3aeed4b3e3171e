"""The model file: one owner for writing and reading it.

A cnnlab model file is a safetensors file: every parameter and buffer under
``"layer_name.key"`` (``Model.state_dict()``), and in its metadata the
architecture (``Model.get_config()``) as JSON under ``FORMAT_KEY``. A run's
checkpoint is the same file with the tensors under ``model/...`` and the
optimizer's state beside them (``cnnlab.runs.files.write_checkpoint``).

A folder that holds a model (a run directory) names it ``MODEL_FILE``;
``model_file`` turns such a folder into the file. Writing is atomic
(``cnnlab._io.atomic_write``); reading checks the file and names it in every
error. Nothing here builds a model: ``cnnlab.model.load`` does, from what
``read_model_file`` returns.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._io import CnnlabFileError, atomic_write, read_safetensors

FORMAT_KEY = "cnnlab_architecture"
MODEL_FILE = "model.safetensors"


def model_file(path) -> Path:
    """The model file a path names: ``DIR/model.safetensors`` for a directory, else the path itself."""
    path = Path(path)
    if not path.is_dir():
        return path
    if not (path / MODEL_FILE).is_file():
        raise CnnlabFileError(f"{path} is a directory without a {MODEL_FILE} file (is it a cnnlab run?)")
    return path / MODEL_FILE


def write_model_file(path, model, tensors=None, metadata=None) -> Path:
    """Write ``tensors`` (default: ``model.state_dict()``) as safetensors, with ``model.get_config()`` under
    ``FORMAT_KEY`` and the strings of ``metadata`` in the file's metadata; atomically."""
    from safetensors.numpy import save_file
    tensors = model.state_dict() if tensors is None else tensors
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta = {**(metadata or {}), FORMAT_KEY: json.dumps(model.get_config()), "format": "np"}
    return atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_model_file(path) -> tuple[dict, dict, Path]:
    """``(architecture, tensors, file)`` of a model file or of a directory holding ``MODEL_FILE``."""
    path = model_file(path)
    tensors, meta = read_safetensors(path, "model file")
    if FORMAT_KEY not in meta:
        raise CnnlabFileError(f"{path} is a safetensors file but not a cnnlab model (no architecture in its metadata)")
    try:
        config = json.loads(meta[FORMAT_KEY])
    except json.JSONDecodeError as e:
        raise CnnlabFileError(f"{path}: the architecture in its metadata is not valid JSON: {e}") from None
    return config, tensors, path
