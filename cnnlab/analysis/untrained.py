"""How well random, untrained first-layer filters already do: the same recipe with that layer frozen.

:class:`FreezeLayer` puts a layer's parameters back after every optimizer step, so the layer keeps its
random initial values while the rest of the model learns (momentum and weight decay included: whatever
the step did to it is undone). :func:`random_filters_experiment` trains a recipe twice, with the same
seed and data, once as it is and once with its first convolution frozen, and returns both test
accuracies: the share of the accuracy that does not need learned filters.
"""
from __future__ import annotations

from pathlib import Path

from ..callbacks import Callback, first_conv


class FreezeLayer(Callback):
    """Keep ``layer`` (default: the model's first ``Conv2D``) at its values from the start of training."""

    def __init__(self, layer=None):
        self.layer, self.saved = layer, None

    def on_train_begin(self, trainer):
        if self.layer is None:
            self.layer = first_conv(trainer.model)
            if self.layer is None:
                raise ValueError("freezing the first convolution needs a Conv2D layer; the model has none")
        self.saved = {k: v.copy() for k, v in self.layer.params.items()}

    def on_batch_end(self, trainer, step, loss):
        for k, v in self.saved.items():
            self.layer.params[k][...] = v


def random_filters_experiment(recipe, out_dir, data=None) -> dict:
    """Train ``recipe`` (``cnnlab.runs.make_config`` options) as it is and with its first convolution frozen.

    Runs go to ``out_dir/trained`` and ``out_dir/frozen``; ``data`` as for ``cnnlab.runs.run_training``.
    Returns ``{"trained": accuracy, "frozen": accuracy, "chance": 1 / classes}`` on the run's test split.
    """
    from ..runs import make_config, run_training
    out = {}
    for name, callbacks in (("trained", ()), ("frozen", (FreezeLayer(),))):
        summary = run_training(make_config(**recipe), Path(out_dir) / name, verbose=0, plot=False, data=data,
                               callbacks=callbacks)
        out[name] = float(summary["test"]["accuracy"])
        out["chance"] = 1.0 / summary["model"].num_classes
    return out
