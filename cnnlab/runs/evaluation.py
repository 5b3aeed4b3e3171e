"""Evaluating a classifier on a labelled set: accuracy, loss, accuracy per class and the confusion matrix."""
from __future__ import annotations

import numpy as np


def confusion_matrix(y, pred, num_classes) -> np.ndarray:
    """Counts (num_classes, num_classes) of (true class, predicted class): rows true, columns predicted."""
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (np.asarray(y), np.asarray(pred)), 1)
    return m


def evaluate_model(model, x, y, class_names, batch_size=256, comm=None) -> dict:
    """Accuracy, loss, per-class accuracy and the confusion matrix (rows: true class, columns: predicted).
    With an MPI communicator ``comm``, its ranks share the images."""
    scores = model.logits(x, batch_size, comm=comm)
    y = model.check_labels(y, len(scores))
    k = model.num_classes
    if len(class_names) != k:
        raise ValueError(f"the model has {k} classes but {len(class_names)} class names were given")
    pred = scores.argmax(axis=1)
    matrix = confusion_matrix(y, pred, k)
    counts = matrix.sum(axis=1)
    per_class = [float(matrix[i, i] / counts[i]) if counts[i] else None for i in range(k)]
    return {"accuracy": float((pred == y).mean()) if len(y) else 0.0,
            "loss": float(model.loss.forward(scores, y)) if len(y) else None,
            "num_images": int(len(y)), "class_names": list(class_names),
            "per_class_accuracy": per_class, "class_counts": counts.tolist(),
            "confusion_matrix": matrix.tolist()}
