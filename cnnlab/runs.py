"""Run directories: everything one training run leaves on disk, and resuming it.

``run_training(config, out_dir)`` trains a model and keeps a run directory up
to date after every epoch::

    RUN_DIR/
      config.json              the training configuration (dataset, model, optimizer, schedule, workers, ...)
      architecture.json        the model's layers (``Sequential.get_config()``)
      model.safetensors        the model to use: the best by validation accuracy when a validation
                               set is held out, else the latest (``cnnlab.load(RUN_DIR)`` reads it)
      last.safetensors         the model after the latest completed epoch
      checkpoint.safetensors   latest weights (``model/...``) and optimizer state (``optimizer/...``)
      state.json               epoch and step completed, the model's random generator state, best
                               metric and epoch, the data split seed, the cnnlab version, the status
      history.json / .csv      per-epoch metrics; history.png plots them
      filters.safetensors      first convolution's kernel every N steps (``--snapshot-filters N``),
                               tensors ``step_0000000`` (step 0: before training)
      evaluation.json          test accuracy, per-class accuracy and confusion matrix;
      confusion_matrix.png     the confusion matrix as a picture

Every file is written atomically (``cnnlab._io.atomic_write``): a crash or
Ctrl-C leaves each file either old or new, never half-written. The checkpoint
is written at the end of every epoch (and once before the first), so a run
stopped by Ctrl-C or by a diverging loss keeps the state after its last
completed epoch, and ``run_training(config, out_dir, resume=True)`` continues
from there with weights bit-identical to an uninterrupted run: the model's
weights and buffers, the optimizer's state, the model's random generator (it
shuffles, augments and drops out), the epoch and step counters and the history
are all restored. The validation split comes from its own generator, seeded
from the configuration's seed, so it is the same on resume.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import signal
import sys
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np

from . import losses as losses_mod
from . import models as zoo
from . import distributed, optim
from ._io import CnnlabFileError, atomic_write, read_json, read_safetensors, write_json
from .augment import Augmenter
from .layers import Conv2D
from .model import FORMAT_KEY, Sequential, load
from .training import Callback, StopTraining, Trainer, TrainingDiverged

CONFIG_FILE = "config.json"
ARCHITECTURE_FILE = "architecture.json"
MODEL_FILE = "model.safetensors"
LAST_FILE = "last.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
STATE_FILE = "state.json"
HISTORY_JSON, HISTORY_CSV, HISTORY_PNG = "history.json", "history.csv", "history.png"
FILTERS_FILE = "filters.safetensors"
EVALUATION_FILE, CONFUSION_PNG = "evaluation.json", "confusion_matrix.png"

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "images_per_sec", "seconds"]
CHECKPOINT_KEY = "cnnlab_checkpoint"

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
REQUIRED_STATE_KEYS = ["epoch", "step", "rng_state", "best_metric", "best_epoch", "split_seed"]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the run directory keeps its last end-of-epoch checkpoint.

    ``run_dir``, ``epoch`` (epochs completed and saved) and ``epochs`` (planned) say how to resume.
    """

    def __init__(self, run_dir, epoch, epochs):
        self.run_dir, self.epoch, self.epochs = Path(run_dir), int(epoch), int(epochs)
        super().__init__(f"training interrupted; {self.run_dir} keeps the checkpoint of epoch {self.epoch}")

    @property
    def resume_command(self) -> str:
        return f"cnnlab train --resume {self.run_dir} --epochs {self.epochs}"


def cnnlab_version() -> str:
    import cnnlab
    return getattr(cnnlab, "__version__", "unknown")


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------
def _fail(source, message):
    """``CnnlabFileError`` naming the file when the config came from one, else ``ValueError``."""
    if source is not None:
        return CnnlabFileError(f"{source}: {message}")
    return ValueError(message)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and math.isfinite(v)


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
        if not _is_int(c[key]) or c[key] < 1:
            raise _fail(source, f"{key} must be a positive integer, found {c[key]!r}")
    if not _is_int(c["seed"]) or c["seed"] < 0:
        raise _fail(source, f"seed must be a non-negative integer, found {c['seed']!r}")
    for key in ("early_stopping", "snapshot_filters", "limit", "workers"):
        if c[key] is not None and (not _is_int(c[key]) or c[key] < 1):
            raise _fail(source, f"{key} must be a positive integer or null, found {c[key]!r}")
    if c["val_split"] is None:
        c["val_split"] = 0.1 if c["early_stopping"] else 0.0
    if not _is_number(c["val_split"]) or not 0 <= c["val_split"] < 1:
        raise _fail(source, f"val_split must be a fraction in [0, 1), found {c['val_split']!r}")
    if c["early_stopping"] and not c["val_split"]:
        raise _fail(source, "early stopping watches the validation accuracy: it needs val_split > 0 "
                            "(e.g. --val-split 0.1)")
    if c["loss"] not in losses_mod.LOSSES:
        raise _fail(source, f"loss must be one of {sorted(losses_mod.LOSSES)}, found {c['loss']!r}")
    if not _is_number(c["label_smoothing"]) or not 0 <= c["label_smoothing"] < 1:
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
    if not _is_number(opt["lr"]) or opt["lr"] <= 0:
        raise _fail(source, f"the learning rate must be a positive number, found {opt['lr']!r}")
    opt.setdefault("weight_decay", 0.0)
    if opt["weight_decay"] is None:
        opt["weight_decay"] = 0.0
    if not _is_number(opt["weight_decay"]) or opt["weight_decay"] < 0:
        raise _fail(source, f"weight_decay must be >= 0, found {opt['weight_decay']!r}")
    if name == "sgd":
        if opt.get("momentum") is None:
            opt["momentum"] = DEFAULTS["optimizer"]["momentum"]
        if not _is_number(opt["momentum"]) or not 0 <= opt["momentum"] < 1:
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


def build_model(spec, input_shape, num_classes, seed=0, loss="softmax") -> Sequential:
    """A model from a zoo name or an architecture ``.json`` file, for the given data.

    A JSON architecture without ``input_shape`` is built for ``input_shape``; its seed is replaced
    by ``seed``. The model must take ``input_shape`` and output ``num_classes`` scores.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if str(spec).lower().endswith(".json") or Path(str(spec)).is_file():
        path = Path(spec)
        arch = read_json(path, "architecture file")
        if not isinstance(arch, dict):
            raise CnnlabFileError(f"architecture file {path}: expected a JSON object with a \"layers\" list")
        arch = dict(arch)
        if arch.get("input_shape") is None:
            arch["input_shape"] = list(input_shape)
        arch["seed"] = int(seed)
        arch.pop("loss", None)
        model = Sequential.from_config(arch, source=f"architecture file {path}")
        where = f"the architecture in {path}"
    else:
        try:
            model = zoo.get(spec)(input_shape=input_shape, num_classes=num_classes, seed=int(seed))
        except ValueError as e:
            if "unknown model" in str(e):
                raise
            raise ValueError(f"model {spec!r} cannot be built for inputs {input_shape} and {num_classes} "
                             f"classes: {e}") from None
        where = f"model {spec!r}"
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


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def load_data(config, data=None):
    """``(x_train, y_train), (x_test, y_test), info`` for the config (``data`` if given)."""
    if data is None:
        from .datasets import load_dataset
        data = load_dataset(config["dataset"], data_dir=config["data_dir"], **config["dataset_options"])
    (x, y), (xt, yt), info = data
    info = dict(info)
    info.setdefault("name", config["dataset"])
    info.setdefault("input_shape", tuple(x.shape[1:]))
    if not info.get("class_names"):
        info["class_names"] = [str(i) for i in range(int(max(y.max(), yt.max() if len(yt) else 0)) + 1)]
    return (x, y), (xt, yt), info


def split_seed_for(seed: int) -> int:
    """The seed of the validation split: derived from the run's seed, independent of the model's generator."""
    return int(np.random.SeedSequence([int(seed), 0x5B117]).generate_state(1)[0])


def split_train_val(x, y, val_split, split_seed):
    """Hold out ``val_split`` of (x, y) after a shuffle seeded by ``split_seed``."""
    if not val_split:
        return (x, y), None
    n = len(x)
    n_val = max(1, int(round(n * val_split)))
    if n_val >= n:
        raise ValueError(f"a validation split of {val_split} leaves no training images out of {n}")
    order = np.random.default_rng(split_seed).permutation(n)
    tr, va = np.sort(order[n_val:]), np.sort(order[:n_val])
    return (x[tr], y[tr]), (x[va], y[va])


def _labels_crc(y) -> int:
    return zlib.crc32(np.ascontiguousarray(y, dtype=np.int64).tobytes())


# ---------------------------------------------------------------------------
# Reading a run directory
# ---------------------------------------------------------------------------
def read_config(run_dir) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    return validate_config(read_json(path, "run configuration"), source=f"run configuration {path}")


def read_architecture(run_dir) -> Sequential:
    path = Path(run_dir) / ARCHITECTURE_FILE
    arch = read_json(path, "architecture file")
    model = Sequential.from_config(arch, source=f"architecture file {path}")
    if not model.built:
        raise CnnlabFileError(f"architecture file {path} has no input_shape")
    return model


def read_state(run_dir) -> dict:
    path = Path(run_dir) / STATE_FILE
    state = read_json(path, "run state")
    if not isinstance(state, dict):
        raise CnnlabFileError(f"run state {path}: expected a JSON object, found {type(state).__name__}")
    missing = [k for k in REQUIRED_STATE_KEYS if k not in state]
    if missing:
        raise CnnlabFileError(f"run state {path}: missing key(s) {missing}")
    for k in ("epoch", "step", "split_seed"):
        if not _is_int(state[k]) or state[k] < 0:
            raise CnnlabFileError(f"run state {path}: {k} must be a non-negative integer, found {state[k]!r}")
    rng = state["rng_state"]
    if not isinstance(rng, dict) or "bit_generator" not in rng or "state" not in rng:
        raise CnnlabFileError(f"run state {path}: rng_state is not a random generator state: {rng!r}")
    if state["best_epoch"] is not None and not _is_int(state["best_epoch"]):
        raise CnnlabFileError(f"run state {path}: best_epoch must be an integer or null, found {state['best_epoch']!r}")
    return state


def read_checkpoint(run_dir):
    """``(model_tensors, optimizer_tensors, meta)`` from ``checkpoint.safetensors``."""
    path = Path(run_dir) / CHECKPOINT_FILE
    tensors, meta = read_safetensors(path, "checkpoint")
    try:
        info = json.loads(meta[CHECKPOINT_KEY])
        epoch, step = int(info["epoch"]), int(info["step"])
    except (KeyError, ValueError, TypeError) as e:
        raise CnnlabFileError(f"checkpoint {path} has no valid cnnlab checkpoint record in its metadata "
                              f"({type(e).__name__}: {e})") from None
    model_t = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    opt_t = {k[len("optimizer/"):]: v for k, v in tensors.items() if k.startswith("optimizer/")}
    other = sorted(set(tensors) - {f"model/{k}" for k in model_t} - {f"optimizer/{k}" for k in opt_t})
    if other or not model_t or "__steps__" not in opt_t:
        raise CnnlabFileError(f"checkpoint {path} does not hold model/... and optimizer/... tensors as cnnlab "
                              f"writes them (unexpected: {other[:5] or 'none'})")
    return model_t, opt_t, {"epoch": epoch, "step": step, "path": path}


def read_history(run_dir, epochs: int) -> dict:
    """The Trainer history of the first ``epochs`` epochs from ``history.json``."""
    path = Path(run_dir) / HISTORY_JSON
    if epochs == 0 and not path.exists():
        return {}
    hist = read_json(path, "history")
    if not isinstance(hist, dict) or any(not isinstance(hist.get(k), list) for k in ("epoch", "loss", "accuracy")):
        raise CnnlabFileError(f"history {path}: expected an object of per-epoch lists (epoch, loss, accuracy, ...)")
    out = {}
    for k, values in hist.items():
        if not isinstance(values, list):
            raise CnnlabFileError(f"history {path}: {k!r} is not a list")
        if len(values) < epochs:
            raise CnnlabFileError(f"history {path}: {k!r} has {len(values)} entries, the checkpoint is at epoch "
                                  f"{epochs}")
        values = values[:epochs]
        if all(v is None for v in values) and k.startswith("val_"):
            continue
        out[k] = values
    return out


def _check_optimizer_state(opt_t, model, path):
    params = {name: p for name, p, _ in model.parameters()}
    for key, arr in opt_t.items():
        if key == "__steps__":
            if arr.shape != (1,) or not np.issubdtype(arr.dtype, np.integer):
                raise CnnlabFileError(f"checkpoint {path}: optimizer/__steps__ must be one integer, found {arr.dtype} "
                                      f"{arr.shape}")
            continue
        name, _, slot = key.rpartition("/")
        if name not in params:
            raise CnnlabFileError(f"checkpoint {path}: optimizer state for {name!r}, which the model does not have")
        if arr.shape != params[name].shape:
            raise CnnlabFileError(f"checkpoint {path}: optimizer state {key!r} has shape {arr.shape}, the parameter "
                                  f"has {params[name].shape}")
        if not np.isfinite(arr).all():
            raise CnnlabFileError(f"checkpoint {path}: optimizer state {key!r} contains NaN or infinite values")


def find_run_dir(path) -> Path | None:
    """The run directory of a model path: the path itself or the folder of its model file (if it holds a config)."""
    p = Path(path)
    d = p if p.is_dir() else p.parent
    return d if (d / CONFIG_FILE).is_file() else None


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------
@contextlib.contextmanager
def defer_interrupt():
    """Hold Ctrl-C back while a group of files is written, so they stay consistent with each other;
    the interrupt is raised as soon as the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def write_checkpoint(run_dir, model, optimizer, epoch, step):
    from safetensors.numpy import save_file
    tensors = {f"model/{k}": np.ascontiguousarray(v) for k, v in model.state_dict().items()}
    tensors.update({f"optimizer/{k}": np.ascontiguousarray(v) for k, v in optimizer.state_dict().items()})
    meta = {"format": "np", CHECKPOINT_KEY: json.dumps({"epoch": int(epoch), "step": int(step)}),
            FORMAT_KEY: json.dumps(model.get_config())}
    return atomic_write(Path(run_dir) / CHECKPOINT_FILE, lambda tmp: save_file(tensors, tmp, metadata=meta))


def history_table(history) -> dict:
    """Trainer history as ``{column: list}`` over ``HISTORY_COLUMNS`` (``None`` where not recorded)."""
    n = len(history.get("epoch", []))
    return {k: [_plain(v) for v in history.get(k, [None] * n)] for k in HISTORY_COLUMNS}


def _plain(v):
    if v is None:
        return None
    if isinstance(v, (np.integer, int)):
        return int(v)
    return float(v)


def write_history(run_dir, history, plot=True):
    table = history_table(history)
    write_json(Path(run_dir) / HISTORY_JSON, table)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HISTORY_COLUMNS)
    for i in range(len(table["epoch"])):
        w.writerow(["" if table[k][i] is None else repr(table[k][i]) for k in HISTORY_COLUMNS])
    atomic_write(Path(run_dir) / HISTORY_CSV, buf.getvalue())
    if plot and table["epoch"]:
        plot_history(table, Path(run_dir) / HISTORY_PNG)


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path):
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_history(table, path):
    """Loss and accuracy per epoch, training against validation."""
    fig = _figure((10, 4))
    epochs = table["epoch"]
    for ax, key, label in ((fig.add_subplot(1, 2, 1), "loss", "loss"),
                           (fig.add_subplot(1, 2, 2), "accuracy", "accuracy")):
        ax.plot(epochs, table[key], "o-", label="training")
        val = table[f"val_{key}"]
        if any(v is not None for v in val):
            ax.plot(epochs, [np.nan if v is None else v for v in val], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
        if len(epochs) < 15:
            ax.set_xticks(epochs)
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_confusion(matrix, class_names, path, title="confusion matrix"):
    """Counts of (true class, predicted class) as an image with labelled axes and a colour bar."""
    matrix = np.asarray(matrix)
    k = len(class_names)
    size = max(5.0, 0.5 * k + 3)
    fig = _figure((size + 1, size))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="images")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if k <= 20:
        top = matrix.max() if matrix.size else 0
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                            color="white" if matrix[i, j] > top / 2 else "black")
    fig.tight_layout()
    return _save_figure(fig, path)


def evaluate_model(model, x, y, class_names, batch_size=256, comm=None) -> dict:
    """Accuracy, loss, per-class accuracy and the confusion matrix (rows: true class, columns: predicted).
    With an MPI communicator ``comm``, its ranks share the images."""
    scores = model.logits(x, batch_size, comm=comm)
    y = model.check_labels(y, len(scores))
    k = model.num_classes
    if len(class_names) != k:
        raise ValueError(f"the model has {k} classes but {len(class_names)} class names were given")
    pred = scores.argmax(axis=1)
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (y, pred), 1)
    counts = matrix.sum(axis=1)
    per_class = [float(matrix[i, i] / counts[i]) if counts[i] else None for i in range(k)]
    return {"accuracy": float((pred == y).mean()) if len(y) else 0.0,
            "loss": float(model.loss.forward(scores, y)) if len(y) else None,
            "num_images": int(len(y)), "class_names": list(class_names),
            "per_class_accuracy": per_class, "class_counts": counts.tolist(),
            "confusion_matrix": matrix.tolist()}


def write_evaluation(out_dir, evaluation) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    j = write_json(out_dir / EVALUATION_FILE, evaluation)
    title = f"confusion matrix: {evaluation.get('dataset', '')} {evaluation.get('split', '')}, accuracy " \
            f"{100 * evaluation['accuracy']:.2f}%".replace("  ", " ")
    p = plot_confusion(evaluation["confusion_matrix"], evaluation["class_names"], out_dir / CONFUSION_PNG, title)
    return j, p


# ---------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------
def first_conv(model):
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            return layer
    return None


class FilterSnapshots(Callback):
    """Snapshots of the first ``Conv2D`` kernel every ``every`` optimizer steps and at every epoch end,
    kept in ``filters.safetensors`` as ``step_0000000`` (before training), ``step_0000050``, ...

    The metadata records the layer, ``every``, and the steps at which epochs ended (``epoch_end_steps``).
    """

    def __init__(self, run_dir, every: int, resume: bool = False):
        if not _is_int(every) or every < 1:
            raise ValueError(f"snapshot interval must be a positive integer, received {every!r}")
        self.path = Path(run_dir) / FILTERS_FILE
        self.every, self.resume = int(every), resume
        self.snapshots: dict[str, np.ndarray] = {}
        self.epoch_ends: list[int] = []
        self.layer = None

    @staticmethod
    def key(step: int) -> str:
        return f"step_{int(step):07d}"

    def on_train_begin(self, trainer):
        self.layer = first_conv(trainer.model)
        if self.layer is None:
            raise ValueError("filter snapshots need a Conv2D layer; the model has none")
        if self.resume and self.path.exists():
            self._load(trainer.step)
        if trainer.step == 0 or not self.snapshots:
            self.take(trainer.step)
            if trainer.step == 0:
                self.write()

    def _load(self, upto):
        snaps, meta = read_safetensors(self.path, "filter snapshots")
        try:
            ends = json.loads(meta.get("epoch_end_steps", "[]"))
        except json.JSONDecodeError as e:
            raise CnnlabFileError(f"filter snapshots {self.path}: epoch_end_steps in the metadata is not JSON: {e}") from None
        shape = self.layer.params["kernel"].shape
        for k, v in snaps.items():
            if not k.startswith("step_") or not k[5:].isdigit() or v.shape != shape:
                raise CnnlabFileError(f"filter snapshots {self.path}: unexpected tensor {k!r} {v.shape} "
                                      f"(expected step_NNNNNNN of shape {shape})")
        self.snapshots = {k: v for k, v in sorted(snaps.items()) if int(k[5:]) <= upto}
        self.epoch_ends = [int(s) for s in ends if int(s) <= upto]

    def take(self, step):
        self.snapshots[self.key(step)] = self.layer.params["kernel"].copy()

    def on_batch_end(self, trainer, step, loss):
        if step % self.every == 0:
            self.take(step)

    def on_epoch_end(self, trainer, epoch, logs):
        if self.key(trainer.step) not in self.snapshots:
            self.take(trainer.step)
        if trainer.step not in self.epoch_ends:
            self.epoch_ends.append(trainer.step)
        self.write()

    def write(self):
        from safetensors.numpy import save_file
        tensors = {k: np.ascontiguousarray(v) for k, v in sorted(self.snapshots.items())}
        meta = {"format": "np", "layer": self.layer.name, "every": str(self.every),
                "kernel_shape": json.dumps(list(self.layer.params["kernel"].shape)),
                "epoch_end_steps": json.dumps(self.epoch_ends)}
        atomic_write(self.path, lambda tmp: save_file(tensors, tmp, metadata=meta))


class RunRecorder(Callback):
    """Keeps the run directory current: at the start (epoch 0) and after every epoch it writes the
    checkpoint, ``last.safetensors``, the best model, the history files and ``state.json``.

    The best model is the one with the highest validation accuracy (ties: lower validation loss);
    without validation data ``model.safetensors`` is the latest model.
    """

    def __init__(self, run_dir, split_seed, state=None, plot=True, write=True):
        self.run_dir = Path(run_dir)
        self.write = write              # False on the ranks of an MPI job other than 0: they track, rank 0 writes
        self.split_seed = int(split_seed)
        self.plot = plot
        state = state or {}
        self.best_metric = state.get("best_metric")
        self.best_val_loss = state.get("best_val_loss")
        self.best_epoch = state.get("best_epoch")
        self.resumed = bool(state)
        # the state on disk (what a resume would start from); how training ended is added to it
        self.state = {k: v for k, v in state.items() if k not in ("test", "stop_reason", "error")} or None
        self.status = "running"

    def _is_best(self, logs):
        if "val_accuracy" not in logs:
            return True
        acc, loss = float(logs["val_accuracy"]), float(logs["val_loss"])
        if self.best_metric is None or acc > self.best_metric:
            return True
        return acc == self.best_metric and (self.best_val_loss is None or loss < self.best_val_loss)

    def make_state(self, trainer):
        model = trainer.model
        return {"epoch": int(trainer.epoch), "step": int(trainer.step),
                "rng_state": model.rng.bit_generator.state,
                "best_metric": self.best_metric, "best_metric_name": "val_accuracy",
                "best_val_loss": self.best_val_loss, "best_epoch": self.best_epoch,
                "split_seed": self.split_seed, "status": self.status,
                "cnnlab_version": cnnlab_version()}

    def save(self, trainer, logs=None):
        model = trainer.model
        initial = logs is None and not self.resumed
        best = logs is not None and self._is_best(logs)
        if best:
            if "val_accuracy" in logs:
                self.best_metric, self.best_val_loss = float(logs["val_accuracy"]), float(logs["val_loss"])
            self.best_epoch = int(trainer.epoch)
        state = self.make_state(trainer)
        if not self.write:                  # another rank of an MPI job: rank 0 writes
            self.state = state
            return
        with defer_interrupt():
            # What a resume reads comes first, back to back: checkpoint, history, state. A process killed
            # outright (SIGKILL, MPI cleaning up after a lost rank) can only break their agreement in the
            # milliseconds between them; the models and the plot follow.
            write_checkpoint(self.run_dir, model, trainer.optimizer, trainer.epoch, trainer.step)
            write_history(self.run_dir, trainer.history, plot=False)
            write_json(self.run_dir / STATE_FILE, state)
            self.state = state                                   # the state on disk
            model.save(self.run_dir / LAST_FILE)
            if initial or best:
                model.save(self.run_dir / MODEL_FILE)            # initial: the weights before training
            table = history_table(trainer.history)
            if self.plot and table["epoch"]:
                plot_history(table, self.run_dir / HISTORY_PNG)

    def on_train_begin(self, trainer):
        if not self.resumed:
            self.save(trainer)

    def on_epoch_end(self, trainer, epoch, logs):
        self.save(trainer, logs)

    def set_status(self, status, **extra):
        """Record how training ended in ``state.json`` (the saved state itself is unchanged)."""
        self.status = status
        if self.state is not None:
            self.state = {**self.state, "status": status, **extra}
            if self.write:
                write_json(self.run_dir / STATE_FILE, self.state)


class EarlyStop(Callback):
    """Stop when the validation accuracy has not improved for ``patience`` epochs (resumable:
    it reads the best epoch from the ``RunRecorder``)."""

    def __init__(self, recorder, patience):
        self.recorder, self.patience = recorder, int(patience)

    def on_epoch_end(self, trainer, epoch, logs):
        best = self.recorder.best_epoch
        if best is not None and trainer.epoch - best >= self.patience:
            raise StopTraining(f"validation accuracy did not improve for {self.patience} epochs (best "
                               f"{self.recorder.best_metric:.4f} at epoch {best})")


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
RUN_MARKERS = (STATE_FILE, CHECKPOINT_FILE, MODEL_FILE)


def _print(verbose, *args):
    if verbose:
        print(*args, file=sys.stderr, flush=True)


def run_training(config, out_dir, resume=False, verbose=1, callbacks=(), data=None, plot=True) -> dict:
    """Train as ``config`` says, keeping ``out_dir`` a complete run directory; return a summary.

    ``config``: from ``make_config`` (or ``read_config`` of a run). ``resume=True`` continues the run in
    ``out_dir`` from its checkpoint up to ``config["epochs"]`` epochs in total. ``callbacks`` are extra
    ``Callback`` objects (they run after the checkpoint is written). ``data``: an already loaded
    ``((x, y), (x_test, y_test), info)`` instead of loading ``config["dataset"]``.

    Raises ``TrainingInterrupted`` on Ctrl-C and ``TrainingDiverged`` on a non-finite loss; in both
    cases the run directory keeps the checkpoint of the last completed epoch.
    """
    config = validate_config(config)
    out_dir = Path(out_dir)
    state = None
    comm = distributed.world()                   # under mpiexec: the ranks share each batch, rank 0 writes and prints
    root = comm is None or comm.is_root
    verbose = verbose if root else 0
    if resume:
        if not out_dir.is_dir():
            raise CnnlabFileError(f"run directory {out_dir} does not exist")
        old = read_config(out_dir)
        state = read_state(out_dir)
        model_t, opt_t, ckpt = read_checkpoint(out_dir)
        if ckpt["epoch"] != state["epoch"] or ckpt["step"] != state["step"]:
            raise CnnlabFileError(
                f"{out_dir / STATE_FILE} (epoch {state['epoch']}, step {state['step']}) does not match "
                f"{ckpt['path']} (epoch {ckpt['epoch']}, step {ckpt['step']}): the run was stopped while saving")
        if state["epoch"] >= config["epochs"]:
            raise ValueError(f"{out_dir} has already completed {state['epoch']} epoch(s); to train on, ask for "
                             f"more in total (e.g. --epochs {state['epoch'] + max(1, old['epochs'])})")
        split_seed = state["split_seed"]
    else:
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"output path {out_dir} exists and is not a directory")
        taken = [m for m in RUN_MARKERS if (out_dir / m).exists()]
        if taken:
            raise ValueError(f"{out_dir} already holds a run ({', '.join(taken)}); continue it with "
                             f"--resume {out_dir} or choose another output directory")
        split_seed = split_seed_for(config["seed"])

    (x, y), (xt, yt), info = distributed.agreed_call(comm, load_data, config, data)
    if config["limit"]:
        x, y = x[:config["limit"]], y[:config["limit"]]
    (x, y), val = split_train_val(x, y, config["val_split"], split_seed)
    class_names = list(info["class_names"])
    data_info = {"name": info["name"], "class_names": class_names, "input_shape": list(info["input_shape"]),
                 "train_size": int(len(x)), "val_size": int(len(val[0])) if val else 0,
                 "test_size": int(len(xt)), "train_labels_crc32": _labels_crc(y)}

    if resume:
        saved = old.get("data") or {}
        for k in ("train_size", "val_size", "train_labels_crc32", "class_names"):
            if k in saved and saved[k] != data_info[k]:
                raise ValueError(f"the training data differ from those {out_dir} was trained on ({k}: "
                                 f"{saved[k]!r} then, {data_info[k]!r} now); resume needs the same data")
        model = read_architecture(out_dir)
        model.load_state_dict(model_t, source=f"checkpoint {ckpt['path']}")
        _check_optimizer_state(opt_t, model, ckpt["path"])
        try:
            model.rng.bit_generator.state = state["rng_state"]
        except (TypeError, ValueError, KeyError) as e:
            raise CnnlabFileError(f"run state {out_dir / STATE_FILE}: rng_state cannot be restored: {e}") from None
        history = read_history(out_dir, state["epoch"])
    else:
        model = build_model(config["model"], info["input_shape"], len(class_names), seed=config["seed"],
                            loss=make_loss(config))
        history = {}
    if tuple(model.input_shape) != tuple(x.shape[1:]):
        raise ValueError(f"the model takes inputs {tuple(model.input_shape)}, the dataset's images are "
                         f"{tuple(x.shape[1:])}")
    if config["snapshot_filters"] and first_conv(model) is None:
        raise ValueError("--snapshot-filters needs a model with a Conv2D layer; this one has none")
    optimizer = make_optimizer(config)
    if resume:
        optimizer.load_state_dict(opt_t)

    config = {**config, "data": data_info, "cnnlab_version": cnnlab_version()}
    if config["workers"] is None:
        # recorded, so that a resume on another machine shards batches the same way (BatchNorm statistics
        # are per shard, and summed shard gradients round differently from one whole-batch gradient)
        config["workers"] = distributed.default_shards()
    if not resume and Path(config["model"]).suffix.lower() == ".json":
        config["model"] = str(Path(config["model"]).resolve())
    if not resume and config["dataset"].lower().replace("_", "-") not in _dataset_names() \
            and Path(config["dataset"]).exists():
        config["dataset"] = str(Path(config["dataset"]).resolve())
    if root:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / CONFIG_FILE, config)
        if not resume:
            write_json(out_dir / ARCHITECTURE_FILE, model.get_config())

    augment = None if config["augment"] == "none" else Augmenter.from_spec(config["augment"])
    recorder = RunRecorder(out_dir, split_seed, state=state, plot=plot, write=root)
    cbs = []
    if config["snapshot_filters"] and root:
        cbs.append(FilterSnapshots(out_dir, config["snapshot_filters"], resume=resume))
    cbs += [recorder, *callbacks]
    if config["early_stopping"]:
        cbs.append(EarlyStop(recorder, config["early_stopping"]))
    trainer = Trainer(model, optimizer=optimizer, batch_size=config["batch_size"], verbose=verbose,
                      augment=augment, callbacks=cbs, workers=config["workers"])
    if resume:
        trainer.epoch, trainer.step, trainer.history = state["epoch"], state["step"], history
        _print(verbose, f"resuming {out_dir} after epoch {state['epoch']} (step {state['step']}), "
                        f"up to {config['epochs']} epochs")
    else:
        _print(verbose, f"training {model.name} ({model.num_params:,} parameters) on {info['name']}: "
                        f"{len(x):,} training images, {data_info['val_size']:,} validation, {len(xt):,} test; "
                        f"{config['epochs']} epochs; run directory {out_dir}")

    try:
        # overflow shows up as a non-finite loss or gradient, which stops training with a clear message
        with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"(overflow|invalid value) encountered", RuntimeWarning)
            trainer.fit(x, y, epochs=config["epochs"], validation_data=val)
    except KeyboardInterrupt:
        saved_epoch = recorder.state["epoch"] if recorder.state else 0
        recorder.set_status("interrupted")
        raise TrainingInterrupted(out_dir, saved_epoch, config["epochs"]) from None
    except (TrainingDiverged, ValueError) as e:
        if isinstance(e, ValueError) and all(np.isfinite(g).all() for _, _, g in model.parameters()):
            raise
        # a non-finite loss (TrainingDiverged) or gradient (the optimizer's ValueError): no weight was updated
        saved_epoch = recorder.state["epoch"] if recorder.state else 0
        recorder.set_status("diverged", error=str(e))
        raise TrainingDiverged(f"{e}; {out_dir} keeps the checkpoint of epoch {saved_epoch}") from None

    if comm is not None:
        comm.barrier()                                   # rank 0 has written the best model
    best = load(out_dir / MODEL_FILE)
    evaluation = evaluate_model(best, xt, yt, class_names, comm=comm) if len(xt) else None
    if evaluation is not None:
        evaluation.update(dataset=info["name"], split="test", model=str(out_dir / MODEL_FILE),
                          epoch=recorder.best_epoch)
        if root:
            write_evaluation(out_dir, evaluation)
    status = "stopped early" if trainer.stop_reason else "completed"
    test = {"accuracy": evaluation["accuracy"], "loss": evaluation["loss"]} if evaluation else None
    recorder.set_status(status, test=test, stop_reason=trainer.stop_reason)
    return {"run_dir": out_dir, "epochs": trainer.epoch, "step": trainer.step, "status": status,
            "stop_reason": trainer.stop_reason, "best_epoch": recorder.best_epoch,
            "best_val_accuracy": recorder.best_metric, "test": test, "evaluation": evaluation,
            "history": history_table(trainer.history), "model": best}


def _dataset_names():
    try:
        from .datasets import DATASETS
        return set(DATASETS)
    except ImportError:
        return set()


def resume_training(run_dir, epochs=None, verbose=1, data_dir=None, callbacks=(), data=None, plot=True) -> dict:
    """Continue the run in ``run_dir`` to ``epochs`` epochs in total (default: the planned number)."""
    config = read_config(run_dir)
    if epochs is not None:
        config["epochs"] = epochs
    if data_dir is not None:
        config["data_dir"] = str(data_dir)
    return run_training(config, run_dir, resume=True, verbose=verbose, callbacks=callbacks, data=data, plot=plot)
