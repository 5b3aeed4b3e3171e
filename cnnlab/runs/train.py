"""Training a run and resuming it: ``run_training`` and ``resume_training``.

``run_training(config, out_dir)`` trains a model and keeps ``out_dir`` a complete run directory
(``cnnlab.runs.files`` lists its files) after every epoch. The checkpoint is written at the end of every
epoch (and once before the first), so a run stopped by Ctrl-C or by a diverging loss keeps the state after
its last completed epoch, and ``run_training(config, out_dir, resume=True)`` continues from there with
weights bit-identical to an uninterrupted run: the model's weights and buffers, the optimizer's state, the
model's random generator (it shuffles, augments and drops out), the epoch and step counters, the history,
the best model and early stopping's best value, and the filter snapshots are all restored. The validation
split comes from its own generator, seeded from the configuration's seed, so it is the same on resume.

On a cluster: SIGTERM, SIGUSR1 and Ctrl-C (``cnnlab.runs.stop``) end training after the current batch with
a checkpoint of the epoch part way (``RunRecorder.save_progress``; ``checkpoint_every`` writes the same on a
schedule), from which a resume continues bit-identically; one process at a time writes a run directory
(``cnnlab.runs.lock``); a failed write (a full disk) stops training with the previous checkpoint whole.
"""
from __future__ import annotations

import sys
import warnings
import zlib
from pathlib import Path

import numpy as np

from .. import distributed
from .._io import CnnlabFileError, WriteFailed
from ..augment import Augmenter
from ..analysis.layers import first_conv
from ..callbacks import EarlyStopping, FilterSnapshots
from ..datasets.split import split_seed_for, split_train_val
from ..model import load
from ..training import Trainer, TrainingDiverged, TrainingStopped
from . import files
from .config import make_loss, make_optimizer, validate_config
from .evaluation import evaluate_model
from .lock import RunLock
from .recorder import RunRecorder, monitor_state, parse_interval
from .resolve import build_model
from .stop import StopSignals, signal_name


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped early; the run directory keeps a checkpoint to resume from.

    ``run_dir``, ``epoch`` (epochs completed and saved) and ``epochs`` (planned) say how to resume. Stopped
    by a signal (``signum``) after a batch, the checkpoint is of that batch: ``epoch_step`` of ``steps``
    into epoch ``epoch + 1``; every rank of an MPI job stops there together (``agreed``). Otherwise
    (Ctrl-C twice, or ``KeyboardInterrupt`` raised by a callback) it is the last epoch's end.
    """

    def __init__(self, run_dir, epoch, epochs, signum=None, epoch_step=0, steps=0):
        self.run_dir, self.epoch, self.epochs = Path(run_dir), int(epoch), int(epochs)
        self.signum, self.epoch_step, self.steps = signum, int(epoch_step), int(steps)
        self.agreed = signum is not None
        super().__init__(self.message if self.agreed else
                         f"training interrupted; {self.run_dir} keeps the checkpoint of epoch {self.epoch}")

    @property
    def message(self) -> str:
        return (f"stopped by {signal_name(self.signum)} at epoch {self.epoch + 1}, step {self.epoch_step:,} of "
                f"{self.steps:,}; resume with: {self.resume_command}")

    @property
    def resume_command(self) -> str:
        return f"cnnlab train --resume {self.run_dir} --epochs {self.epochs}"


def load_data(config, data=None):
    """``(x_train, y_train), (x_test, y_test), info`` for the config (``data`` if given)."""
    if data is None:
        from ..datasets import load_dataset
        data = load_dataset(config["dataset"], data_dir=config["data_dir"], **config["dataset_options"])
    (x, y), (xt, yt), info = data
    info = dict(info)
    info.setdefault("name", config["dataset"])
    info.setdefault("input_shape", tuple(x.shape[1:]))
    if not info.get("class_names"):
        info["class_names"] = [str(i) for i in range(int(max(y.max(), yt.max() if len(yt) else 0)) + 1)]
    return (x, y), (xt, yt), info


def _labels_crc(y) -> int:
    return zlib.crc32(np.ascontiguousarray(y, dtype=np.int64).tobytes())


def _print(verbose, *args):
    if verbose:
        print(*args, file=sys.stderr, flush=True)


def run_training(config, out_dir, resume=False, verbose=1, callbacks=(), data=None, plot=True,
                 checkpoint_every=None) -> dict:
    """Train as ``config`` says, keeping ``out_dir`` a complete run directory; return a summary.

    ``config``: from ``make_config`` (or ``read_config`` of a run). ``resume=True`` continues the run in
    ``out_dir`` from its checkpoint up to ``config["epochs"]`` epochs in total. ``callbacks`` are extra
    ``Callback`` objects (they run after the checkpoint is written). ``data``: an already loaded
    ``((x, y), (x_test, y_test), info)`` instead of loading ``config["dataset"]``.

    ``checkpoint_every``: also write the checkpoint in the middle of epochs, every so many steps (an
    integer, or text such as ``"2000"``) or so long (``"30m"``, ``"90s"``, ``"2h"``).

    Raises ``TrainingInterrupted`` when stopped by SIGTERM, SIGUSR1 or Ctrl-C (the run directory keeps a
    checkpoint of the last complete batch) and ``TrainingDiverged`` on a non-finite loss (it keeps the
    checkpoint of the last completed epoch); ``RunLocked`` if another process writes ``out_dir``;
    ``WriteFailed`` if a file cannot be written (the message says which checkpoint is intact).
    """
    config = validate_config(config)
    every = parse_interval(checkpoint_every)
    out_dir = Path(out_dir)
    comm = distributed.world()                   # under mpiexec: the ranks share each batch, rank 0 writes and prints
    if resume and not out_dir.is_dir():
        raise CnnlabFileError(f"run directory {out_dir} does not exist")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output path {out_dir} exists and is not a directory")
    lock = RunLock(out_dir) if comm is None or comm.is_root else None     # under MPI rank 0 holds it
    distributed.agreed_call(comm, lambda: lock and lock.acquire())
    try:
        return _train(config, out_dir, comm, resume, verbose, callbacks, data, plot, every, StopSignals())
    except WriteFailed as e:
        state = files.read_state(out_dir, missing_ok=True) if out_dir.is_dir() else None
        e.note = ("no checkpoint had been written yet" if state is None else
                  f"the last checkpoint (epoch {state['epoch']}"
                  + (f", step {state['epoch_progress']['epoch_step']:,} of epoch {state['epoch'] + 1}"
                     if state.get("epoch_progress") else "") + ") is intact")
        raise
    finally:
        if lock is not None:
            lock.release()


def _train(config, out_dir, comm, resume, verbose, callbacks, data, plot, every, signals) -> dict:
    root = comm is None or comm.is_root
    verbose = verbose if root else 0
    if resume:
        old, state, (model_t, opt_t, ckpt) = _open_run(out_dir, config)
        split_seed = state["split_seed"]
    else:
        files.require_no_run(out_dir, f"continue it with --resume {out_dir} or choose another output directory")
        state, split_seed = None, split_seed_for(config["seed"])

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
        model = files.read_architecture(out_dir)
        model.load_state_dict(model_t, source=f"checkpoint {ckpt['path']}")
        files.check_optimizer_state(opt_t, model, ckpt["path"])
        try:
            model.rng.bit_generator.state = state["rng_state"]
        except (TypeError, ValueError, KeyError) as e:
            raise CnnlabFileError(f"run state {out_dir / files.STATE_FILE}: rng_state cannot be restored: {e}") from None
        history = files.read_history(out_dir, state["epoch"])
    else:
        model = build_model(config["model"], info["input_shape"], len(class_names), seed=config["seed"],
                            loss=make_loss(config))
        history = {}
    if tuple(model.input_shape) != tuple(x.shape[1:]):
        raise ValueError(f"the model takes inputs {tuple(model.input_shape)}, the dataset's images are "
                         f"{tuple(x.shape[1:])}")
    if config["snapshot_filters"] and first_conv(model, required=False) is None:
        raise ValueError("--snapshot-filters needs a model with a Conv2D layer; this one has none")
    optimizer = make_optimizer(config)
    if resume:
        optimizer.load_state_dict(opt_t)

    config = {**config, "data": data_info, "cnnlab_version": files.cnnlab_version()}
    if config["workers"] is None:
        # recorded, so that a resume on another machine shards batches the same way (BatchNorm statistics
        # are per shard, and summed shard gradients round differently from one whole-batch gradient)
        config["workers"] = distributed.default_shards()       # under MPI: one shard per rank
    if not resume and Path(config["model"]).suffix.lower() == ".json":
        config["model"] = str(Path(config["model"]).resolve())
    if not resume and config["dataset"].lower().replace("_", "-") not in _dataset_names() \
            and Path(config["dataset"]).exists():
        config["dataset"] = str(Path(config["dataset"]).resolve())
    if root:
        out_dir.mkdir(parents=True, exist_ok=True)
        files.write_config(out_dir, config)
        if not resume:
            files.write_architecture(out_dir, model)

    augment = None if config["augment"] == "none" else Augmenter.from_spec(config["augment"])
    snapshots = _filter_snapshots(out_dir, model, config, state)
    recorder = RunRecorder(out_dir, split_seed, state=state, snapshots=snapshots, plot=plot, write=root, every=every)
    cbs = ([snapshots] if snapshots else []) + [recorder, *callbacks]
    if config["early_stopping"]:
        # watches what the recorder watches, and continues from the same saved best on resume
        stop = EarlyStopping(monitor=recorder.monitor, mode=recorder.mode, tiebreak=recorder.tiebreak,
                             patience=config["early_stopping"], restore_best=False)
        cbs.append(stop.load_state_dict(monitor_state(state or {})))
    trainer = Trainer(model, optimizer=optimizer, batch_size=config["batch_size"], verbose=verbose,
                      augment=augment, callbacks=cbs, workers=config["workers"], stop=signals)
    steps = -(-len(x) // config["batch_size"])
    if resume:
        trainer.epoch, trainer.step, trainer.history = state["epoch"], state["step"], history
        progress = state.get("epoch_progress")
        if progress is not None:                     # saved part way through an epoch: continue it
            order = ckpt["order"]
            if order is None or len(order) != len(x) or progress["epoch_step"] > steps:
                raise CnnlabFileError(f"checkpoint {ckpt['path']} does not hold the data order of the epoch "
                                      f"{out_dir / files.STATE_FILE} says is part way")
            trainer.progress = {**progress, "order": order}
            _print(verbose, f"resuming {out_dir} at epoch {state['epoch'] + 1}, step {progress['epoch_step']:,} "
                            f"of {steps:,} (step {state['step']:,} in all), up to {config['epochs']} epochs")
        else:
            _print(verbose, f"resuming {out_dir} after epoch {state['epoch']} (step {state['step']}), "
                            f"up to {config['epochs']} epochs")
    else:
        _print(verbose, f"training {model.name} ({model.num_params:,} parameters) on {info['name']}: "
                        f"{len(x):,} training images, {data_info['val_size']:,} validation, {len(xt):,} test; "
                        f"{config['epochs']} epochs; run directory {out_dir}")

    with signals:                                        # SIGTERM, SIGUSR1, Ctrl-C: stop after a batch
        try:
            # overflow shows up as a non-finite loss or gradient, which stops training with a clear message
            with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
                warnings.filterwarnings("ignore", r"(overflow|invalid value) encountered", RuntimeWarning)
                trainer.fit(x, y, epochs=config["epochs"], validation_data=val)
        except TrainingStopped as e:
            # every rank stops after the same batch; rank 0 writes the checkpoint of it
            recorder.status = "interrupted"
            recorder.save_progress(trainer)
            if comm is not None:
                comm.barrier()                               # no rank ends before rank 0 has written
            at = trainer.progress["epoch_step"] if trainer.progress else steps
            raise TrainingInterrupted(out_dir, trainer.epoch, config["epochs"], e.signum, at, steps) from None
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
    best = load(out_dir)                                # its model file: the best model
    evaluation = evaluate_model(best, xt, yt, class_names, comm=comm) if len(xt) else None
    if evaluation is not None:
        evaluation.update(dataset=info["name"], split="test", model=str(Path(out_dir) / files.MODEL_FILE),
                          epoch=recorder.best_epoch)
        if root:
            files.write_evaluation(out_dir, evaluation)
    status = "stopped early" if trainer.stop_reason else "completed"
    test = {"accuracy": evaluation["accuracy"], "loss": evaluation["loss"]} if evaluation else None
    recorder.set_status(status, test=test, stop_reason=trainer.stop_reason)
    return {"run_dir": out_dir, "epochs": trainer.epoch, "step": trainer.step, "status": status,
            "stop_reason": trainer.stop_reason, "best_epoch": recorder.best_epoch,
            "best_val_accuracy": recorder.best, "test": test, "evaluation": evaluation,
            "history": files.history_table(trainer.history), "model": best}


def _open_run(out_dir, config):
    """``(saved config, state, (model tensors, optimizer tensors, checkpoint info))`` of the run to resume,
    after checking that they belong together and that ``config`` asks for more epochs."""
    old = files.read_config(out_dir)
    state = files.read_state(out_dir)
    model_t, opt_t, ckpt = files.find_checkpoint(out_dir, state)
    if ckpt["epoch"] != state["epoch"] or ckpt["step"] != state["step"]:
        raise CnnlabFileError(
            f"{out_dir / files.STATE_FILE} (epoch {state['epoch']}, step {state['step']}) does not match "
            f"{ckpt['path']} (epoch {ckpt['epoch']}, step {ckpt['step']}): the run was stopped while saving")
    if state["epoch"] >= config["epochs"]:
        raise ValueError(f"{out_dir} has already completed {state['epoch']} epoch(s); to train on, ask for "
                         f"more in total (e.g. --epochs {state['epoch'] + max(1, old['epochs'])})")
    return old, state, (model_t, opt_t, ckpt)


def _filter_snapshots(out_dir, model, config, state):
    """The ``FilterSnapshots`` callback the config asks for (``None`` if none), continued from the run's file
    when resuming."""
    if not config["snapshot_filters"]:
        return None
    snapshots = FilterSnapshots(config["snapshot_filters"], layer=first_conv(model, required=False))
    if state is not None and files.has_filter_snapshots(out_dir):
        snaps, ends = files.read_filter_file(out_dir)
        shape, found = snapshots.layer.params["kernel"].shape, next(iter(snaps.values())).shape
        if found != shape:
            raise CnnlabFileError(f"filter snapshots {out_dir / files.FILTERS_FILE} hold kernels of shape {found}, "
                                  f"{snapshots.layer.name} has {shape}")
        snapshots.restore(snaps, ends, state["step"])
    return snapshots


def _dataset_names():
    try:
        from ..datasets import DATASETS
        return set(DATASETS)
    except ImportError:
        return set()


def resume_training(run_dir, epochs=None, verbose=1, data_dir=None, callbacks=(), data=None, plot=True,
                    checkpoint_every=None) -> dict:
    """Continue the run in ``run_dir`` to ``epochs`` epochs in total (default: the planned number)."""
    config = files.read_config(run_dir)
    if epochs is not None:
        config["epochs"] = epochs
    if data_dir is not None:
        config["data_dir"] = str(data_dir)
    return run_training(config, run_dir, resume=True, verbose=verbose, callbacks=callbacks, data=data, plot=plot,
                        checkpoint_every=checkpoint_every)
