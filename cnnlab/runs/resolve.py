"""What names a model, resolved one way for every command: ``train``, ``summary``, ``evaluate``,
``predict``, ``export``, ``serve`` and the explain tools.

A model is named by one of:

* a model object (``cnnlab.Model``, graph or ``Sequential``): itself;
* a run directory, or a ``.safetensors`` model file: loaded (``cnnlab.load``), with the run's
  ``config.json`` and the class names it recorded when the file lies in a run directory;
* an ``.onnx`` file: imported (``cnnlab.onnx.importer``), with the class names in its metadata;
* an architecture ``.json`` file: built, untrained (``Model.from_config``);
* a zoo name (``cnnlab.models``): built, untrained.

``resolve_model`` returns a :class:`ResolvedModel`; ``build_model`` is the model a training
configuration asks for (an architecture or a zoo name, checked against the data).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import losses as losses_mod
from .. import models as zoo
from .._io import CnnlabFileError, read_json
from ..model import Model, load
from . import files


@dataclass
class ResolvedModel:
    """A model and where it came from: ``run_dir`` and its checked ``config`` (``None`` outside a run),
    ``class_names`` the run recorded (``None`` when it recorded none or they do not fit the model),
    ``trained`` (False for a zoo name or an architecture) and ``source`` (for messages)."""

    model: Model
    source: str
    trained: bool = True
    run_dir: Path | None = None
    config: dict | None = None
    class_names: list | None = None


def resolve_model(spec, input_shape=None, num_classes=None, seed=None, untrained=True) -> ResolvedModel:
    """The model ``spec`` names (see the module docstring).

    ``input_shape`` and ``num_classes`` build a zoo model for that data, and ``input_shape`` an architecture
    that has none; ``seed`` (if given) replaces theirs. With ``untrained=False`` only a model object, a run
    directory or a model file will do: anything else is an error naming the path.
    """
    if isinstance(spec, Model):
        return ResolvedModel(spec, f"model {spec.name!r}")
    path = Path(str(spec))
    if path.suffix.lower() == ".onnx":
        from ..onnx.importer import load_with_class_names
        model, names = load_with_class_names(path)
        names = names if isinstance(names, list) and len(names) == model.num_classes else None
        return ResolvedModel(model, str(path), True, class_names=names)
    if path.is_dir() or path.suffix.lower() == ".safetensors" or not untrained:
        if not path.exists():
            raise CnnlabFileError(f"{path} does not exist (expected a run directory or a .safetensors model)")
        model = load(path)
        run_dir = files.find_run_dir(path)
        config = files.read_config(run_dir) if run_dir is not None else None
        names = ((config or {}).get("data") or {}).get("class_names")
        names = names if isinstance(names, list) and len(names) == model.num_classes else None
        return ResolvedModel(model, str(path), True, run_dir, config, names)
    if path.suffix.lower() == ".json" or path.is_file():
        arch = read_json(path, "architecture file")
        if not isinstance(arch, dict):
            raise CnnlabFileError(f"architecture file {path}: expected a JSON object with a \"layers\" list")
        if arch.get("input_shape") is None and input_shape is not None:
            arch = {**arch, "input_shape": [int(d) for d in input_shape]}
        if seed is not None:
            arch = {**arch, "seed": int(seed)}
        model = Model.from_config(arch, source=f"architecture file {path}")
        if not model.built:
            raise ValueError(f"architecture file {path} has no input_shape; give one (--input-shape H,W,C)")
        return ResolvedModel(model, f"the architecture in {path}", trained=False)
    build = zoo.get(spec)
    kw = {k: v for k, v in (("input_shape", input_shape), ("num_classes", num_classes), ("seed", seed))
          if v is not None}
    try:
        model = build(**kw)
    except ValueError as e:
        raise ValueError(f"model {spec!r} cannot be built for inputs {input_shape} and {num_classes} classes: "
                         f"{e}") from None
    return ResolvedModel(model, f"model {spec!r}", trained=False)


def build_model(spec, input_shape, num_classes, seed=0, loss="softmax") -> Model:
    """A model from a zoo name or an architecture ``.json`` file, for the given data.

    A JSON architecture without ``input_shape`` is built for ``input_shape``; its seed is replaced
    by ``seed``. The model must take ``input_shape`` and output ``num_classes`` scores.
    """
    input_shape = tuple(int(d) for d in input_shape)
    resolved = resolve_model(spec, input_shape, num_classes, seed=int(seed))
    model, where = resolved.model, resolved.source
    model.loss = losses_mod.get(loss)
    if tuple(model.input_shape) != input_shape:
        raise ValueError(f"{where} takes inputs of shape {tuple(model.input_shape)} but the dataset's images are "
                         f"{input_shape}")
    if len(model.output_shape) != 1:
        raise ValueError(f"{where} ends in outputs of shape {model.output_shape}; a classifier must end in "
                         f"one score per class (add Flatten and Dense({num_classes}))")
    if model.num_classes != num_classes:
        raise ValueError(f"{where} outputs {model.num_classes} classes but the dataset has {num_classes}")
    return model
