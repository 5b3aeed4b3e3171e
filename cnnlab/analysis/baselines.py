r"""The models a CNN is compared with, and the training that makes the comparison fair.

* :func:`mlp_like`: ``Flatten -> Dense(h) -> ReLU -> Dense(k)`` with about as many parameters as
  a given model. With ``d`` inputs and ``k`` classes it has ``h (d + 1) + k (h + 1)`` parameters, so
  ``h = (params - k) / (d + 1 + k)`` (:func:`mlp_hidden_units`).
* :func:`cnn_gap`: three conv stages whose last map is averaged over all positions (global average
  pooling), then one dense layer: nothing after the average depends on where a feature is.
* :func:`sharing_models` and :func:`sharing_experiment`: a convolution, a locally connected layer (the
  same connections, a separate kernel at every position) and a dense layer with the convolution's
  parameter count, trained alike on the same data, each until its training loss stops falling
  (:func:`loss_stopped_falling`): what weight sharing buys, in parameters and test accuracy.

``cnnlab explain invariance`` / ``weight-sharing`` and the lesson's companion models
(:mod:`cnnlab.analysis.lesson.companions`) use these; nothing here writes files.
"""
from __future__ import annotations

import time

import numpy as np

from ..layers import Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU
from ..layers.local import LocallyConnected2D
from ..model import Sequential

SHARING_KEYS = ("conv", "locally_connected", "dense")
CONVERGED = 0.03     # stop when an epoch lowers the training loss by less than this fraction


def mlp_hidden_units(input_shape, num_classes, params) -> int:
    """Hidden units of ``Flatten -> Dense(h) -> ReLU -> Dense(classes)`` with about ``params`` parameters
    (at least 1; formula in the module docstring)."""
    d = int(np.prod(input_shape))
    return max(1, int(round((params - num_classes) / (d + 1 + num_classes))))


def mlp_like(input_shape, num_classes, params=None, hidden=None, seed=0):
    """Flatten -> Dense(hidden) -> ReLU -> Dense(classes); ``hidden`` chosen to have about ``params`` parameters."""
    if hidden is None:
        hidden = max(8, mlp_hidden_units(input_shape, num_classes, params))
    return Sequential([Flatten(), Dense(hidden), ReLU(), Dense(num_classes, kernel_initializer="glorot_uniform")],
                      input_shape=tuple(input_shape), seed=seed, name=f"mlp_{hidden}")


def cnn_gap(input_shape, num_classes, seed=0):
    """Three conv stages, the last averaged over the whole map (global average pooling), then a dense layer.

    Nothing after the average depends on where a feature occurs, so the
    classifier's input is (nearly) invariant to shifts of the image.
    """
    return Sequential([Conv2D(12, 5, padding="same"), ReLU(), MaxPool2D(2),
                       Conv2D(24, 3, padding="same"), ReLU(), MaxPool2D(2),
                       Conv2D(48, 3, padding="same"), ReLU(), GlobalAvgPool2D(),
                       Dense(num_classes, kernel_initializer="glorot_uniform")],
                      input_shape=tuple(input_shape), seed=seed, name="cnn_gap")


def fit_until(model, x, y, max_epochs, done, min_epochs=1, optimizer=None, batch_size=64, validation_data=None,
              verbose=0, callbacks=(), workers=None):
    """Train one epoch at a time, one optimizer throughout (default Adam, step 2e-3), until ``done(history)``.

    ``history`` holds per-epoch lists (``loss``, ``accuracy`` and, with ``validation_data``,
    ``val_loss``, ``val_accuracy``); ``done`` is asked after each epoch from ``min_epochs`` on.
    Returns ``(history, stopped)``: ``stopped`` says whether ``done`` was met within ``max_epochs``,
    so a weak baseline is known to be weak for lack of structure, not for lack of training.
    ``workers``: as for ``Model.fit`` (default one per core; 1: this thread only).
    """
    from ..optim import Adam
    opt = optimizer or Adam(lr=2e-3)
    history = {}
    extra = {"callbacks": list(callbacks)} if callbacks else {}
    if workers is not None:
        extra["workers"] = workers
    for epoch in range(1, int(max_epochs) + 1):
        h = model.fit(x, y, epochs=1, batch_size=batch_size, optimizer=opt, validation_data=validation_data,
                      verbose=verbose, **extra)
        for key, values in h.items():
            history.setdefault(key, []).append(float(values[-1]))
        if epoch >= min_epochs and done(history):
            return history, True
    return history, False


def loss_stopped_falling(history) -> bool:
    """The last epoch lowered the training loss by less than :data:`CONVERGED` (relative), or training accuracy is 100%."""
    loss = history["loss"]
    return history["accuracy"][-1] >= 1.0 or (len(loss) > 1 and loss[-2] - loss[-1] < CONVERGED * loss[-2])


def sharing_models(input_shape, num_classes=10, filters=8, kernel_size=5, hidden=None, seed=0):
    """Conv, locally connected and dense classifiers of the same shape of computation.

    conv: ``Conv2D(filters, k) -> ReLU -> MaxPool 2 -> Dense(classes)``; locally
    connected: the same with ``LocallyConnected2D``; dense: ``Dense(hidden) ->
    ReLU -> Dense(classes)`` with ``hidden`` (default) chosen so its parameter
    count matches the conv model's.
    """
    conv = Sequential([Conv2D(filters, kernel_size, name="conv"), ReLU(), MaxPool2D(2), Flatten(),
                       Dense(num_classes, kernel_initializer="glorot_uniform", name="classifier")],
                      input_shape=input_shape, seed=seed, name="conv")
    local = Sequential([LocallyConnected2D(filters, kernel_size, name="local"), ReLU(), MaxPool2D(2), Flatten(),
                        Dense(num_classes, kernel_initializer="glorot_uniform", name="classifier")],
                       input_shape=input_shape, seed=seed, name="locally_connected")
    if hidden is None:
        hidden = mlp_hidden_units(input_shape, num_classes, conv.num_params)
    dense = Sequential([Flatten(), Dense(hidden, name="hidden"), ReLU(),
                        Dense(num_classes, kernel_initializer="glorot_uniform", name="classifier")],
                       input_shape=input_shape, seed=seed, name="dense")
    return {"conv": conv, "locally_connected": local, "dense": dense}


def sharing_experiment(train, test, epochs=12, batch_size=32, lr=2e-3, filters=8, kernel_size=5, hidden=None,
                       seed=0, verbose=0, models=None, progress=None, callbacks=(), workers=None) -> dict:
    """Train :func:`sharing_models` on ``train = (x, y)`` and test them on ``test = (x, y)``.

    Each model trains with Adam(``lr``) until its training loss stops falling, at most ``epochs``
    epochs. ``models``: the dict of :func:`sharing_models` to train (default: built here);
    ``progress(i, n)`` is called after each model; ``callbacks`` and ``workers`` go to every ``fit``. Returns ``{"models", "params", "accuracy",
    "train_accuracy", "histories", "converged", "seconds", "n_train", "n_test"}`` (dicts keyed by
    :data:`SHARING_KEYS`).
    """
    from .. import optim
    (xtr, ytr), (xte, yte) = train, test
    num_classes = int(max(ytr.max(), yte.max()) + 1)
    if models is None:
        models = sharing_models(xtr.shape[1:], num_classes, filters, kernel_size, hidden, seed)
    out = {"models": models, "params": {k: int(m.num_params) for k, m in models.items()}, "accuracy": {},
           "train_accuracy": {}, "histories": {}, "converged": {}, "seconds": {},
           "n_train": int(len(xtr)), "n_test": int(len(xte))}
    for i, (key, m) in enumerate(models.items()):
        t0 = time.perf_counter()
        out["histories"][key], out["converged"][key] = fit_until(
            m, xtr, ytr, epochs, loss_stopped_falling, optimizer=optim.Adam(lr=lr), batch_size=batch_size,
            validation_data=(xte, yte), verbose=verbose, callbacks=callbacks, workers=workers)
        out["seconds"][key] = time.perf_counter() - t0
        out["accuracy"][key] = float(m.evaluate(xte, yte, workers=workers)["accuracy"])
        out["train_accuracy"][key] = out["histories"][key]["accuracy"][-1]
        if progress:
            progress(i + 1, len(models))
    return out
