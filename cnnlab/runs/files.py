"""The files of a run directory: their names, and every reader and writer of them.

This module is the one place that knows how a run directory is laid out::

    RUN_DIR/
      config.json              the training configuration (dataset, model, optimizer, schedule, workers, ...)
      architecture.json        the model's layers (``Sequential.get_config()``)
      model.safetensors        the model to use: the best by validation accuracy when a validation
                               set is held out, else the latest (``cnnlab.load(RUN_DIR)`` reads it)
      last.safetensors         the model after the latest completed epoch
      checkpoint.safetensors   latest weights (``model/...``) and optimizer state (``optimizer/...``);
                               saved in the middle of an epoch, also its data order (``progress/order``)
      checkpoint-previous.safetensors   the checkpoint before it (see "Generations" below)
      state.json               epoch and step completed, the model's random generator state, best
                               metric and epoch, the data split seed, the cnnlab version, the status;
                               saved in the middle of an epoch, where it stands (``epoch_progress``)
      .lock                    while a process writes the run: who (``cnnlab.runs.lock``)
      history.json / .csv      per-epoch metrics; history.png plots them
      filters.safetensors      first convolution's kernel every N steps (``--snapshot-filters N``),
                               tensors ``step_0000000`` (step 0: before training)
      evaluation.json          test accuracy, per-class accuracy and confusion matrix;
      confusion_matrix.png     the confusion matrix as a picture

Every file is written atomically (``cnnlab._io.atomic_write``): a crash or Ctrl-C leaves each file either
old or new, never half-written. Every reader checks what it reads; a missing or damaged file raises
``CnnlabFileError`` naming the file and the problem. Readers of the files a run may lack
(``read_history``, ``read_state``, ``read_evaluation``, ``read_config``) take ``missing_ok=True`` to
return ``None`` for a missing file (a damaged one still raises).

Generations: a save writes, in this order, the checkpoint, the history, then ``state.json``; each is
flushed to disk with its directory before the next begins. The checkpoint and the state name their
generation by the same ``(epoch, step)``. Before a new checkpoint replaces the old one, the old one is
kept as ``checkpoint-previous.safetensors`` (a hard link: no copy is made), so a crash of the process or
the machine between the checkpoint and ``state.json`` leaves the previous generation whole: the state
still names it, and ``find_checkpoint`` returns the file that matches the state.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from .._io import CnnlabFileError, WriteFailed, atomic_write, read_json, read_safetensors, write_json
from .._version import __version__
from ..checks import is_int, is_number
from ..model import Sequential
from ..model_file import MODEL_FILE, write_model_file
from .config import validate_config

CONFIG_FILE = "config.json"
ARCHITECTURE_FILE = "architecture.json"
LAST_FILE = "last.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
PREVIOUS_CHECKPOINT_FILE = "checkpoint-previous.safetensors"
STATE_FILE = "state.json"
HISTORY_JSON, HISTORY_CSV, HISTORY_PNG = "history.json", "history.csv", "history.png"
FILTERS_FILE = "filters.safetensors"
EVALUATION_FILE, CONFUSION_PNG = "evaluation.json", "confusion_matrix.png"

RUN_MARKERS = (STATE_FILE, CHECKPOINT_FILE, MODEL_FILE)        # any of them: the folder holds a run
HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "images_per_sec", "seconds"]
CHECKPOINT_KEY = "cnnlab_checkpoint"
ORDER_KEY = "progress/order"
REQUIRED_STATE_KEYS = ["epoch", "step", "rng_state", "best_metric", "best_epoch", "split_seed"]


def cnnlab_version() -> str:
    return __version__


def _missing(path, missing_ok):
    return missing_ok and not Path(path).exists()


def _read_object(run_dir, name, what, missing_ok):
    """``(JSON object, path)`` of ``run_dir/name``; ``(None, path)`` when it is missing and ``missing_ok``."""
    path = Path(run_dir) / name
    if _missing(path, missing_ok):
        return None, path
    obj = read_json(path, what)
    if not isinstance(obj, dict):
        raise CnnlabFileError(f"{what} {path}: expected a JSON object, found {type(obj).__name__}")
    return obj, path


# ---------------------------------------------------------------------------
# Where
# ---------------------------------------------------------------------------
def find_run_dir(path) -> Path | None:
    """The run directory of a model path: the path itself or the folder of its model file (if it holds a config)."""
    p = Path(path)
    d = p if p.is_dir() else p.parent
    return d if (d / CONFIG_FILE).is_file() else None


def existing_run_files(run_dir) -> list[str]:
    """The files in ``run_dir`` that show a run is there (empty when it holds none)."""
    return [m for m in RUN_MARKERS if (Path(run_dir) / m).exists()]


def require_no_run(out_dir, advice="choose another output directory") -> Path:
    """``out_dir`` as a ``Path`` when a new run may start there: it does not exist, or is a directory holding no
    run (``existing_run_files``); else ``ValueError`` saying what is there, then ``advice``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory")
    taken = existing_run_files(out)
    if taken:
        raise ValueError(f"{out} already holds a run ({', '.join(taken)}); {advice}")
    return out


def _slug(text) -> str:
    """A name part safe in a file name: the stem of an architecture ``.json``, other characters as ``-``."""
    p = Path(str(text))
    name = p.stem if p.suffix.lower() == ".json" else p.name or str(text)
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".-") or "run"


def new_run_dir(root, *parts, taken=()) -> Path:
    """A run directory that does not exist yet: ``ROOT/PART-PART-YYYYmmdd-HHMMSS`` (the parts, such as the
    dataset and the model, made safe by ``_slug``), then ``-2``, ``-3``, ... while that name exists or is
    in ``taken`` (names already promised)."""
    base = "-".join([*map(_slug, parts), time.strftime("%Y%m%d-%H%M%S")])
    for i in range(1, 1000):
        out = Path(root) / (base if i == 1 else f"{base}-{i}")
        if not out.exists() and out.name not in taken:
            return out
    raise ValueError(f"{Path(root) / base} and its numbered variants exist already; choose --out")


# ---------------------------------------------------------------------------
# Configuration and architecture
# ---------------------------------------------------------------------------
def read_config(run_dir, missing_ok=False) -> dict | None:
    path = Path(run_dir) / CONFIG_FILE
    if _missing(path, missing_ok):
        return None
    return validate_config(read_json(path, "run configuration"), source=f"run configuration {path}")


def write_config(run_dir, config) -> Path:
    return write_json(Path(run_dir) / CONFIG_FILE, config)


def read_architecture(run_dir) -> Sequential:
    path = Path(run_dir) / ARCHITECTURE_FILE
    arch = read_json(path, "architecture file")
    model = Sequential.from_config(arch, source=f"architecture file {path}")
    if not model.built:
        raise CnnlabFileError(f"architecture file {path} has no input_shape")
    return model


def write_architecture(run_dir, model) -> Path:
    return write_json(Path(run_dir) / ARCHITECTURE_FILE, model.get_config())


# ---------------------------------------------------------------------------
# State and checkpoint
# ---------------------------------------------------------------------------
def read_state(run_dir, missing_ok=False) -> dict | None:
    state, path = _read_object(run_dir, STATE_FILE, "run state", missing_ok)
    if state is None:
        return None
    missing = [k for k in REQUIRED_STATE_KEYS if k not in state]
    if missing:
        raise CnnlabFileError(f"run state {path}: missing key(s) {missing}")
    for k in ("epoch", "step", "split_seed"):
        if not is_int(state[k]) or state[k] < 0:
            raise CnnlabFileError(f"run state {path}: {k} must be a non-negative integer, found {state[k]!r}")
    rng = state["rng_state"]
    if not isinstance(rng, dict) or "bit_generator" not in rng or "state" not in rng:
        raise CnnlabFileError(f"run state {path}: rng_state is not a random generator state: {rng!r}")
    if state["best_epoch"] is not None and not is_int(state["best_epoch"]):
        raise CnnlabFileError(f"run state {path}: best_epoch must be an integer or null, found {state['best_epoch']!r}")
    for k in ("best_metric", "best_val_loss"):
        if state.get(k) is not None and not is_number(state[k]):
            raise CnnlabFileError(f"run state {path}: {k} must be a number or null, found {state[k]!r}")
    if not isinstance(state.get("status", ""), str):
        raise CnnlabFileError(f"run state {path}: status must be a string, found {state['status']!r}")
    progress = state.get("epoch_progress")
    if progress is not None and (not isinstance(progress, dict)
                                 or any(not is_number(progress.get(k)) or progress[k] < 0
                                        for k in ("epoch_step", "loss_sum", "correct", "seconds"))
                                 or not is_int(progress["epoch_step"]) or not is_int(progress["correct"])):
        raise CnnlabFileError(f"run state {path}: epoch_progress must hold epoch_step, loss_sum, correct and "
                              f"seconds (non-negative numbers), found {progress!r}")
    return state


def write_state(run_dir, state) -> Path:
    return write_json(Path(run_dir) / STATE_FILE, state)


def read_checkpoint(run_dir, name=CHECKPOINT_FILE):
    """``(model_tensors, optimizer_tensors, meta)`` from ``checkpoint.safetensors`` (or ``name``); ``meta``:
    ``epoch``, ``step``, ``path`` and ``order`` (the data order of an epoch saved part way, else ``None``)."""
    path = Path(run_dir) / name
    tensors, meta = read_safetensors(path, "checkpoint")
    order = tensors.pop(ORDER_KEY, None)
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
    if order is not None and (order.ndim != 1 or not np.issubdtype(order.dtype, np.integer)):
        raise CnnlabFileError(f"checkpoint {path}: {ORDER_KEY} must be a list of indices, found {order.dtype} "
                              f"{order.shape}")
    return model_t, opt_t, {"epoch": epoch, "step": step, "path": path, "order": order}


def find_checkpoint(run_dir, state):
    """``read_checkpoint`` of the checkpoint of ``state``'s generation: ``checkpoint.safetensors``, or the
    previous one when a save was cut off between the checkpoint and ``state.json``."""
    found = read_checkpoint(run_dir)
    generation = (state["epoch"], state["step"])
    if (found[2]["epoch"], found[2]["step"]) != generation and (Path(run_dir) / PREVIOUS_CHECKPOINT_FILE).is_file():
        previous = read_checkpoint(run_dir, PREVIOUS_CHECKPOINT_FILE)
        if (previous[2]["epoch"], previous[2]["step"]) == generation:
            return previous
    return found


def check_optimizer_state(opt_t, model, path):
    """Optimizer tensors of a checkpoint must belong to ``model``'s parameters, with their shapes, finite."""
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


def write_checkpoint(run_dir, model, optimizer, epoch, step, order=None) -> Path:
    """The model file format (``cnnlab.model_file``) with the model's tensors under ``model/...``, the
    optimizer's under ``optimizer/...`` and (``order``, saved in the middle of an epoch) the epoch's data
    order; the checkpoint it replaces becomes ``checkpoint-previous.safetensors``."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"optimizer/{k}": v for k, v in optimizer.state_dict().items()})
    if order is not None:
        tensors[ORDER_KEY] = np.asarray(order, dtype=np.int64)
    meta = {CHECKPOINT_KEY: json.dumps({"epoch": int(epoch), "step": int(step)})}
    path = Path(run_dir) / CHECKPOINT_FILE
    _keep_previous(path, Path(run_dir) / PREVIOUS_CHECKPOINT_FILE)
    return write_model_file(path, model, tensors, meta)


def _keep_previous(path, previous):
    """Make ``previous`` another name of ``path``'s file (atomically); nothing where links are not supported."""
    if not path.is_file():
        return
    tmp = previous.with_name(f".{previous.name}.tmp")
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.link(path, tmp)
        os.replace(tmp, previous)
    except OSError as e:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise WriteFailed(e, previous) from None


# ---------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------
def read_history(run_dir, epochs: int | None = None, missing_ok=False) -> dict | None:
    """Per-epoch lists from ``history.json``: all of them, or (for a resume) the Trainer history of the
    first ``epochs`` epochs (validation columns that hold nothing are left out)."""
    if epochs == 0 and not (Path(run_dir) / HISTORY_JSON).exists():
        return {}
    hist, path = _read_object(run_dir, HISTORY_JSON, "history", missing_ok)
    if hist is None:
        return None
    if any(not isinstance(hist.get(k), list) for k in ("epoch", "loss", "accuracy")):
        raise CnnlabFileError(f"history {path}: expected an object of per-epoch lists (epoch, loss, accuracy, ...)")
    n = len(hist["epoch"]) if epochs is None else epochs
    out = {}
    for k, values in hist.items():
        if not isinstance(values, list):
            raise CnnlabFileError(f"history {path}: {k!r} is not a list")
        if len(values) < n:
            raise CnnlabFileError(f"history {path}: {k!r} has {len(values)} entries, "
                                  + (f"'epoch' has {n}" if epochs is None else f"the checkpoint is at epoch {n}"))
        bad = next((v for v in values if v is not None and not (is_number(v) or isinstance(v, float))), None)
        if bad is not None:
            raise CnnlabFileError(f"history {path}: {k!r} holds {bad!r}, not a number")
        values = values[:n]
        if epochs is not None and k.startswith("val_") and all(v is None for v in values):
            continue
        out[k] = values
    return out


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
    """``history.json``, ``history.csv`` and (``plot``) ``history.png`` from a Trainer history."""
    table = history_table(history)
    write_json(Path(run_dir) / HISTORY_JSON, table)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HISTORY_COLUMNS)
    for i in range(len(table["epoch"])):
        w.writerow(["" if table[k][i] is None else repr(table[k][i]) for k in HISTORY_COLUMNS])
    atomic_write(Path(run_dir) / HISTORY_CSV, buf.getvalue())
    if plot:
        write_history_plot(run_dir, history)


def write_history_plot(run_dir, history):
    """``history.png`` from a Trainer history (nothing before the first epoch)."""
    from ..plots import plot_history, save_figure
    table = history_table(history)
    if table["epoch"]:
        save_figure(plot_history(table), Path(run_dir) / HISTORY_PNG)


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------
def read_evaluation(run_dir, missing_ok=False) -> dict | None:
    """``evaluation.json``: accuracy, a square confusion matrix of counts, and (optional) class names."""
    ev, path = _read_object(run_dir, EVALUATION_FILE, "evaluation", missing_ok)
    if ev is None:
        return None
    m = ev.get("confusion_matrix")
    if not isinstance(m, list) or not m or any(not isinstance(r, list) or len(r) != len(m) for r in m) \
            or any(not is_int(v) or v < 0 for r in m for v in r):
        raise CnnlabFileError(f"evaluation {path}: confusion_matrix must be a square list of lists of counts")
    if not is_number(ev.get("accuracy")) or not 0 <= ev["accuracy"] <= 1:
        raise CnnlabFileError(f"evaluation {path}: accuracy must be a number in [0, 1], found {ev.get('accuracy')!r}")
    names = ev.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != len(m)):
        raise CnnlabFileError(f"evaluation {path}: class_names must list {len(m)} names, found {names!r}")
    return ev


def write_evaluation(out_dir, evaluation) -> tuple[Path, Path]:
    """``evaluation.json`` and ``confusion_matrix.png`` in ``out_dir``."""
    from ..plots import plot_confusion, save_figure
    out_dir = Path(out_dir)
    j = write_json(out_dir / EVALUATION_FILE, evaluation)
    title = f"confusion matrix: {evaluation.get('dataset', '')} {evaluation.get('split', '')}, accuracy " \
            f"{100 * evaluation['accuracy']:.2f}%".replace("  ", " ")
    save_figure(plot_confusion(evaluation["confusion_matrix"], evaluation["class_names"], title),
                out_dir / CONFUSION_PNG)
    return j, out_dir / CONFUSION_PNG


# ---------------------------------------------------------------------------
# Filter snapshots
# ---------------------------------------------------------------------------
def _filters_path(path) -> Path:
    path = Path(path)
    return path / FILTERS_FILE if path.is_dir() else path


def read_filter_file(path) -> tuple[dict, list]:
    """``({step: kernel}, epoch_end_steps)`` from ``filters.safetensors`` (``path``: the file or its run directory).

    Tensors are named ``step_0000000``, ``step_0000100``, ...; all are kernels (kh, kw, C, F) of one shape.
    """
    path = _filters_path(path)
    tensors, meta = read_safetensors(path, "filter snapshot file")
    out = {}
    for name, t in tensors.items():
        if not name.startswith("step_") or not name[5:].isdigit():
            raise CnnlabFileError(f"{path}: unexpected tensor {name!r}; snapshots are named step_0000000, step_0000100, ...")
        if t.ndim != 4:
            raise CnnlabFileError(f"{path}: snapshot {name!r} has shape {t.shape}, expected a kernel (kh, kw, C, F)")
        out[int(name[5:])] = np.asarray(t)
    if not out:
        raise CnnlabFileError(f"{path} holds no filter snapshots")
    shapes = {t.shape for t in out.values()}
    if len(shapes) > 1:
        raise CnnlabFileError(f"{path}: snapshots have different shapes {sorted(shapes)}")
    try:
        ends = json.loads(meta.get("epoch_end_steps", "[]"))
    except json.JSONDecodeError as e:
        raise CnnlabFileError(f"{path}: epoch_end_steps in the metadata is not JSON: {e}") from None
    if not isinstance(ends, list) or any(not is_int(s) or s < 0 for s in ends):
        raise CnnlabFileError(f"{path}: epoch_end_steps in the metadata must be a list of steps, found {ends!r}")
    return dict(sorted(out.items())), ends


def read_filter_snapshots(path) -> dict:
    """``{step: kernel}`` sorted by step, from ``filters.safetensors`` (the file or its run directory)."""
    return read_filter_file(path)[0]


def has_filter_snapshots(run_dir) -> bool:
    return (Path(run_dir) / FILTERS_FILE).is_file()


def write_filter_snapshots(run_dir, snapshots) -> Path:
    """``filters.safetensors`` from a ``cnnlab.callbacks.FilterSnapshots``: its kernels, the layer's name, the
    interval and the steps at which epochs ended (in the metadata)."""
    from safetensors.numpy import save_file
    tensors = {f"step_{int(s):07d}": np.ascontiguousarray(k) for s, k in sorted(snapshots.snapshots.items())}
    meta = {"format": "np", "layer": snapshots.layer.name, "every": str(snapshots.every),
            "kernel_shape": json.dumps(list(snapshots.layer.params["kernel"].shape)),
            "epoch_end_steps": json.dumps(snapshots.epoch_ends)}
    return atomic_write(Path(run_dir) / FILTERS_FILE, lambda tmp: save_file(tensors, tmp, metadata=meta))
