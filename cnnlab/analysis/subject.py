"""The default subject: the model ``serve`` and ``explain`` show when no model is given, and its recipe.

The subject must answer "why does the first layer find edges?" truthfully, so
its recipe was chosen by experiment (benchmarks/README.md, "The default
subject"): with the default initializer, on at least 4 of 5 seeds, at least 6 of
its first layer's 8 filters are oriented by :func:`cnnlab.analysis.filters.oriented`
(selectivity above 95% of random filters and above the filter's own value at
initialisation). :func:`default_subject_recipe` is the recipe as data;
:func:`train_default_subject` trains it and returns the model with its initial
first-layer kernel, so "what training added" is known.
"""
from __future__ import annotations

from functools import partial

from ..callbacks import first_conv
from . import filters


def default_subject_recipe(dataset="shapes") -> dict:
    """The recipe for ``dataset`` (``"mnist"`` or ``"shapes"``): architecture, data, optimizer, epochs."""
    base = {"architecture": "tiny_cnn", "optimizer": "adamw", "batch_size": 64, "lr": 2e-3, "weight_decay": 0.0,
            "shift": 0}
    if str(dataset).lower() == "mnist":
        return {**base, "n_train": 5000, "epochs": 2}
    return {**base, "n_train": 5000, "epochs": 2}


def train_default_subject(train, input_shape, num_classes, seed=0, recipe=None, callbacks=(), verbose=0):
    """Train the recipe's model on ``train = (x, y)``; return ``(model, initial first-layer kernel)``.

    ``recipe`` defaults to :func:`default_subject_recipe` for shapes; its ``n_train`` first examples are used.
    """
    from .. import models
    from ..augment import random_translate
    from ..optim import SGD, AdamW
    r = recipe or default_subject_recipe()
    x, y = train
    x, y = x[:r["n_train"]], y[:r["n_train"]]
    model = models.get(r["architecture"])(input_shape=tuple(input_shape), num_classes=num_classes, seed=seed)
    model.build(tuple(input_shape))
    initial = first_conv(model).params["kernel"].copy()
    opt = (SGD(lr=r["lr"], momentum=0.9, weight_decay=r["weight_decay"]) if r["optimizer"] == "sgd"
           else AdamW(lr=r["lr"], weight_decay=r["weight_decay"]))
    augment = partial(random_translate, max_shift=r["shift"]) if r["shift"] else None
    model.fit(x, y, epochs=r["epochs"], batch_size=r["batch_size"], verbose=verbose, callbacks=list(callbacks),
              optimizer=opt, augment=augment, workers=1)
    return model, initial


def oriented_count(model, initial=None) -> dict:
    """:func:`cnnlab.analysis.filters.oriented` on the model's first convolution."""
    return filters.oriented(first_conv(model).params["kernel"], initial)
