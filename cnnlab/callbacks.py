"""Training callbacks: code the training loop calls at fixed points, in the manner of Keras's callbacks.

The ``Trainer`` (``cnnlab.training``) calls, on every callback in order:

* ``on_train_begin(trainer)`` before the first epoch (``trainer.epoch`` and ``trainer.step`` are where a
  resumed run starts);
* ``on_batch_end(trainer, step, loss)`` after every optimizer step (``step`` counts steps from 1);
* ``on_epoch_end(trainer, epoch, logs)`` after every epoch: ``epoch`` is the 0-based index of the epoch
  just finished (``trainer.epoch == epoch + 1``), ``logs`` its metrics (``loss``, ``accuracy``, ``val_loss``,
  ``val_accuracy``, ``lr``, ...);
* ``on_train_end(trainer)`` at the end, also after an error.

A callback ends training after the current epoch by raising :class:`StopTraining`.

Here: :class:`MonitorCallback`, the base of the callbacks that watch one logged value and remember its best
(:class:`EarlyStopping`, :class:`ModelCheckpoint`), and :class:`FilterSnapshots`. Epochs are counted as
``trainer.epoch`` counts them: ``best_epoch = 3`` is the third epoch. Run directories
(``cnnlab.runs``) save these callbacks' state so that a resumed run continues them exactly.
"""
from __future__ import annotations

import math

import numpy as np

from .analysis.layers import first_conv
from .checks import check_int


class StopTraining(Exception):
    """Raised by a callback to end training after the current epoch."""


class Callback:
    """Hooks into the training loop; override what you need."""

    def on_train_begin(self, trainer): ...
    def on_batch_end(self, trainer, step, loss): ...
    def on_epoch_end(self, trainer, epoch, logs): ...
    def on_train_end(self, trainer): ...


def _mode(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', received {mode!r}")
    if mode == "auto":
        return "max" if "acc" in str(monitor) else "min"
    return mode


def _better(value, best, mode) -> bool:
    return value > best if mode == "max" else value < best


class MonitorCallback(Callback):
    """Watches ``monitor`` in the epoch logs and remembers its best value and the epoch it was reached.

    Args:
        monitor: a key of the epoch logs (``"val_loss"``, ``"val_accuracy"``, ``"loss"``, ...).
        mode: ``"min"`` (lower is better), ``"max"``, or ``"auto"``: ``"max"`` when the name contains
            ``acc``, else ``"min"``.
        tiebreak: another logged value (its mode chosen as by ``"auto"``) that decides between epochs with
            equal ``monitor`` values; e.g. ``monitor="val_accuracy", tiebreak="val_loss"``: of two epochs with
            the same accuracy the one with the lower loss is better.

    ``best``, ``best_tiebreak`` and ``best_epoch`` are ``None`` until the first epoch. ``state_dict()`` and
    ``load_state_dict()`` carry them over a resume. A value that is NaN never counts as an improvement.
    """

    def __init__(self, monitor="val_loss", mode="auto", tiebreak=None):
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be the name of a logged value, received {monitor!r}")
        self.monitor, self.mode = monitor, _mode(monitor, mode)
        self.tiebreak = tiebreak
        self.tiebreak_mode = _mode(tiebreak, "auto") if tiebreak is not None else None
        self.best = self.best_tiebreak = self.best_epoch = None

    def _value(self, logs, key) -> float:
        if key not in logs:
            raise ValueError(f"{type(self).__name__}: {key!r} is not recorded; available: {sorted(logs)} "
                             f"(validation values need validation data)")
        return float(logs[key])

    def is_improvement(self, logs) -> bool:
        """Whether ``logs`` beat the best so far (the first finite value always does)."""
        value = self._value(logs, self.monitor)
        if math.isnan(value):
            return False
        if self.best is None or _better(value, self.best, self.mode):
            return True
        if value != self.best or self.tiebreak is None:
            return False
        tie = self._value(logs, self.tiebreak)
        return self.best_tiebreak is None or _better(tie, self.best_tiebreak, self.tiebreak_mode)

    def update(self, logs, epoch) -> bool:
        """Record ``logs`` of epoch ``epoch`` (1-based) as the best when they improve on it; return whether they did."""
        if not self.is_improvement(logs):
            return False
        self.best = self._value(logs, self.monitor)
        if self.tiebreak is not None:
            self.best_tiebreak = self._value(logs, self.tiebreak)
        self.best_epoch = int(epoch)
        return True

    def state_dict(self) -> dict:
        return {"monitor": self.monitor, "mode": self.mode, "best": self.best, "best_tiebreak": self.best_tiebreak,
                "best_epoch": self.best_epoch}

    def load_state_dict(self, state):
        """Continue from ``state_dict()`` (the monitored name and mode must agree)."""
        for key in ("monitor", "mode"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"{type(self).__name__}: the saved state watches {key} {state[key]!r}, "
                                 f"this callback {getattr(self, key)!r}")
        self.best, self.best_tiebreak = state.get("best"), state.get("best_tiebreak")
        self.best_epoch = state.get("best_epoch")
        return self


class EarlyStopping(MonitorCallback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; optionally restore the best weights.

    ``restore_best``: at the end of training, put back the weights of the best epoch seen in this
    ``fit`` (the weights are held in memory; they are not part of ``state_dict()``).
    """

    def __init__(self, monitor="val_loss", patience=5, restore_best=True, mode="auto", tiebreak=None):
        check_int("patience", patience, "EarlyStopping")
        super().__init__(monitor, mode, tiebreak)
        self.patience, self.restore_best = int(patience), restore_best
        self.best_weights = None

    def on_epoch_end(self, trainer, epoch, logs):
        if self.update(logs, trainer.epoch):
            if self.restore_best:
                self.best_weights = {k: v.copy() for k, v in trainer.model.state_dict().items()}
        elif self.best_epoch is not None and trainer.epoch - self.best_epoch >= self.patience:
            raise StopTraining(f"{self.monitor} did not improve for {self.patience} epochs "
                               f"(best {self.best:.4f} at epoch {self.best_epoch})")

    def on_train_end(self, trainer):
        if self.restore_best and self.best_weights is not None:
            trainer.model.load_state_dict(self.best_weights)


class ModelCheckpoint(MonitorCallback):
    """Save the model to ``path`` (``Sequential.save``) after every epoch that improves ``monitor``.

    ``save_best_only=False`` saves after every epoch. When ``monitor`` is not recorded (training without
    validation data) every epoch's model is saved: the latest is the best known.
    """

    def __init__(self, path, monitor="val_loss", mode="auto", tiebreak=None, save_best_only=True):
        super().__init__(monitor, mode, tiebreak)
        self.path, self.save_best_only = path, save_best_only

    def on_epoch_end(self, trainer, epoch, logs):
        if self.track(trainer, logs):
            trainer.model.save(self.path)

    def track(self, trainer, logs) -> bool:
        """Record the epoch's ``logs``; whether the model is to be saved now."""
        if self.monitor not in logs:
            self.best_epoch = trainer.epoch
            return True
        return self.update(logs, trainer.epoch) or not self.save_best_only


class FilterSnapshots(Callback):
    """Copies of a convolution's kernel as it is learned: before training (step 0), every ``every``
    optimizer steps (or at the optimizer steps listed in ``steps``) and at the end of every epoch.

    ``snapshots`` maps the optimizer step to the kernel (kh, kw, C, F) at that step; ``epoch_ends`` lists the
    steps at which epochs ended. ``layer``: the layer to watch (default: the model's first ``Conv2D``,
    found when training begins). ``restore(snapshots, epoch_ends, step)`` continues a resumed run.
    """

    def __init__(self, every=1, layer=None, steps=None):
        check_int("snapshot interval", every)
        self.every, self.layer = int(every), layer
        self.steps = None if steps is None else {int(s) for s in steps}
        self.snapshots: dict[int, np.ndarray] = {}
        self.epoch_ends: list[int] = []

    def restore(self, snapshots, epoch_ends, step):
        """Keep the snapshots and epoch ends up to ``step`` (those after it belong to work that was lost)."""
        self.snapshots = {int(s): k for s, k in sorted(snapshots.items()) if int(s) <= step}
        self.epoch_ends = [int(s) for s in epoch_ends if int(s) <= step]

    def take(self, step):
        self.snapshots[int(step)] = self.layer.params["kernel"].copy()

    def on_train_begin(self, trainer):
        if self.layer is None:
            self.layer = first_conv(trainer.model)
        if trainer.step == 0 or not self.snapshots:
            self.take(trainer.step)

    def on_batch_end(self, trainer, step, loss):
        if (step in self.steps) if self.steps is not None else step % self.every == 0:
            self.take(step)

    def on_epoch_end(self, trainer, epoch, logs):
        if trainer.step not in self.snapshots:
            self.take(trainer.step)
        if trainer.step not in self.epoch_ends:
            self.epoch_ends.append(int(trainer.step))
