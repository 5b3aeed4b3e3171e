"""The lesson's companion models: what the served model is compared with, trained on its own data.

=============  ===========================================================================================
``"mlp"``      an MLP with about the served model's parameter count (:func:`..baselines.mlp_like`), trained
               on the model's own data: a cnnlab model (steps 1 and 12)
``"gap"``      a CNN ending in global average pooling (:func:`..baselines.cnn_gap`), same data (step 12)
``"untrained"``the served model's architecture with its initial weights drawn again from its own seed
               (:func:`untrained_copy`; no data needed): the randomised model of the saliency sanity
               check (step 13), and the kernel at initialisation of a cnnlab model (step 8)
``"sharing"``  the weight-sharing experiment (:func:`..baselines.sharing_experiment`) on the same data:
               ``{"conv"|"local"|"dense"|"random_filters": {"params", "accuracy"}, "n_train",
               "n_test"}``; ``random_filters`` is the conv model trained with its convolution frozen at
               its random start (:class:`..untrained.FreezeLayer`): how well untrained filters do
=============  ===========================================================================================

:class:`Companions` trains them one after the other (:meth:`Companions.run`, meant for a background
thread of the server: it never holds the server's compute lock) and keeps each one's status
(``"training"``, ``"ready"`` or ``"none"``), a one-line message and its progress in [0, 1].
:meth:`Companions.context` is what ``Context.companions`` holds: each ready object, else its message.

Trained models are cached in a folder keyed by a hash of the served model's architecture and of the
data (:func:`cache_key`): beside the run when the model is a run (``RUN/lesson/KEY``), else in the cache
(``~/.cache/cnnlab/lesson/KEY``); models as model files (:func:`cnnlab.model_file.write_model_file`),
the experiment's numbers as JSON, both written atomically. The next start reads them back.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from pathlib import Path

import numpy as np

from ... import optim
from ..._io import CnnlabFileError, read_json, write_json
from ..baselines import cnn_gap, mlp_like, sharing_experiment, sharing_models
from ..untrained import FreezeLayer

NAMES = ("mlp", "gap", "untrained", "sharing")
ORDER = ("untrained", "mlp", "sharing", "gap")    # made in this order: the quickest first
SHORT = {"locally_connected": "local"}            # the experiment's model names as "sharing" keys them
EPOCHS = {"mlp": 6, "gap": 4, "sharing": 4}       # short: seconds to tens of seconds each on one core ...
WORKERS = 1                                        # this thread only: never fork a server's process
MIN_STEPS = 150                                    # ... but at least this many optimizer steps on little data
VERSION = "1"                                      # part of the cache key: change it when the recipes change
LABELS = {"mlp": "the MLP of similar size", "gap": "the CNN with global average pooling",
          "untrained": "the untrained copy", "sharing": "the weight-sharing experiment"}


def untrained_copy(model):
    """``model``'s architecture with fresh initial weights drawn from its own seed (its state at
    initialisation when it was built from that seed, as cnnlab runs are); ``None`` when the
    architecture cannot be rebuilt."""
    from ...model import Model
    try:
        return Model.from_config(model.get_config())
    except (CnnlabFileError, ValueError, TypeError, KeyError, AttributeError):
        return None


def cache_key(model, x, y) -> str:
    """A hash of ``model``'s architecture (its config: layers, input shape, seed; not its weights, which no
    companion depends on, so a run that goes on training keeps its companions), of the data ``x``, ``y``
    and of :data:`VERSION`; ``x=None``: the architecture alone."""
    h = hashlib.sha256(VERSION.encode())
    h.update(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for a in () if x is None else (x, y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def epochs(name, n, batch_size=64) -> int:
    """Epochs for companion ``name`` on ``n`` images: :data:`EPOCHS`, or more to make :data:`MIN_STEPS` steps."""
    return max(EPOCHS[name], math.ceil(MIN_STEPS / max(1, math.ceil(n / batch_size))))


def cache_folder(run_dir=None) -> Path:
    """Where companions are kept: ``RUN/lesson`` for a run (one this process may write), else the cache's
    ``lesson`` folder."""
    from ...datasets import cache_dir
    if run_dir is not None and Path(run_dir).is_dir() and os.access(run_dir, os.W_OK):
        return Path(run_dir) / "lesson"
    return cache_dir("lesson")


class Companions:
    """The companions of ``model`` on ``data`` (``Context.data``: the tuple of the model's own data or
    the ``LookupError`` saying why there is none); ``run_dir``: the model's run, if it is one."""

    def __init__(self, model, data, run_dir=None, seed=0):
        self.model, self.data, self.seed = model, data, seed
        self.folder = None
        self.objects: dict = {}
        self.state = {n: {"status": "training", "message": f"{LABELS[n][0].upper()}{LABELS[n][1:]} is being "
                                                          f"prepared; this step will show it when it is ready.",
                          "progress": 0.0} for n in NAMES}
        self.seconds: dict = {}
        self.done = threading.Event()
        if isinstance(data, tuple):
            (x, y) = data[0]
            self.key = cache_key(model, x, y)
            self.folder = cache_folder(run_dir) / self.key
        else:
            self.key = "no data: " + cache_key(model, None, None)
            why = str(data).rstrip(".") if data is not None else "this model's training data is not known"
            for n in ("mlp", "gap", "sharing"):
                self._set(n, "none", f"No {LABELS[n][4:] if LABELS[n].startswith('the ') else LABELS[n]} "
                                     f"here: {why}.")

    def _set(self, name, status, message=None, progress=None, obj=None):
        if obj is not None:
            self.objects[name] = obj
        s = self.state[name]
        s["status"] = status
        s["message"] = message if message is not None else s["message"]
        if progress is not None:
            s["progress"] = float(progress)
        if status == "ready":
            s["progress"] = 1.0

    def status(self) -> dict:
        """``{name: {"status", "message", "progress"}}`` (a copy)."""
        return {n: dict(s) for n, s in self.state.items()}

    def context(self) -> dict:
        """``{name: ready object, or the one-line message saying why not}`` (``Context.companions``)."""
        return {n: self.objects[n] if self.state[n]["status"] == "ready" else self.state[n]["message"]
                for n in NAMES}

    def run(self):
        """Make every companion (reading the cache first); each failure is kept as that one's message."""
        try:
            for name in ORDER:
                if self.state[name]["status"] != "training":
                    continue
                t0 = time.perf_counter()
                try:
                    getattr(self, "_" + name)()
                except Exception as e:                 # noqa: BLE001 - said on the page, never lost
                    self._set(name, "none", f"{LABELS[name][0].upper()}{LABELS[name][1:]} could not be made "
                                            f"({type(e).__name__}: {e}).")
                self.seconds[name] = time.perf_counter() - t0
        finally:
            self.done.set()

    # ---- each companion -------------------------------------------------------------------
    def _untrained(self):
        m = untrained_copy(self.model)
        if m is None:
            self._set("untrained", "none", "The model's architecture cannot be rebuilt, so there is no untrained copy.")
        else:
            self._set("untrained", "ready", "ready", obj=m)

    def _train_model(self, name, make, lr):
        from ...model import load
        from ...model_file import write_model_file
        path = self.folder / f"{name}.safetensors"
        if path.is_file():
            try:
                return self._set(name, "ready", "ready (from the cache)", obj=load(path))
            except CnnlabFileError:
                pass                                    # a damaged cache file: train again
        (x, y), (xt, yt) = self.data[0], self.data[1]
        k = self.model.num_classes
        model = make(tuple(self.model.input_shape), k)
        opt, total = optim.Adam(lr=lr), epochs(name, len(x))
        for epoch in range(total):
            model.fit(x, y, epochs=1, batch_size=64, optimizer=opt, verbose=0, workers=WORKERS)
            self._set(name, "training", f"{LABELS[name][0].upper()}{LABELS[name][1:]} is training: epoch "
                                        f"{epoch + 1} of {total} on {len(x):,} images.", progress=(epoch + 1) / total)
        accuracy = float(model.evaluate(xt, yt, workers=WORKERS)["accuracy"])
        write_model_file(path, model, metadata={"test_accuracy": f"{accuracy:.6f}", "n_train": str(len(x))})
        self._set(name, "ready", "ready", obj=model)

    def _mlp(self):
        self._train_model("mlp", lambda s, k: mlp_like(s, k, params=self.model.num_params, seed=self.seed), 2e-3)

    def _gap(self):
        self._train_model("gap", lambda s, k: cnn_gap(s, k, seed=self.seed), 3e-3)

    def _sharing(self):
        path = self.folder / "sharing.json"
        if path.is_file():
            try:
                return self._set("sharing", "ready", "ready (from the cache)", obj=read_json(path, "lesson cache"))
            except CnnlabFileError:
                pass
        (x, y), (xt, yt) = self.data[0], self.data[1]
        k = self.model.num_classes
        models = sharing_models(x.shape[1:], k, seed=self.seed)
        models["random_filters"] = sharing_models(x.shape[1:], k, seed=self.seed)["conv"]
        def progress(i, n):
            self._set("sharing", "training", f"The weight-sharing experiment: {i} of {n} models trained.",
                      progress=i / n)

        frozen = models.pop("random_filters")
        r = sharing_experiment((x, y), (xt, yt), epochs=epochs("sharing", len(x), 32), models=models, seed=self.seed,
                               progress=lambda i, n: progress(i, n + 1), workers=WORKERS)
        f = sharing_experiment((x, y), (xt, yt), epochs=epochs("sharing", len(x), 32), models={"random_filters": frozen},
                               seed=self.seed, callbacks=(FreezeLayer(frozen["conv"]),), workers=WORKERS)
        out = {SHORT.get(key, key): {"params": r["params"][key], "accuracy": r["accuracy"][key]} for key in r["params"]}
        out["random_filters"] = {"params": f["params"]["random_filters"], "accuracy": f["accuracy"]["random_filters"],
                                 "trainable_params": f["params"]["random_filters"] - int(frozen["conv"].num_params)}
        out.update(n_train=int(len(x)), n_test=int(len(xt)), epochs=epochs("sharing", len(x), 32))
        write_json(path, out)
        self._set("sharing", "ready", "ready", obj=out)
