"""The default subject: the model ``serve`` and ``explain`` show when no model is given, and its recipe.

The subject must answer "why does the first layer find edges?" truthfully, so
its recipe was chosen by experiment (benchmarks/README.md, "The default
subject"): with the default initializer, on at least 4 of 5 seeds, at least 6
of its first layer's 8 filters are oriented by :func:`cnnlab.analysis.filters.oriented`
(selectivity above 95% of random filters of the same shape and above the
filter's own value at initialisation).

* :func:`default_subject_recipe` is the recipe as a training configuration
  (``cnnlab.runs.make_config`` options): MNIST when it is at hand, else the
  built-in shapes.
* :func:`train_default_subject` trains it into a run directory through the
  one training path (``cnnlab.runs.run_training``), recording the first
  layer's filters from step 0, so its initial kernel is known.
* :func:`default_subject_run` is the subject ``cnnlab serve`` and ``cnnlab explain`` show without a model: trained once
  into ``RUNS/<dataset>-default-subject`` with progress shown, then reused.
* :func:`oriented_filters` counts the oriented filters of a run or model.
"""
from __future__ import annotations

from pathlib import Path

from ..callbacks import first_conv
from . import filters

SUBJECT_MODEL = "tiny_cnn"   # conv 8@5x5 -> ReLU -> max-pool -> conv 16@3x3 -> ReLU -> max-pool -> dense


def default_dataset(data_dir=None) -> str:
    """``"mnist"`` when its files are in ``data_dir``, ``$CNNLAB_DATA`` or the cache (never downloaded), else ``"shapes"``."""
    from .._io import CnnlabFileError
    from ..datasets import DatasetNotFoundError, load_mnist
    try:
        load_mnist(data_dir, download=False)
        return "mnist"
    except (DatasetNotFoundError, CnnlabFileError, OSError):
        return "shapes"


def default_subject_recipe(dataset="shapes", data_dir=None, seed=0) -> dict:
    """The default subject's training configuration for ``dataset`` (``"mnist"`` or ``"shapes"``).

    Plain SGD with momentum keeps every update a sum of the data's patches (see
    :mod:`cnnlab.analysis.identities`); weight decay lets the random start fade where the data
    pulls no way, so the learned part shows.
    """
    key = str(dataset).lower()
    recipe = {"model": SUBJECT_MODEL, "epochs": 10, "batch_size": 64, "optimizer": "sgd", "lr": 0.05,
              "momentum": 0.9, "weight_decay": 1e-2, "schedule": "constant", "augment": "none", "seed": int(seed),
              "workers": 1, "snapshot_filters": 50}
    if key == "mnist":
        return {**recipe, "dataset": "mnist", "data_dir": data_dir, "limit": 5000}
    return {**recipe, "dataset": "shapes", "dataset_options": {"n_train": 5000, "n_test": 1000}}


def train_default_subject(run_dir, dataset="shapes", data_dir=None, seed=0, recipe=None, verbose=0, data=None) -> dict:
    """Train the recipe (default :func:`default_subject_recipe`) into ``run_dir``; the run's summary."""
    from ..runs import make_config, run_training
    options = dict(recipe or default_subject_recipe(dataset, data_dir, seed))
    return run_training(make_config(**options), Path(run_dir), verbose=verbose, plot=False, data=data)


def default_subject_run(runs_root, data_dir=None, log=print, dataset=None) -> Path:
    """The default subject's run directory under ``runs_root``, trained now (progress on the terminal) unless done.

    ``cnnlab serve`` and ``cnnlab explain`` without a model both show it. ``dataset``: ``"mnist"`` or
    ``"shapes"`` (default: :func:`default_dataset`). ``ValueError`` when an unfinished run is in the way (it is
    never overwritten).
    """
    from ..runs import read_state
    from ..runs.files import STATE_FILE
    dataset = default_dataset(data_dir) if dataset is None else str(dataset).lower()
    if dataset not in ("mnist", "shapes"):
        raise ValueError(f"the default subject is trained on mnist or shapes, not {dataset!r}")
    run_dir = Path(runs_root) / f"{dataset}-default-subject"
    if (run_dir / STATE_FILE).is_file() and read_state(run_dir).get("status") == "completed":
        return run_dir
    if run_dir.exists():
        raise ValueError(f"{run_dir} holds an unfinished run; continue it with cnnlab train --resume {run_dir}, "
                         f"delete it, or name a model")
    recipe = default_subject_recipe(dataset, data_dir)
    log(f"training the default subject ({recipe['model']} on {dataset}, {recipe['epochs']} epochs) into {run_dir}; "
        f"reused next time")
    train_default_subject(run_dir, recipe=recipe, verbose=1)
    return run_dir


def initial_kernel(run_dir):
    """The first convolution's kernel at step 0 of a run (``None`` without filter snapshots from the start)."""
    from ..runs import files
    if not files.has_filter_snapshots(run_dir):
        return None
    return files.read_filter_snapshots(run_dir).get(0)


def oriented_filters(model, initial=None) -> dict:
    """:func:`cnnlab.analysis.filters.oriented` on the model's first convolution."""
    layer = first_conv(model)
    if layer is None:
        raise ValueError(f"the model has no Conv2D layer; its layers are {[l.name for l in model.layers]}")
    return filters.oriented(layer.params["kernel"], initial)
