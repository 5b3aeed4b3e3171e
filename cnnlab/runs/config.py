"""Training configurations: defaults, validation, and the optimizer and loss a configuration asks for.

A configuration is a JSON object (``config.json`` of a run directory): dataset, model (a zoo name or an
architecture ``.json``), epochs, batch size, optimizer, schedule, augmentation, seed, validation split,
early stopping, loss, filter snapshots, workers. ``make_config`` fills and checks one; ``validate_config``
checks one read from a file and names the file in its errors. The model it asks for is built by
``cnnlab.runs.resolve.build_model``.
"""
from __future__ import annotations

import json

from .. import losses as losses_mod
from .. import optim
from .._io import CnnlabFileError
from ..augment import Augmenter
from ..checks import is_int, is_number

# Default learning rate per optimizer when none is given.
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}

# Defaults of ``cnnlab train``: LeNet-5 on MNIST, 5 epochs of SGD with momentum under a one-cycle schedule.
DEFAULTS = {
    "dataset": "mnist", "data_dir": None, "dataset_options": {}, "model": "lenet5", "epochs": 5, "batch_size": 64,
    "optimizer": {"name": "sgd", "lr": None, "momentum": 0.9, "weight_decay": 0.0}, "schedule": "onecycle",
    "augment": "none", "seed": 0, "val_split": None, "early_stopping": None, "label_smoothing": 0.0,
    "loss": "softmax", "snapshot_filters": None, "limit": None, "workers": None,
}
REQUIRED_CONFIG_KEYS = ["dataset", "model", "epochs", "batch_size", "optimizer", "schedule", "augment", "seed",
                        "val_split", "loss"]


def _fail(source, message):
    """``CnnlabFileError`` naming the file when the config came from one, else ``ValueError``."""
    if source is not None:
        return CnnlabFileError(f"{source}: {message}")
    return ValueError(message)


def make_config(**options) -> dict:
    """A complete, validated training configuration: ``DEFAULTS`` updated by ``options``.

    The optimizer may be given flat (``optimizer="adam", lr=1e-3, momentum=..., weight_decay=...``)
    or as a dict. ``None`` values take the default.
    """
    config = json.loads(json.dumps(DEFAULTS))
    opt = dict(config["optimizer"])
    flat = {k: options.pop(k) for k in ("lr", "momentum", "weight_decay") if k in options}
    flat = {k: v for k, v in flat.items() if v is not None}
    given_opt = options.pop("optimizer", None)
    if isinstance(given_opt, dict):
        opt.update({k: v for k, v in given_opt.items() if v is not None})
    elif given_opt is not None:
        opt["name"] = given_opt
    if isinstance(opt.get("name"), str) and opt["name"].lower() != "sgd" and "momentum" not in flat:
        opt["momentum"] = None
    opt.update(flat)
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(DEFAULTS)}")
    config.update({k: v for k, v in options.items() if v is not None})
    config["optimizer"] = opt
    return validate_config(config)


def validate_config(config, source=None) -> dict:
    """Check every field of a training configuration and fill derived values; return it.

    ``source`` (a file name) turns problems into ``CnnlabFileError`` naming that file.
    """
    if not isinstance(config, dict):
        raise _fail(source, f"expected a JSON object, found {type(config).__name__}")
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise _fail(source, f"missing key(s) {missing}")
    c = dict(config)
    for k, v in DEFAULTS.items():
        c.setdefault(k, json.loads(json.dumps(v)))
    if not isinstance(c["dataset"], str) or not c["dataset"]:
        raise _fail(source, f"dataset must be a name or a path, found {c['dataset']!r}")
    if c["data_dir"] is not None and not isinstance(c["data_dir"], str):
        raise _fail(source, f"data_dir must be a path or null, found {c['data_dir']!r}")
    if not isinstance(c["dataset_options"], dict):
        raise _fail(source, f"dataset_options must be an object, found {c['dataset_options']!r}")
    if not isinstance(c["model"], str) or not c["model"]:
        raise _fail(source, f"model must be a zoo name or an architecture .json path, found {c['model']!r}")
    for key in ("epochs", "batch_size"):
        if not is_int(c[key]) or c[key] < 1:
            raise _fail(source, f"{key} must be a positive integer, found {c[key]!r}")
    if not is_int(c["seed"]) or c["seed"] < 0:
        raise _fail(source, f"seed must be a non-negative integer, found {c['seed']!r}")
    for key in ("early_stopping", "snapshot_filters", "limit", "workers"):
        if c[key] is not None and (not is_int(c[key]) or c[key] < 1):
            raise _fail(source, f"{key} must be a positive integer or null, found {c[key]!r}")
    if c["val_split"] is None:
        c["val_split"] = 0.1 if c["early_stopping"] else 0.0
    if not is_number(c["val_split"]) or not 0 <= c["val_split"] < 1:
        raise _fail(source, f"val_split must be a fraction in [0, 1), found {c['val_split']!r}")
    if c["early_stopping"] and not c["val_split"]:
        raise _fail(source, "early stopping watches the validation accuracy: it needs val_split > 0 "
                            "(e.g. --val-split 0.1)")
    if c["loss"] not in losses_mod.LOSSES:
        raise _fail(source, f"loss must be one of {sorted(losses_mod.LOSSES)}, found {c['loss']!r}")
    if not is_number(c["label_smoothing"]) or not 0 <= c["label_smoothing"] < 1:
        raise _fail(source, f"label_smoothing must be in [0, 1), found {c['label_smoothing']!r}")
    if c["label_smoothing"] and c["loss"] != "softmax":
        raise _fail(source, "label smoothing applies to the softmax loss only")
    if c["schedule"] not in optim.SCHEDULES:
        raise _fail(source, f"schedule must be one of {sorted(optim.SCHEDULES)}, found {c['schedule']!r}")
    if not isinstance(c["augment"], str):
        raise _fail(source, f"augment must be a spec string, found {c['augment']!r}")
    try:
        c["augment"] = Augmenter.from_spec(c["augment"]).to_spec()
    except (TypeError, ValueError) as e:
        raise _fail(source, f"augment: {e}") from None
    opt = c["optimizer"]
    if not isinstance(opt, dict) or "name" not in opt:
        raise _fail(source, f"optimizer must be an object with a name, found {opt!r}")
    opt = c["optimizer"] = dict(opt)
    name = str(opt["name"]).lower()
    if name not in optim.OPTIMIZERS:
        raise _fail(source, f"optimizer must be one of {sorted(optim.OPTIMIZERS)}, found {opt['name']!r}")
    opt["name"] = name
    if opt.get("lr") is None:
        opt["lr"] = DEFAULT_LR[name]
    if not is_number(opt["lr"]) or opt["lr"] <= 0:
        raise _fail(source, f"the learning rate must be a positive number, found {opt['lr']!r}")
    opt.setdefault("weight_decay", 0.0)
    if opt["weight_decay"] is None:
        opt["weight_decay"] = 0.0
    if not is_number(opt["weight_decay"]) or opt["weight_decay"] < 0:
        raise _fail(source, f"weight_decay must be >= 0, found {opt['weight_decay']!r}")
    if name == "sgd":
        if opt.get("momentum") is None:
            opt["momentum"] = DEFAULTS["optimizer"]["momentum"]
        if not is_number(opt["momentum"]) or not 0 <= opt["momentum"] < 1:
            raise _fail(source, f"momentum must be in [0, 1), found {opt['momentum']!r}")
    elif opt.get("momentum") is not None:
        raise _fail(source, f"momentum applies to sgd only; {name} keeps its own moment estimates")
    else:
        opt["momentum"] = None
    return c


def make_optimizer(config) -> optim.Optimizer:
    opt = config["optimizer"]
    kw = {"lr": float(opt["lr"]), "weight_decay": float(opt["weight_decay"]), "schedule": config["schedule"]}
    if opt["name"] == "sgd":
        kw["momentum"] = float(opt["momentum"])
    return optim.OPTIMIZERS[opt["name"]](**kw)


def make_loss(config):
    if config["loss"] == "softmax":
        return losses_mod.SoftmaxCrossEntropy(label_smoothing=float(config["label_smoothing"]))
    return losses_mod.LOSSES[config["loss"]]()
