"""The run recorder: the callback that keeps a run directory current while training goes on."""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

from ..callbacks import ModelCheckpoint
from . import files


@contextlib.contextmanager
def defer_interrupt():
    """Hold Ctrl-C back while a group of files is written, so they stay consistent with each other;
    the interrupt is raised as soon as the block ends. Where Ctrl-C already only asks training to stop
    (``cnnlab.runs.stop.StopSignals``), nothing needs holding back."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
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


class RunRecorder(ModelCheckpoint):
    """Keeps the run directory current: at the start (epoch 0) and after every epoch it writes, as one group
    that Ctrl-C does not split, the checkpoint, ``last.safetensors``, the best model, the filter snapshots
    (when a ``FilterSnapshots`` callback is given), the history files and ``state.json``.

    The best model (``model.safetensors``) is the one with the highest validation accuracy, ties going to
    the lower validation loss (a ``ModelCheckpoint`` watching ``val_accuracy`` with ``val_loss`` as
    tiebreak); without validation data it is the latest model. ``state``: the run state read from
    ``state.json`` when resuming.

    ``save_progress`` writes the same checkpoint and state in the middle of an epoch (with where the epoch
    stands); ``every`` (``{"seconds": t}`` or ``{"steps": k}``) does so on that schedule after a batch.
    """

    def __init__(self, run_dir, split_seed, state=None, snapshots=None, plot=True, write=True, every=None):
        self.run_dir = Path(run_dir)
        self.write = write              # False on the ranks of an MPI job other than 0: they track, rank 0 writes
        super().__init__(self.run_dir / files.MODEL_FILE, monitor="val_accuracy", mode="max", tiebreak="val_loss")
        self.split_seed, self.snapshots, self.plot = int(split_seed), snapshots, plot
        state = state or {}
        self.load_state_dict(monitor_state(state))
        self.resumed = bool(state)
        # the state on disk (what a resume would start from); how training ended is added to it
        self.state = {k: v for k, v in state.items() if k not in ("test", "stop_reason", "error")} or None
        self.status = "running"
        self.every = every or {}
        self._last_save = (time.monotonic(), state.get("step", 0))   # when and at which step it was last written

    def make_state(self, trainer):
        return {"epoch": int(trainer.epoch), "step": int(trainer.step),
                "rng_state": trainer.model.rng.bit_generator.state,
                "best_metric": self.best, "best_metric_name": self.monitor,
                "best_val_loss": self.best_tiebreak, "best_epoch": self.best_epoch,
                "split_seed": self.split_seed, "status": self.status,
                "epoch_progress": None if trainer.progress is None else
                {k: trainer.progress[k] for k in ("epoch_step", "loss_sum", "correct", "seconds")},
                "cnnlab_version": files.cnnlab_version()}

    def save(self, trainer, logs=None):
        model = trainer.model
        best = logs is None or self.track(trainer, logs)         # before training: the initial weights
        state = self.make_state(trainer)
        if not self.write:
            self.state = state
            return
        with defer_interrupt():
            # What a resume reads comes first, back to back: checkpoint, history, state. A process killed
            # outright (SIGKILL, or MPI ending the job after losing a rank) can only break their agreement
            # in the milliseconds between them; the models, the snapshots and the plot follow.
            files.write_checkpoint(self.run_dir, model, trainer.optimizer, trainer.epoch, trainer.step)
            files.write_history(self.run_dir, trainer.history, plot=False)
            files.write_state(self.run_dir, state)
            self.state = state                                   # the state on disk
            self._last_save = (time.monotonic(), trainer.step)
            model.save(self.run_dir / files.LAST_FILE)
            if best:
                model.save(self.path)
            if self.snapshots is not None:
                files.write_filter_snapshots(self.run_dir, self.snapshots)
            if self.plot and getattr(trainer.stop, "received", None) is None:
                # drawn again at the next epoch's end; a stop signal is not kept waiting for matplotlib
                files.write_history_plot(self.run_dir, trainer.history)

    def save_progress(self, trainer):
        """The checkpoint and state in the middle of an epoch: where it stands (``trainer.progress``),
        the data order, and the filter snapshots so far; the history and the models wait for its end."""
        state = self.make_state(trainer)
        if self.write:
            files.write_checkpoint(self.run_dir, trainer.model, trainer.optimizer, trainer.epoch, trainer.step,
                                   order=None if trainer.progress is None else trainer.progress["order"])
            if self.snapshots is not None:
                files.write_filter_snapshots(self.run_dir, self.snapshots)
            files.write_state(self.run_dir, state)              # last: it names the new generation
        self.state = state
        self._last_save = (time.monotonic(), trainer.step)

    def on_batch_end(self, trainer, step, loss):
        since, at = self._last_save
        if ("steps" in self.every and step - at >= self.every["steps"]) or \
                ("seconds" in self.every and time.monotonic() - since >= self.every["seconds"]):
            self.save_progress(trainer)

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
                files.write_state(self.run_dir, self.state)


INTERVAL_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_interval(value) -> dict:
    """``--checkpoint-every``: ``{"steps": k}`` for an integer (``2000``), ``{"seconds": t}`` for a duration
    (``90s``, ``30m``, ``2h``, ``1.5h``), ``{}`` for ``None``."""
    if value is None:
        return {}
    text = str(value).strip().lower()
    try:
        if text[-1:] in INTERVAL_UNITS:
            amount, key = float(text[:-1]) * INTERVAL_UNITS[text[-1]], "seconds"
        else:
            amount, key = int(text), "steps"
    except ValueError:
        amount, key = 0, "steps"
    if not amount > 0 or amount == float("inf"):
        raise ValueError(f"checkpoint interval must be a number of steps (2000) or a duration (90s, 30m, 2h), "
                         f"received {value!r}")
    return {key: amount}


def monitor_state(state) -> dict:
    """The best value, tiebreak and epoch of a run state, as ``MonitorCallback.load_state_dict`` takes them."""
    return {"best": state.get("best_metric"), "best_tiebreak": state.get("best_val_loss"),
            "best_epoch": state.get("best_epoch")}
