"""``Run(path)``: a run directory read back, that a notebook cell shows as its curves and final metrics.

    run = cnnlab.runs.Run("runs/mnist-lenet5-...")
    run.history["val_accuracy"][-1], run.evaluation["accuracy"]
    run                                          # in a notebook: the training curves, the last epoch's
                                                 # numbers, the test accuracy and the confusion matrix

Every file is read by :mod:`.files` (its one reader, with its checks); a file not written yet (a run that has
not finished its first epoch) is ``None``. The figures are drawn by :mod:`cnnlab.plots`.
"""
from __future__ import annotations

from pathlib import Path

from .._io import CnnlabFileError
from . import files


class Run:
    """A run directory: ``config``, ``state``, ``history`` (per-epoch lists) and ``evaluation``, read when made
    (``reload()`` reads them again, e.g. while the run trains)."""

    def __init__(self, path):
        self.path = Path(path)
        if files.find_run_dir(self.path) != self.path:
            raise CnnlabFileError(f"{self.path} is not a run directory (no {files.CONFIG_FILE} in it)")
        self.reload()

    def reload(self) -> "Run":
        self.config = files.read_config(self.path)
        self.state = files.read_state(self.path, missing_ok=True)
        self.history = files.read_history(self.path, missing_ok=True) or {}
        self.evaluation = files.read_evaluation(self.path, missing_ok=True)
        return self

    def final_metrics(self) -> list[tuple[str, object]]:
        """``(name, value)``: the model and dataset, epochs done, the last epoch's loss and accuracies, the
        test accuracy of the evaluation."""
        out = [("model", self.config.get("model")), ("dataset", self.config.get("dataset")),
               ("epochs", len(self.history.get("epoch", [])))]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            values = [v for v in self.history.get(key, []) if v is not None]
            if values:
                out.append((f"last epoch {key}", values[-1]))
        if self.evaluation is not None:
            out.append(("test accuracy", self.evaluation["accuracy"]))
        return out

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}: " + ", ".join(f"{k} {v}" for k, v in self.final_metrics()) + ")"

    def _repr_html_(self) -> str:
        from ..notebook import figure_html, heading_html, numbers_html
        from ..plots import figure_png, plot_confusion, plot_history
        parts = [heading_html(f"run {self.path.name}"), numbers_html(self.final_metrics())]
        if self.history.get("epoch"):
            parts.append(figure_html(figure_png(plot_history(files.history_table(self.history))), "training curves"))
        if self.evaluation is not None:
            names = self.evaluation.get("class_names") or list(range(len(self.evaluation["confusion_matrix"])))
            parts.append(figure_html(figure_png(plot_confusion(self.evaluation["confusion_matrix"], names)),
                                     "confusion matrix", width="480px"))
        return "".join(parts)
