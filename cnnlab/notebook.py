"""cnnlab in a Jupyter notebook: what changes when the code runs in a kernel, and the cells' rich display.

* :func:`in_notebook` -- True inside a Jupyter kernel (IPython with ``ipykernel``), found without importing
  either: this module imports no notebook package unless the process already runs one;
* :func:`progress_bar` -- ``fit``'s bar: tqdm's notebook widget in a kernel (``tqdm.auto``; plain text when
  ``ipywidgets`` is missing), the terminal bar on a terminal, none otherwise;
* :class:`LiveLoss` -- the loss curve drawn in the cell while training (``fit(..., live=True)``), redrawn at
  most every 2 seconds and never for more than about a tenth of the time between epochs;
* :func:`model_html` -- a model as a cell's value: ``summary()``'s table as HTML (``Model._repr_html_``);
* :func:`figure_html`, :func:`numbers_html` -- pictures and key numbers as HTML, for the results of the
  explain tools (``cnnlab.explain.result``) and run directories (``cnnlab.runs.run``).

Worker processes in a kernel: a kernel runs threads (its message loop, heartbeat and output threads), and
forking such a process copies their locks in whatever state they are in; the copy of the kernel's output
stream in a child would write through a thread that does not exist there. So in a kernel ``fit``,
``predict`` and ``evaluate`` compute in the kernel's own process by default
(``cnnlab.parallel.default_workers`` is 1); ``workers=N`` still forks N - 1 workers for those who ask.
``cnnlab.serve.show`` runs its server in a thread of the kernel; its training jobs start in fresh
processes (``spawn``), never forked.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from .callbacks import Callback
from .html import esc, img_tag, table_html

LIVE_SECONDS = 2.0          # the live loss curve is redrawn at most this often (and at every epoch's end)
DRAW_SHARE = 10             # ... and waits at least this many times its last drawing's time before the next


def in_notebook() -> bool:
    """True when this process is a Jupyter kernel (IPython's shell with a kernel attached)."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False                     # neither is imported here: not a kernel, and nothing gets imported
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def progress_bar(total: int, desc: str):
    """A progress bar over ``total`` steps: tqdm's notebook widget in a kernel, the text bar on a terminal;
    ``None`` when the output goes to neither (a log file)."""
    if in_notebook():
        from tqdm.auto import tqdm       # the widget with ipywidgets, else tqdm's text bar
        return tqdm(total=total, desc=desc, unit="batch", leave=False)
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr, dynamic_ncols=True)


class LiveLoss(Callback):
    """The training loss drawn in the notebook cell while training: every batch's loss (light), its mean
    over each epoch so far (dark), the validation loss at each epoch's end (red squares).

    Redrawn at each epoch's end, when training ends, and in between once ``every`` seconds have passed since
    the last drawing and at least ``DRAW_SHARE`` times as long as that drawing took: between epochs, drawing
    takes at most 1 / (1 + DRAW_SHARE) of the time whatever the machine's speed. Outside a kernel it records the
    losses and draws nothing. ``figure()`` draws the curve on demand.
    """

    def __init__(self, every: float = LIVE_SECONDS):
        self.every = float(every)
        self.steps, self.losses, self.epoch_ends, self.val_losses = [], [], [], []
        self._handle, self._last, self._wait = None, 0.0, self.every

    def on_train_begin(self, trainer):
        if in_notebook():
            from IPython.display import HTML, display
            self._handle = display(HTML("<i>the loss curve appears after the first batches</i>"), display_id=True)
        self._last = time.perf_counter()

    def on_batch_end(self, trainer, step, loss):
        self.steps.append(step)
        self.losses.append(float(loss))
        if time.perf_counter() - self._last >= self._wait:
            self._draw()

    def on_epoch_end(self, trainer, epoch, logs):
        self.epoch_ends.append(len(self.losses))          # where each epoch ends, in batches recorded
        self.val_losses.append(logs.get("val_loss"))
        self._draw()

    def on_train_end(self, trainer):
        self._draw()

    def figure(self):
        """The curve as a matplotlib figure (loss against optimizer step)."""
        from .plots import new_figure
        fig = new_figure(7, 3)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(self.steps, self.losses, color="#9dbbe0", lw=0.8, label="batch loss")
        bounds = [0] + self.epoch_ends + ([len(self.losses)] if self.epoch_ends[-1:] != [len(self.losses)] else [])
        for a, b in zip(bounds[:-1], bounds[1:]):         # each epoch's running mean, from its first batch
            if b > a:
                seg = np.asarray(self.losses[a:b])
                ax.plot(self.steps[a:b], np.cumsum(seg) / np.arange(1, len(seg) + 1), color="#2c6fbb",
                        label="epoch mean so far" if a == 0 else None)
        val = [(self.steps[e - 1], v) for e, v in zip(self.epoch_ends, self.val_losses) if v is not None and e]
        if val:
            ax.plot(*zip(*val), "s", color="#c0392b", ms=5, label="validation loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if self.losses:
            ax.legend(fontsize=8, loc="upper right")          # "best" would search every point: slow
        return fig

    def _draw(self):
        self._last = time.perf_counter()
        if self._handle is None or not self.losses:
            return
        from IPython.display import Image
        from .plots import figure_png
        start = time.perf_counter()
        self._handle.update(Image(data=figure_png(self.figure()), format="png"))
        self._last = time.perf_counter()
        self._wait = max(self.every, DRAW_SHARE * (self._last - start))


# ---------------------------------------------------------------------------
# Rich display
# ---------------------------------------------------------------------------
def model_html(model) -> str:
    """``summary()``'s table as HTML: every layer's output shape, parameters and multiply-adds, and totals."""
    header, rows, totals = model.summary_table()
    title = (f"<p><b>{esc(model.name)}</b> ({type(model).__name__}), input "
             f"<code>{esc(totals['input'])}</code></p>")
    foot = (f"<p>Total params: <b>{totals['params']:,}</b> &middot; multiply-adds per example (forward): "
            f"<b>{totals['macs']:,}</b></p>")
    return f"<div class='cnnlab-model'>{title}{table_html(header, rows)}{foot}</div>"


def figure_html(data: bytes, alt: str, mime: str = "image/png", width: str = "100%") -> str:
    """A picture (PNG, or an animated GIF) inlined in the cell (a ``data:`` URI: the notebook keeps it when saved)."""
    return img_tag(data, alt, mime=mime, width=width)


def numbers_html(pairs) -> str:
    """``(name, value)`` pairs as a two-column table; numbers shown with four significant digits."""

    def text(v):
        if isinstance(v, bool) or v is None:
            return str(v)
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    return table_html(["", "value"], [(k, text(v)) for k, v in pairs])


def heading_html(text: str) -> str:
    return f"<h4>{esc(text)}</h4>"
