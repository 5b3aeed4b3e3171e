"""The training loop behind ``Model.fit`` and ``cnnlab train``.

One epoch: shuffle (seeded), cut into mini-batches, optionally augment each
batch, then forward, loss, backward and an optimizer step per batch. After
each epoch the trainer records loss, accuracy, images/s and the learning rate,
evaluates the validation data, and lets callbacks act (checkpoints, early
stopping, filter snapshots). A non-finite loss stops training with
``TrainingDiverged`` before the bad step touches the weights.

Stopping in the middle of an epoch: with ``stop`` (a ``cnnlab.runs.stop.StopSignals``), a signal ends
training after the batch it arrives in with ``TrainingStopped``; ``trainer.progress`` then says where the
epoch stands (the data order, the steps done, the partial sums of loss and correct predictions), and
setting ``trainer.progress`` to such a record before ``fit`` (with the model's generator, weights and
optimizer as they were) continues that epoch from the next batch, exactly as if it had not stopped.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from . import distributed, optim, resources
from .checks import check_int
from .callbacks import Callback, EarlyStopping, StopTraining  # noqa: F401  (the loop's callbacks, importable from here)
from .datasets.split import split_seed_for, split_train_val
from .parallel import DataParallel


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights are those before the bad step."""


class TrainingStopped(Exception):
    """A stop signal ended training after a complete batch (``signum``); ``trainer.progress`` says where."""

    def __init__(self, signum):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class Trainer:
    """Mini-batch training of a model (``cnnlab.Model``: a graph or a ``Sequential`` chain).

    Args:
        model: the model (its ``loss`` is the classifier head).
        optimizer: an optimizer from ``cnnlab.optim`` (default ``SGD(lr=0.01, momentum=0.9)``).
        batch_size: examples per step.
        verbose: 0 silent, 1 a progress bar on a terminal or in a notebook (a line per epoch otherwise), 2 a line
            per epoch.
        shuffle: reshuffle the training set every epoch (seeded by the model's generator).
        augment: a callable ``(x_batch, rng) -> x_batch`` applied to every training batch.
        validation_split: hold out this fraction when no validation data is given, chosen as ``cnnlab train``
            chooses it (``cnnlab.datasets.split_train_val`` seeded by ``split_seed_for(model.seed)``).
        callbacks: ``cnnlab.callbacks.Callback`` objects.
        workers: cores that share each batch (default one per core; 1 computes everything in this process;
            see ``cnnlab.parallel``); under MPI, the shards of each global batch (default one per rank).
        comm: an ``mpi4py`` communicator to train across its ranks (``cnnlab.distributed``); by default
            ``MPI.COMM_WORLD`` when started by ``mpiexec`` with several ranks; ``False``: this process only.
            Only rank 0 prints.
        live: in a notebook, draw the loss curve in the cell while training (``cnnlab.notebook.LiveLoss``,
            redrawn at most every 2 s); a positive number instead of ``True`` sets those seconds.
        stop: an object whose ``received`` becomes a signal number to stop after the current batch
            (``cnnlab.runs.stop.StopSignals``); under MPI the ranks stop after the same batch.

    ``progress``: ``None`` between epochs; inside one, ``{"epoch_step": k, "order": indices, "loss_sum": s,
    "correct": c, "seconds": t}`` after its k-th batch.
    """

    def __init__(self, model, optimizer=None, batch_size=32, verbose=1, shuffle=True, augment=None,
                 validation_split=0.0, callbacks=(), eval_batch_size=256, workers=None, comm=None, stop=None,
                 live=False):
        check_int("batch_size", batch_size, "fit")
        if not 0 <= validation_split < 1:
            raise ValueError(f"fit: validation_split must be in [0, 1), received {validation_split!r}")
        self.model = model
        self.optimizer = optimizer if optimizer is not None else optim.SGD(lr=0.01, momentum=0.9)
        if not isinstance(self.optimizer, optim.Optimizer):
            raise ValueError(f"fit: optimizer must be a cnnlab.optim optimizer, received {optimizer!r}")
        self.batch_size, self.verbose, self.shuffle = int(batch_size), verbose, shuffle
        self.augment, self.validation_split = augment, validation_split
        self.callbacks = list(callbacks)
        if live:
            from .notebook import LIVE_SECONDS, LiveLoss
            self.callbacks.append(LiveLoss(LIVE_SECONDS if live is True else float(live)))
        self.eval_batch_size = eval_batch_size
        self.workers = workers
        self.comm = distributed.world(comm)
        if self.comm is not None and not self.comm.is_root:
            self.verbose = 0
        self.history: dict[str, list] = {}
        self.epoch = 0          # epochs completed
        self.step = 0           # optimizer steps taken
        self.stop_reason = None
        self.stop = stop
        self.progress = None    # where the current epoch stands (set before fit: where to continue it)

    # ---- the loop --------------------------------------------------------------
    def fit(self, x, y, epochs=1, validation_data=None):
        model = self.model
        x = model.check_input(x)
        y = model.check_labels(y, len(x))
        check_int("epochs", epochs, "fit")
        if self.comm is not None:
            distributed.synchronize(model, x, y, self.comm)     # rank 0's weights and generator everywhere
        if validation_data is None and self.validation_split:
            (x, y), validation_data = split_train_val(x, y, self.validation_split, split_seed_for(model.seed))
        if validation_data is not None:
            xv = model.check_input(validation_data[0], "validation images")
            validation_data = (xv, model.check_labels(validation_data[1], len(xv), "validation labels"))
        if len(x) == 0:
            raise ValueError("fit: the training set is empty")
        resources.check_batch(model, min(self.batch_size, len(x)), training=True)
        for cb in self.callbacks:
            cb.on_train_begin(self)
        try:
            while self.epoch < epochs:
                logs = self._train_epoch(x, y, epochs)
                if validation_data is not None:
                    val = model.evaluate(*validation_data, batch_size=self.eval_batch_size,
                                         workers=None if self.comm else self.workers, comm=self.comm)
                    logs.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                for k, v in logs.items():
                    self.history.setdefault(k, []).append(v)
                self.epoch += 1
                self._report(logs, epochs)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, self.epoch - 1, logs)
        except StopTraining as stop:
            self.stop_reason = str(stop)
            if self.verbose:
                print(f"Stopped early: {stop}", file=sys.stderr)
        finally:
            for cb in self.callbacks:
                cb.on_train_end(self)
        return self.history

    def _train_epoch(self, x, y, total_epochs):
        model, opt, bs = self.model, self.optimizer, self.batch_size
        n = len(x)
        steps = -(-n // bs)
        if self.progress is not None:                    # continue an epoch stopped part way
            p = self.progress
            if len(p["order"]) != n or not 0 <= p["epoch_step"] <= steps:
                raise ValueError(f"fit: the epoch to continue has {len(p['order'])} examples and step "
                                 f"{p['epoch_step']}; the training set has {n} ({steps} steps)")
            order, first = np.asarray(p["order"]), int(p["epoch_step"])
            loss_sum, correct, t0 = float(p["loss_sum"]), int(p["correct"]), time.perf_counter() - p["seconds"]
            if first:
                opt.set_progress(self.epoch + (first - 1) / steps, total_epochs)   # the rate of the last step done
        else:
            order = model.rng.permutation(n) if self.shuffle else np.arange(n)
            first, loss_sum, correct, t0 = 0, 0.0, 0, time.perf_counter()
        bar = self._progress_bar(steps, total_epochs)
        if self.comm is not None:
            engine = distributed.DistributedParallel(model, self.comm, self.workers, augment=self.augment)
        else:
            engine = DataParallel(model, self.workers, max_batch=bs, augment=self.augment)
        with engine as parallel:
            for s in range(first, steps):
                idx = order[s * bs:(s + 1) * bs]
                xb, yb = x[idx], y[idx]                          # augmented shard by shard, in parallel
                opt.set_progress(self.epoch + s / steps, total_epochs)
                signum = getattr(self.stop, "received", None)
                # forward, loss and backward: gradients filled; under MPI the ranks also agree on stopping
                loss, hits = parallel.train_batch(xb, yb, stop=signum or 0)
                if not np.isfinite(loss):
                    raise TrainingDiverged(
                        f"the loss became {loss} at epoch {self.epoch + 1}, step {s + 1}; training stopped and "
                        f"the weights are those before this step (try a smaller learning rate, now {opt.current_lr:g})")
                opt.step(model.parameters())
                self.step += 1
                loss_sum += loss * len(idx)
                correct += hits
                self.progress = {"epoch_step": s + 1, "order": order, "loss_sum": loss_sum, "correct": correct,
                                 "seconds": time.perf_counter() - t0}
                for cb in self.callbacks:
                    cb.on_batch_end(self, self.step, loss)
                if parallel.stopping:
                    if bar is not None:
                        bar.close()
                    raise TrainingStopped(parallel.stopping)
                if bar is not None:
                    bar.update(1)
                    if s % 20 == 0:
                        bar.set_postfix(loss=f"{loss_sum / ((s + 1) * bs):.4f}", refresh=False)
        if bar is not None:
            bar.close()
        self.progress = None
        seconds = time.perf_counter() - t0
        return {"epoch": self.epoch + 1, "loss": loss_sum / n, "accuracy": correct / n,
                "lr": opt.current_lr, "images_per_sec": n / seconds, "seconds": seconds}

    # ---- reporting -------------------------------------------------------------
    def _progress_bar(self, steps, total_epochs):
        if self.verbose != 1:
            return None
        from .notebook import progress_bar
        return progress_bar(steps, f"epoch {self.epoch + 1}/{total_epochs}")

    def _report(self, logs, total_epochs):
        if not self.verbose:
            return
        parts = [f"epoch {logs['epoch']}/{total_epochs}", f"loss {logs['loss']:.4f}", f"acc {logs['accuracy']:.4f}"]
        if "val_loss" in logs:
            parts += [f"val_loss {logs['val_loss']:.4f}", f"val_acc {logs['val_accuracy']:.4f}"]
        parts += [f"{logs['images_per_sec']:,.0f} img/s", f"{logs['seconds']:.1f}s", f"lr {logs['lr']:.3g}"]
        print("  ".join(parts), file=sys.stderr, flush=True)
