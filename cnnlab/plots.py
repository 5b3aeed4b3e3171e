"""Figures: the matplotlib basics every picture of cnnlab uses, and the plots of a training run.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot state, no GUI backend, works
headless); a PNG is written atomically (``cnnlab._io.atomic_write``). The training curves
(:func:`plot_history`) and the confusion matrix (:func:`plot_confusion`) drawn here are the ones a run
directory holds (``history.png``, ``confusion_matrix.png``) and the ones ``cnnlab report`` shows.
"""
from __future__ import annotations

import functools
import io

import numpy as np

from ._io import atomic_write


# ---------------------------------------------------------------------------
# Basics
# ---------------------------------------------------------------------------
def new_figure(width, height, dpi=100):
    """A matplotlib ``Figure`` with an Agg canvas attached (no pyplot state, works headless)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig, dpi=None) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": "cnnlab"})
    return buf.getvalue()


def figure_rgb(fig) -> np.ndarray:
    """Draw a figure and return its pixels as an (H, W, 3) uint8 array (for animation frames)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig, path, dpi=None) -> bytes:
    """Write a figure as a PNG file (atomically); return the PNG bytes for embedding in a page."""
    data = figure_png(fig, dpi)
    atomic_write(path, data)
    return data


@functools.lru_cache(maxsize=32)
def colormap(name):
    """matplotlib's colour map ``name`` (looked up once: each lookup makes a fresh copy)."""
    import matplotlib
    return matplotlib.colormaps[name]


def text_colour(value, vmin, vmax, cmap) -> str:
    """Black or white, whichever reads better on the colour ``cmap`` gives ``value``."""
    cm = colormap(cmap) if isinstance(cmap, str) else cmap
    t = 0.5 if vmax <= vmin else (float(value) - vmin) / (vmax - vmin)
    r, g, b, _ = cm(min(max(t, 0.0), 1.0))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def colorbar(fig, mappable, ax, label=None):
    cb = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04)
    if label:
        cb.set_label(label)
    return cb


# ---------------------------------------------------------------------------
# A training run
# ---------------------------------------------------------------------------
def plot_history(history):
    """Loss and accuracy per epoch (training and validation), and the learning rate.

    ``history``: per-epoch lists (``epoch``, ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``),
    ``None`` where a value was not recorded. Returns the figure.
    """
    from matplotlib.ticker import MaxNLocator
    epochs = history.get("epoch") or list(range(1, len(history.get("loss", [])) + 1))
    has_lr = bool(history.get("lr")) and any(v is not None for v in history["lr"])
    fig = new_figure(13 if has_lr else 9.5, 3.7)
    fig.set_layout_engine("constrained")
    n = 3 if has_lr else 2
    for j, (key, label) in enumerate((("loss", "loss"), ("accuracy", "accuracy"))):
        ax = fig.add_subplot(1, n, j + 1)
        for prefix, style, name in (("", dict(color="#2c6fbb", marker="o"), "training"),
                                    ("val_", dict(color="#c0392b", marker="s"), "validation")):
            ys = history.get(prefix + key)
            if ys and any(v is not None for v in ys):
                pts = [(e, v) for e, v in zip(epochs, ys) if v is not None]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, ms=4, **style)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if has_lr:
        ax = fig.add_subplot(1, n, 3)
        pts = [(e, v) for e, v in zip(epochs, history["lr"]) if v is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#27ae60", marker=".")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("learning rate (end of epoch)")
        ax.set_title("learning rate", fontsize=10)
        ax.grid(alpha=0.3)
    return fig


def plot_confusion(matrix, class_names, title="confusion matrix"):
    """Counts in every cell (rows: true class, columns: predicted), coloured by the fraction of the true
    class (row) they hold. Returns the figure."""
    m = np.asarray(matrix, np.int64)
    k = len(m)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros(m.shape, float), where=rows > 0)
    size = min(max(4.5, 0.55 * k + 2.5), 14)
    fig = new_figure(size + 1.2, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8 if k <= 12 else 6,
                            color=text_colour(frac[i, j], 0, 1, "Blues"))
    names = [str(c) for c in class_names]
    long_names = max(map(len, names), default=0) > 2
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=45 if long_names else 0, ha="right" if long_names else "center", fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    colorbar(fig, im, ax, "fraction of the true class")
    return fig
