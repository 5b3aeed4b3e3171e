r"""The convolution step, animated: a kernel slides over an image and fills the output one cell at a time.

At output position ``(i, j)`` the kernel is laid on the window of the padded
input whose top-left corner is ``(i * s_h, j * s_w)`` (taps ``d`` pixels apart
when dilated). Each kernel weight multiplies the pixel under it, the products
are summed over the window and over all input channels, the bias is added,
and that number is output cell ``(i, j)``::

    y[i, j] = b + sum_{p, q, c} x_pad[i*s_h + p*d_h, j*s_w + q*d_w, c] * k[p, q, c]

(Deep-learning "convolution" is this cross-correlation: the kernel is not
flipped.) :func:`explain_conv` computes the output with cnnlab's ``Conv2D``,
re-derives every cell from its element-wise products, and draws one frame
per output position: the input with the window highlighted, the kernel, the
products, the sum, and the output filling up.

That is the *how*. The *why* is :func:`edge_detector`: two hand-made 3x3
Sobel kernels run over a real test image of the default subject (MNIST when
it is at hand, else ``shapes``) light up on the borders of the ink, each on
the edges of its own orientation; the page says how many of the strong
responses lie there, measured on that image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import images
from ..analysis import texts
from ..checks import check_pair
from ..layers.geometry import window_geometry
from ..analysis.convolution import conv_steps, convolve, parse_padding
from ..analysis.layers import conv_layer
from ..layers.conv import pad_hw
from .common import (HEAT_CMAP, SIGNED_CMAP, colorbar, colormap_colours, esc, format_number, frame_player,
                     quantize_frames, img_tag, is_integral, load_image, load_model, new_figure, out_dir, parse_array_text,
                     save_figure, save_gif, save_json, symmetric_limits, table_html, text_colour,
                     write_html)
from .result import ExplainResult
from .subject import data_noun, load_data, tool_out

CLASSIC_IMAGE = [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]
CLASSIC_KERNEL = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]

NAMED_KERNELS = {
    "classic": np.array(CLASSIC_KERNEL, np.float64),
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], np.float64),
    "edge": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float64),
    "sobel-x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64),
    "sobel-y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float64),
    "blur": np.full((3, 3), 1 / 9, np.float64),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float64),
}

MAX_CHANNELS_SHOWN = 8


def resolve_kernel(kernel, channels=None):
    """A kernel given as a name, JSON text, a JSON file or an array -> float64 (kh, kw, C).

    A 2-D kernel is used for every channel when ``channels`` > 1.
    """
    if isinstance(kernel, str) and kernel.strip().lower() in NAMED_KERNELS:
        k = NAMED_KERNELS[kernel.strip().lower()].copy()
    elif isinstance(kernel, str):
        try:
            k = parse_array_text(kernel, "kernel")
        except ValueError as e:
            raise ValueError(f"{e}; named kernels: {', '.join(NAMED_KERNELS)}") from None
    else:
        k = np.array(kernel, dtype=np.float64)
    if k.ndim == 2:
        k = np.repeat(k[:, :, None], channels or 1, axis=2)
    if k.ndim != 3 or min(k.shape) < 1:
        raise ValueError(f"kernel must be a (kh, kw) or (kh, kw, C) nested list; received shape {k.shape}")
    if channels is not None and k.shape[2] != channels:
        raise ValueError(f"kernel has {k.shape[2]} channels but the input has {channels}")
    return k


def _model_kernel(model, layer, filter_index):
    m = load_model(model) if isinstance(model, (str, Path)) else model
    conv = conv_layer(m, layer)
    kern = conv.params["kernel"]
    f = kern.shape[3]
    if not 0 <= filter_index < f:
        raise ValueError(f"filter must be in [0, {f - 1}] for layer {conv.name!r} ({f} filters); "
                         f"received {filter_index}")
    bias = float(conv.params["bias"][filter_index]) if "bias" in conv.params else 0.0
    return kern[:, :, :, filter_index].astype(np.float64), bias, conv.name, conv


def _default_model_input(channels, size, seed):
    """A picture to run a model's filter over: a ``shapes`` drawing for grayscale, seeded noise otherwise."""
    if channels == 1:
        from ..datasets import load_shapes
        (x, _), _ = load_shapes(1, 1, image_size=max(12, size), seed=seed)
        img = images.resize(x[0], size, size).astype(np.float64)
        return img / max(float(img.max()), 1e-12)              # stretched to [0, 1]: thin strokes stay visible
    return np.random.default_rng(seed).uniform(0, 1, (size, size, channels))


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------
WINDOW_COLOUR = "#1a9e3f"     # the kernel's window and the output cell being filled (padding is orange)


def _input_scale(x, photo):
    """``(cmap, (vmin, vmax))`` for an input, the same in the animation and the summary picture.

    Small-number examples: ink on paper, the largest value dark grey (numbers
    stay readable); pictures: as they look, black to white; signed inputs:
    the diverging map centred at zero.
    """
    if x.min() < 0:
        return SIGNED_CMAP, symmetric_limits(x)
    return ("gray" if photo else "Greys"), (0.0, max(float(np.abs(x).max()), 1e-12) * (1.0 if photo else 1.4))


class _Animator:
    """One figure, redrawn per output position by updating its artists (fast: no new figure per frame)."""

    def __init__(self, xp, pads, kernel, y, records, integers, photo=False, dpi=100):
        from matplotlib.patches import Rectangle
        self.xp, self.pads, self.kernel, self.y, self.records = xp, pads, kernel, y, records
        self.integers = integers
        hp, wp, c = xp.shape
        kh, kw, _ = kernel.shape
        ho, wo = y.shape
        rows = c
        self.show_numbers = max(hp, wp, ho, wo) <= 16
        cell = (0.5 if integers else 0.62) if self.show_numbers else 0.25
        fs = 9 if integers else 7
        self.fs = fs
        width = cell * (wp + 2 * max(kw, 3) + wo) + 3.6
        panel_h = max(hp, kh, 3) * cell
        height = max(rows * (panel_h + 0.7), ho * cell + 1.6) + 1.3
        fig = self.fig = new_figure(width, height, dpi)
        gs = fig.add_gridspec(rows, 4, width_ratios=[wp, max(kw, 3), max(kw, 3), wo + 1.5],
                              left=0.05, right=0.93, top=1 - 1.15 / height, bottom=0.45 / height,
                              wspace=0.35, hspace=0.45)
        self.title = fig.suptitle("", fontsize=12, y=1 - 0.12 / height, va="top")
        self.equation = fig.text(0.5, 1 - 0.62 / height, "", ha="center", va="top", fontsize=10, family="monospace")
        t, _, l, _ = pads
        h, w = hp - pads[0] - pads[1], wp - pads[2] - pads[3]
        self.klim = symmetric_limits(kernel)
        self.plim = symmetric_limits(np.stack([r["products"] for r in records]))
        self.ylim = (float(y.min()), float(y.max()) if y.max() > y.min() else float(y.min()) + 1)
        self.taps, self.prod_images, self.prod_texts = [], [], []
        xcmap, xlim = _input_scale(xp, photo)
        for ch in range(c):
            cl = f" (channel {ch})" if c > 1 else ""
            ax = fig.add_subplot(gs[ch, 0])
            ax.imshow(xp[:, :, ch], cmap=xcmap, vmin=xlim[0], vmax=xlim[1], interpolation="nearest")
            pad_mask = np.ones((hp, wp), bool)
            pad_mask[t:t + h, l:l + w] = False
            if pad_mask.any():
                ax.imshow(np.where(pad_mask, 1.0, np.nan), cmap="Oranges", vmin=0, vmax=6, alpha=1.0,
                          interpolation="nearest")
            self._numbers(ax, xp[:, :, ch], xcmap, xlim, muted=pad_mask)
            self._ticks(ax, hp, wp, -t, -l)
            ax.set_title("input" + cl + (" + zero padding" if pad_mask.any() else ""), fontsize=10)
            ax.set_xlabel("column")
            ax.set_ylabel("row")
            taps = [ax.add_patch(Rectangle((0, 0), 1, 1, fill=False, edgecolor=WINDOW_COLOUR, lw=2.6))
                    for _ in range(kh * kw)]
            self.taps.append(taps)
            ax = fig.add_subplot(gs[ch, 1])
            ax.imshow(kernel[:, :, ch], cmap=SIGNED_CMAP, vmin=self.klim[0], vmax=self.klim[1], interpolation="nearest")
            self._numbers(ax, kernel[:, :, ch], SIGNED_CMAP, self.klim)
            self._ticks(ax, kh, kw)
            ax.set_title("kernel" + cl, fontsize=10)
            ax = fig.add_subplot(gs[ch, 2])
            im = ax.imshow(np.zeros((kh, kw)), cmap=SIGNED_CMAP, vmin=self.plim[0], vmax=self.plim[1],
                           interpolation="nearest")
            self.prod_images.append(im)
            self.prod_texts.append(self._numbers(ax, np.zeros((kh, kw)), SIGNED_CMAP, self.plim, force=True))
            self._ticks(ax, kh, kw)
            ax.set_title("input \u00d7 kernel" + cl, fontsize=10)
        ax = self.out_ax = fig.add_subplot(gs[:, 3])
        self.out_image = ax.imshow(np.full((ho, wo), np.nan), cmap=_bad_white(HEAT_CMAP), vmin=self.ylim[0],
                                   vmax=self.ylim[1], interpolation="nearest")
        colorbar(fig, self.out_image, ax, "output value")
        # The output fills up: cell k is a coloured square (and its number) drawn once, at frame k.
        norm, cmap = self.out_image.norm, self.out_image.cmap
        self.out_cells = [ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=cmap(norm(self.y[i, j])),
                                                 edgecolor="none")) for i in range(ho) for j in range(wo)]
        self.out_texts = self._numbers(ax, self.y, HEAT_CMAP, self.ylim, force=True)
        self._ticks(ax, ho, wo)
        ax.set_title("output (feature map)", fontsize=10)
        ax.set_xlabel("output column")
        ax.set_ylabel("output row")
        self.cursor = ax.add_patch(Rectangle((-0.5, -0.5), 1, 1, fill=False, edgecolor=WINDOW_COLOUR, lw=3))
        # Blitting: the static parts (input numbers, kernel, axes) are drawn once into a background; each
        # frame adds its output cell to that background, then draws only the artists that move or change.
        self.dynamic = [self.title, self.equation, self.cursor, *sum(self.taps, []), *self.prod_images,
                        *(t for ts in self.prod_texts if ts for t in ts)]
        for artist in self.dynamic + self.out_cells + (self.out_texts or []):
            artist.set_animated(True)
        self.background = None
        self.drawn = 0

    def _ticks(self, ax, h, w, r0=0, c0=0):
        step = 1 if max(h, w) <= 16 else 4
        ax.set_xticks(range(0, w, step))
        ax.set_xticklabels([str(c0 + v) for v in range(0, w, step)], fontsize=7)
        ax.set_yticks(range(0, h, step))
        ax.set_yticklabels([str(r0 + v) for v in range(0, h, step)], fontsize=7)
        ax.tick_params(length=0)

    def _numbers(self, ax, values, cmap, lim, muted=None, force=False):
        if not (self.show_numbers or force) or max(values.shape) > 16:
            return None
        texts = []
        for r in range(values.shape[0]):
            for c in range(values.shape[1]):
                colour = "#a05a00" if muted is not None and muted[r, c] else text_colour(values[r, c], *lim, cmap)
                texts.append(ax.text(c, r, format_number(values[r, c], self.integers), ha="center", va="center",
                                     fontsize=self.fs, color=colour))
        return texts

    def frame(self, index) -> np.ndarray:
        rec = self.records[index]
        kh, kw, c = self.kernel.shape
        for ch in range(c):
            for k, tap in enumerate(self.taps[ch]):
                tap.set_xy((rec["window_cols"][k % kw] - 0.5, rec["window_rows"][k // kw] - 0.5))
            prods = rec["products"][:, :, ch]
            self.prod_images[ch].set_data(prods)
            if self.prod_texts[ch]:
                for txt, v in zip(self.prod_texts[ch], prods.ravel()):
                    txt.set_text(format_number(v, self.integers))
                    txt.set_color(text_colour(v, *self.plim, SIGNED_CMAP))
        i, j = rec["row"], rec["col"]
        self.cursor.set_xy((j - 0.5, i - 0.5))
        self.title.set_text(f"output position ({i}, {j}): step {index + 1} of {len(self.records)}")
        self.equation.set_text(equation_text(rec, self.integers))
        canvas = self.fig.canvas
        if self.background is None:
            canvas.draw()
        else:
            canvas.restore_region(self.background)
        if index != self.drawn:
            raise ValueError("frames must be drawn in order, from the first")
        self.fig.draw_artist(self.out_cells[index])
        if self.out_texts:
            self.fig.draw_artist(self.out_texts[index])
        self.background = canvas.copy_from_bbox(self.fig.bbox)
        self.drawn += 1
        for artist in self.dynamic:
            self.fig.draw_artist(artist)
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _bad_white(name, bad="white"):
    import matplotlib
    return matplotlib.colormaps[name].with_extremes(bad=bad)


def equation_text(rec, integers=False) -> str:
    """``sum = 1*1 + 1*0 + ... = 4   + bias 0 = 4``: every product when few, per-channel sums otherwise."""
    fmt = lambda v: format_number(v, integers)  # noqa: E731
    prods = rec["products"]
    if prods.size <= 9:
        terms = " + ".join(fmt(v) for v in prods.ravel())
    elif prods.shape[2] > 1:
        terms = " + ".join(f"[ch{c}] {fmt(v)}" for c, v in enumerate(rec["channel_sums"]))
    else:
        terms = f"(sum of {prods.size} products)"
    if len(terms) > 110:
        terms = f"(sum of {prods.size} products)"
    return f"sum = {terms} = {fmt(rec['sum'])}      + bias {fmt(rec['bias'])}  =  {fmt(rec['value'])}"


def _summary_figure(x, kernel, y, bias, integers, photo=False):
    """Input, kernel and output side by side, each with a colour bar (and numbers when small)."""
    c = x.shape[2]
    fig = new_figure(4.8 * 3, 3.6 * min(c, MAX_CHANNELS_SHOWN) if c > 1 else 3.8, dpi=100)
    rows = c if c > 1 else 1
    gs = fig.add_gridspec(rows, 3, wspace=0.7, hspace=0.5)
    klim = symmetric_limits(kernel)
    xcmap, xlim = _input_scale(x, photo)          # the colours of the animation's input
    for ch in range(rows):
        cl = f" (channel {ch})" if c > 1 else ""
        ax = fig.add_subplot(gs[ch, 0])
        im = ax.imshow(x[:, :, ch], cmap=xcmap, vmin=xlim[0], vmax=xlim[1],
                       interpolation="nearest")
        colorbar(fig, im, ax, "pixel value")
        ax.set_title("input" + cl)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
        _annotate(ax, x[:, :, ch], integers, xcmap, xlim)
        ax = fig.add_subplot(gs[ch, 1])
        im = ax.imshow(kernel[:, :, ch], cmap=SIGNED_CMAP, vmin=klim[0], vmax=klim[1], interpolation="nearest")
        colorbar(fig, im, ax, "weight")
        ax.set_title("kernel" + cl)
        ax.set_xlabel("q")
        ax.set_ylabel("p")
        _annotate(ax, kernel[:, :, ch], integers, SIGNED_CMAP, klim)
    ax = fig.add_subplot(gs[:, 2])
    ylim = (float(y.min()), float(y.max()) if y.max() > y.min() else float(y.min()) + 1)
    im = ax.imshow(y, cmap=HEAT_CMAP, vmin=ylim[0], vmax=ylim[1], interpolation="nearest")
    colorbar(fig, im, ax, "output value")
    ax.set_title(f"output {y.shape[0]}\u00d7{y.shape[1]} (bias {format_number(bias, integers)})")
    ax.set_xlabel("output column")
    ax.set_ylabel("output row")
    _annotate(ax, y, integers, HEAT_CMAP, ylim)
    return fig


def _annotate(ax, values, integers, cmap, lim):
    h, w = values.shape
    step = 1 if max(h, w) <= 16 else 4
    ax.set_xticks(range(0, w, step))
    ax.set_yticks(range(0, h, step))
    if max(values.shape) > 12:
        return
    for r in range(values.shape[0]):
        for c in range(values.shape[1]):
            ax.text(c, r, format_number(values[r, c], integers), ha="center", va="center", fontsize=8,
                    color=text_colour(values[r, c], *lim, cmap))


# ---------------------------------------------------------------------------
# Why: an edge detector on a real picture
# ---------------------------------------------------------------------------
EDGE_KERNELS = {"horizontal edges": "sobel-y", "vertical edges": "sobel-x"}
EDGE_SIGNS = {"sobel-y": "red where the picture gets brighter downwards (the top edges of the ink), blue where it "
                         "gets darker (the bottom edges)",
              "sobel-x": "red where the picture gets brighter to the right (the left edges of the ink), blue where "
                         "it gets darker (the right edges)"}
INK = 0.5         # a pixel brighter than this (in [0, 1]) is ink
STRONG = 0.5      # a response is strong when |y| reaches this fraction of the largest |y| of its map


def ink_border(x, threshold=INK):
    """The pixels within one pixel of where ink (``x > threshold``) meets background: their 3x3 holds both."""
    ink = np.pad(np.asarray(x) > threshold, 1)
    h, w = np.shape(x)
    around = np.stack([ink[i:i + h, j:j + w] for i in range(3) for j in range(3)])
    return around.any(axis=0) & ~around.all(axis=0)


def edge_detector(x, kernels=EDGE_KERNELS):
    """Run hand-made edge kernels over a grayscale picture ``x`` (H, W) with ``Conv2D``; measure where they fire.

    Each kernel goes through :func:`convolve` ("same" padding, so every map is
    H x W like the picture). Returns ``{"maps" (K, H, W), "border" (H, W), "kernels":
    [{"name", "kernel", "strong", "on_border", "border_share", "ratio_to_others"}]}``: ``strong`` counts
    the responses with ``|y| >= STRONG * max |y|``, ``on_border`` is the fraction of them on
    :func:`ink_border`, ``border_share`` the fraction of the picture the border covers (where
    strong responses would land by chance), ``ratio_to_others`` the mean ``|y|`` of this map over
    the mean ``|y|`` of the other maps at this map's strong responses (orientation selectivity).
    """
    x = np.asarray(x, np.float64)
    names = list(kernels)
    ks = [NAMED_KERNELS[kernels[n]] for n in names]
    maps = np.stack([convolve(x[:, :, None], k[:, :, None], padding="same") for k in ks])
    border = ink_border(x)
    stats = []
    for i, name in enumerate(names):
        a = np.abs(maps[i])
        strong = a >= STRONG * a.max() if a.max() > 0 else np.zeros_like(a, bool)
        others = np.abs(np.delete(maps, i, axis=0)).mean(axis=0)
        ratio = float(a[strong].mean() / max(others[strong].mean(), 1e-12)) if strong.any() and len(ks) > 1 else None
        stats.append({"name": name, "kernel_name": kernels[name], "kernel": ks[i], "strong": int(strong.sum()),
                      "on_border": float((strong & border).sum() / max(strong.sum(), 1)),
                      "border_share": float(border.mean()), "ratio_to_others": ratio, "strong_mask": strong})
    return {"maps": maps, "border": border, "kernels": stats}


def edge_subject(dataset=None, data_dir=None, index=0, seed=0):
    """``(x (H, W), label, class name, dataset name)``: test image ``index`` of the default subject's data, in gray.

    Colour pictures become gray as the mean of their channels.
    """
    if index < 0:
        raise ValueError(f"index must be >= 0, received {index}")
    _, (xte, yte), info = load_data(dataset, data_dir, n_train=1, n_test=index + 1, seed=seed)
    if index >= len(xte):
        raise ValueError(f"index must lie in [0, {len(xte) - 1}] for the {info['name']} test split, received {index}")
    names = info.get("class_names") or []
    label = int(yte[index])
    return (np.asarray(xte[index], np.float64).mean(axis=2), label,
            names[label] if label < len(names) else str(label), info["name"])


def _edge_figure(x, found, caption):
    """The picture, then per kernel: the kernel, its feature map, and its strong responses over the picture."""
    rows = len(found["kernels"])
    fig = new_figure(16, 3.5 * rows + 0.9, dpi=100)
    gs = fig.add_gridspec(rows, 4, width_ratios=[1.15, 0.75, 1, 1], left=0.04, right=0.97,
                          top=1 - 0.75 / fig.get_figheight(), bottom=0.05, wspace=0.45, hspace=0.4)
    fig.suptitle(caption, fontsize=12)
    ax = fig.add_subplot(gs[:, 0])
    im = ax.imshow(x, cmap="gray", vmin=0, vmax=max(1.0, float(x.max())), interpolation="nearest")
    colorbar(fig, im, ax, "pixel value")
    ax.set_title("the picture", fontsize=11)
    lim = symmetric_limits(found["maps"])
    klim = symmetric_limits(np.stack([s["kernel"] for s in found["kernels"]]))
    for r, s in enumerate(found["kernels"]):
        ax = fig.add_subplot(gs[r, 1])
        im = ax.imshow(s["kernel"], cmap=SIGNED_CMAP, vmin=klim[0], vmax=klim[1], interpolation="nearest")
        _annotate(ax, s["kernel"], True, SIGNED_CMAP, klim)
        colorbar(fig, im, ax, "weight")
        ax.set_title(f"kernel for {s['name']}\n({s['kernel_name']})", fontsize=10)
        ax = fig.add_subplot(gs[r, 2])
        im = ax.imshow(found["maps"][r], cmap=SIGNED_CMAP, vmin=lim[0], vmax=lim[1], interpolation="nearest")
        colorbar(fig, im, ax, "response")
        ax.set_title(f"feature map: {s['name']}", fontsize=10)
        ax = fig.add_subplot(gs[r, 3])
        ax.imshow(x, cmap="Greys", vmin=0, vmax=3 * max(1.0, float(x.max())), interpolation="nearest")  # faint ink
        im = ax.imshow(np.where(s["strong_mask"], found["maps"][r], np.nan), cmap=_bad_white(SIGNED_CMAP, (0, 0, 0, 0)),
                       vmin=lim[0], vmax=lim[1], interpolation="nearest")       # the weak responses left clear
        ax.contour(x, levels=[INK], colors=WINDOW_COLOUR, linewidths=1.2)
        colorbar(fig, im, ax, "response")
        ax.set_title(f"strong responses: {s['on_border']:.0%} on the ink's border\n(green line: ink outline)",
                     fontsize=10)
    for ax in fig.axes:
        ax.tick_params(labelsize=7)
    return fig


def edge_text(found, what, noun) -> str:
    """One paragraph (HTML) on what the edge picture shows: ``analysis.texts.edge_responses``, every number measured."""
    sums = " and ".join(sorted({format_number(s["kernel"].sum(), True) for s in found["kernels"]}))
    signs = "; ".join(f"{s['name']}: {EDGE_SIGNS[s['kernel_name']]}" for s in found["kernels"]
                      if s["kernel_name"] in EDGE_SIGNS)
    return f"<p>{esc(texts.edge_responses(found['kernels'], what, noun, STRONG, INK, sums, signs))}</p>"


# ---------------------------------------------------------------------------
# The tool
# ---------------------------------------------------------------------------
def explain_conv(out=tool_out("conv"), image=None, kernel=None, stride=None, padding=None, dilation=None, channels=None,
                 size=8, bias=None, model=None, layer=None, filter=0, seed=0, frame_ms=700,
                 max_frames=400, dataset=None, data_dir=None, index=0) -> dict:
    """Animate one convolution step by step; write ``conv.gif``, ``conv.html``, ``conv.json`` and PNGs to ``out``.

    Then the *why*: two edge kernels on test image ``index`` of ``dataset``
    (default: MNIST when at hand, else ``shapes``), drawn in ``edge_detector.png``
    (:func:`edge_detector`).

    Args:
        out: output folder.
        image: ``None`` (the classic 5x5 example, or a seeded random example when
            ``channels`` > 1), the path of a picture (resized to ``size`` x ``size``),
            or an array / nested list of shape (H, W) or (H, W, C).
        kernel: ``None`` (the classic 3x3 "X" kernel, random for several channels), a
            name (``identity``, ``edge``, ``sobel-x``, ``sobel-y``, ``blur``, ``sharpen``,
            ``classic``), JSON text / a ``.json`` file, or an array (kh, kw) or (kh, kw, C).
        stride, dilation: int or pair. padding: ``"valid"``, ``"same"``, int or pair. Defaults: 1,
            ``"valid"``, 1 -- or, for a model's filter, those of its layer.
        channels: input channels (default: 1, or the channels of the image, kernel or model filter).
        size: side of a picture loaded from a path (and of the default input for a model's filter).
        bias: added to every sum (default 0, or the model filter's bias).
        model, layer, filter: take the kernel (and bias) from filter ``filter`` of conv layer
            ``layer`` (default: the first) of a trained model (run folder or ``.safetensors``).
        seed: seed of the random examples.
        frame_ms: display time of one frame in the GIF and the page's player.
        max_frames: refuse inputs with more output positions than this (one frame each).
        dataset, data_dir, index: the data and test image of the edge detector.

    Returns the content of ``conv.json`` plus ``"files"`` (name -> path).
    """
    out = out_dir(out)
    rng = np.random.default_rng(seed)
    source = {}
    model_bias = None
    if model is not None:
        k, model_bias, layer_name, conv_layer = _model_kernel(model, layer, int(filter))
        stride = conv_layer.strides if stride is None else stride
        dilation = conv_layer.dilation if dilation is None else dilation
        padding = conv_layer.padding if padding is None else padding
        source.update(model=str(model), layer=layer_name, filter=int(filter), kernel="model filter")
        if kernel is not None:
            raise ValueError("give either a kernel or a model filter, not both")
        kernel = k
    # The input image.
    if isinstance(image, (str, Path)) and not str(image).lstrip().startswith("[") \
            and Path(image).suffix.lower() != ".json":
        want = channels or (np.asarray(kernel).shape[2] if kernel is not None and not isinstance(kernel, str)
                            and np.asarray(kernel).ndim == 3 else 1)
        x = load_image(image, size=size, channels=want).astype(np.float64)
        source["image"] = str(image)
    elif image is not None:
        x = parse_array_text(image, "input") if isinstance(image, str) else np.array(image, np.float64)
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3:
            raise ValueError(f"input must be (H, W) or (H, W, C); received shape {x.shape}")
        source["image"] = "given"
    elif model is not None:
        x = _default_model_input(np.asarray(kernel).shape[2], size, seed)
        source["image"] = "shapes example" if x.shape[2] == 1 else "random"
    elif (channels or 1) == 1:
        x = np.array(CLASSIC_IMAGE, np.float64)[:, :, None]
        source["image"] = "classic"
    else:
        x = rng.integers(0, 3, (5, 5, channels)).astype(np.float64)
        source["image"] = "random"
    if channels is not None and x.shape[2] != channels:
        raise ValueError(f"the input has {x.shape[2]} channels but channels={channels} was asked for")
    c = x.shape[2]
    if c > MAX_CHANNELS_SHOWN:
        raise ValueError(f"the animation shows at most {MAX_CHANNELS_SHOWN} input channels; this input has {c}")
    if kernel is None:
        kernel = NAMED_KERNELS["classic"] if c == 1 else rng.integers(-1, 2, (3, 3, c)).astype(np.float64)
        source.setdefault("kernel", "classic" if c == 1 else "random")
    elif isinstance(kernel, str):
        source["kernel"] = kernel if kernel.strip().lower() in NAMED_KERNELS else "given"
    else:
        source.setdefault("kernel", "given")
    kernel = resolve_kernel(kernel, c)
    bias = float(model_bias if bias is None and model_bias is not None else (bias or 0.0))
    stride = check_pair("stride", 1 if stride is None else stride)
    dilation = check_pair("dilation", 1 if dilation is None else dilation)
    padding = parse_padding("valid" if padding is None else padding)
    kh, kw, _ = kernel.shape
    pads, (ho, wo) = window_geometry(x.shape[:2], (kh, kw), stride, padding, dilation, "explain conv")
    if ho * wo > max_frames:
        raise ValueError(f"the output has {ho}x{wo} = {ho * wo} positions, one frame each, more than "
                         f"max_frames={max_frames}; use a smaller image size or a larger stride")

    y, pads, records = conv_steps(x, kernel, bias, stride, padding, dilation)
    xp = pad_hw(x[None], pads)[0]
    integers = is_integral(x, kernel, bias)

    photo = source.get("image") not in ("classic", "random", "given")
    anim = _Animator(xp, pads, kernel, y, records, integers, photo)
    frames = quantize_frames([anim.frame(i) for i in range(len(records))],
                             colormap_colours([SIGNED_CMAP, HEAT_CMAP, "gray" if photo else "Greys", "Oranges"]))
    frames_png = [images.encode_png(f) for f in frames]
    files = {"gif": out / "conv.gif", "html": out / "conv.html", "json": out / "conv.json",
             "output_png": out / "conv_output.png", "first_step_png": out / "conv_step_first.png",
             "edge_png": out / "edge_detector.png"}
    n_frames = save_gif(frames, files["gif"], duration_ms=frame_ms, last_ms=max(frame_ms, 2500))
    from .._io import atomic_write
    atomic_write(files["first_step_png"], frames_png[0])
    summary_png = save_figure(_summary_figure(x, kernel, y, bias, integers, photo), files["output_png"])

    # The why: hand-made edge kernels on a real picture of the default subject.
    picture, label, class_name, data_name = edge_subject(dataset, data_dir, int(index), seed)
    found = edge_detector(picture)
    what = f"test image #{index} of {data_name} (class {class_name}, {picture.shape[0]}\u00d7{picture.shape[1]})"
    edge_png = save_figure(_edge_figure(picture, found, f"Edge detectors on {what}"), files["edge_png"])
    edges = {"dataset": data_name, "index": int(index), "label": label, "class_name": class_name,
             "description": what, "image": picture, "maps": found["maps"], "ink_threshold": INK,
             "strong_fraction": STRONG,
             "kernels": [{k: v for k, v in st.items() if k != "strong_mask"} for st in found["kernels"]],
             "text": edge_text(found, what, data_noun(data_name))}

    squeeze = (lambda a: a[..., 0]) if c == 1 else (lambda a: a)  # noqa: E731
    result = {
        "input": squeeze(x), "kernel": squeeze(kernel), "output": y, "bias": bias,
        "stride": list(stride), "padding": padding if isinstance(padding, str) else padding,
        "pads": list(pads), "dilation": list(dilation), "channels": c,
        "input_shape": list(x.shape), "kernel_shape": list(kernel.shape), "output_shape": list(y.shape),
        "frames": n_frames, "source": source, "edges": edges,
        "positions": [{"row": r["row"], "col": r["col"], "window_rows": r["window_rows"],
                       "window_cols": r["window_cols"], "products": squeeze(r["products"]),
                       "sum": r["sum"], "bias": r["bias"], "value": r["value"]} for r in records],
        "notes": ("input is (H, W) for one channel, (H, W, C) otherwise; window_rows/window_cols index the "
                  "padded input (pads = top, bottom, left, right); value = sum + bias = output[row][col]"),
    }
    save_json(files["json"], result)
    gif_bytes = files["gif"].read_bytes()
    _write_page(files["html"], result, frames_png, gif_bytes, summary_png, edge_png, records, integers, frame_ms)
    result["files"] = {k: str(v) for k, v in files.items()}
    return ExplainResult(result, "The convolution step", out, [files["gif"].name, files["output_png"].name,
                                                              files["edge_png"].name],
                         texts.conv_step(kernel.shape[:2], x.shape[:2], y.shape) + " "
                         + texts.edge_summary(edges["description"], edges["kernels"]))


def _write_page(path, result, frames_png, gif_bytes, summary_png, edge_png, records, integers, frame_ms):
    fmt = lambda v: format_number(v, integers)  # noqa: E731
    player, script = frame_player(frames_png, "conv", "convolution step",
                                  [f"step {i + 1} of {len(records)}: output ({r['row']}, {r['col']}) = "
                                   f"{fmt(r['value'])}"
                                   for i, r in enumerate(records)], interval_ms=frame_ms)
    ho, wo = result["output_shape"]
    kh, kw, c = result["kernel_shape"]
    params = table_html(["setting", "value"], [
        ["input shape (H, W, C)", " x ".join(map(str, result["input_shape"]))],
        ["kernel shape (kh, kw, C)", " x ".join(map(str, result["kernel_shape"]))],
        ["stride", str(tuple(result["stride"]))], ["padding", f"{result['padding']} -> pads (top, bottom, left, right) "
                                                               f"{tuple(result['pads'])}"],
        ["dilation", str(tuple(result["dilation"]))], ["bias", fmt(result["bias"])],
        ["output shape", f"{ho} x {wo}"], ["source", ", ".join(f"{k}: {v}" for k, v in result["source"].items())]])
    rows = [[f"({r['row']}, {r['col']})", f"rows {r['window_rows']}, cols {r['window_cols']}", fmt(r["sum"]),
             fmt(r["bias"]), fmt(r["value"])] for r in records[:64]]
    steps = table_html(["output cell", "window (padded coordinates)", "sum of products", "bias", "output"], rows)
    more = (f'<p class="note">First 64 of {len(records)} positions; all are in conv.json.</p>'
            if len(records) > 64 else "")
    intro = (
        "<p>A convolution layer slides a small grid of weights, the <em>kernel</em>, over the image. At every "
        "position it multiplies each weight by the pixel under it, adds the products up (over all input "
        "channels too), adds a bias, and writes the result into one cell of the output, the <em>feature map</em>. "
        "The same weights are used at every position: the layer is one small neuron looking at every patch.</p>"
        "<pre>y[i, j] = b + \u03a3_p \u03a3_q \u03a3_c "
        "x_pad[i\u00b7s_h + p\u00b7d_h, j\u00b7s_w + q\u00b7d_w, c] \u00b7 k[p, q, c]"
        "\nH_out = \u230a(H + pad_top + pad_bottom \u2212 d_h\u00b7(kh \u2212 1) \u2212 1) / s_h\u230b + 1</pre>"
        "<p class=\"note\">As in every deep-learning library, the kernel is not flipped (this is cross-correlation). "
        "Zero padding (orange cells) lets the window reach the border; a stride skips positions; dilation "
        "spreads the taps apart.</p><p>That is how a convolution computes. Why it is useful is shown below the "
        f"steps: two edge kernels on a real {data_noun(result['edges']['dataset'])} light up where its ink has "
        "edges.</p>")
    sections = [
        ("Step through it", "<p>Use the buttons, the slider or the arrow keys. The green squares are the input "
                            "pixels the kernel touches; the green box in the output is the cell being filled. "
                            "Orange cells are zero padding.</p>"
                            + player),
        ("The result", img_tag(summary_png, "input, kernel and output")),
        (f"Why: edge detectors on {result['edges']['description']}",
         img_tag(edge_png, "edge kernels and their feature maps") + result["edges"]["text"]),
        ("Settings", params),
        ("Every position", steps + more),
        ("Animated GIF", img_tag(gif_bytes, "convolution animation", mime="image/gif")
         + f'<p class="note">{result["frames"]} frames, one per output position. Files: conv.gif, conv_output.png, '
           "conv_step_first.png, edge_detector.png, conv.json.</p>"),
    ]
    write_html(path, "Convolution, one step at a time", sections, intro, script)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def add_parser(subparsers):
    p = subparsers.add_parser(
        "conv", help="animate the convolution step (kernel sliding, products, sums, output)",
        description="Animate a convolution: at each output position show the window, the element-wise products, "
                    "their sum plus bias and the output filling up; then two edge kernels on a test image of the "
                    "default data (MNIST when on disk, else shapes). Writes conv.gif, conv.html, conv.json, PNGs.")
    p.add_argument("--out", default=tool_out("conv"), help=f"output folder (default ./{tool_out('conv')})")
    p.add_argument("--image", help="a picture file (resized to --size) or a nested list as JSON text")
    p.add_argument("--size", type=int, default=8, help="side of a loaded picture in pixels (default 8)")
    p.add_argument("--channels", type=int, help="input channels (a random example when no --image is given)")
    p.add_argument("--kernel", help="JSON nested list (or .json file) or a name: " + ", ".join(NAMED_KERNELS))
    p.add_argument("--bias", type=float, help="bias added to every sum (default 0, or the model filter's bias)")
    p.add_argument("--stride", help="stride: s or sh,sw (default 1, or the --layer's)")
    p.add_argument("--padding", help="valid, same, p or ph,pw (default valid, or the --layer's)")
    p.add_argument("--dilation", help="dilation: d or dh,dw (default 1, or the --layer's)")
    p.add_argument("--model", help="take the kernel from a trained model (run folder or .safetensors)")
    p.add_argument("--layer", help="convolution layer of --model (default: the first)")
    p.add_argument("--filter", type=int, default=0, help="filter index in --layer (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random examples (default 0)")
    p.add_argument("--frame-ms", type=int, default=700, help="milliseconds per frame (default 700)")
    p.add_argument("--max-frames", type=int, default=400, help="refuse more output positions than this (default 400)")
    p.add_argument("--dataset", help="data of the edge detector's picture: mnist, fashion-mnist, cifar10, shapes or a "
                   "folder (default: MNIST when on disk, else shapes)")
    p.add_argument("--data-dir", help="where the dataset's files are")
    p.add_argument("--index", type=int, default=0, help="which test image the edge detector runs on (default 0)")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args):
    res = explain_conv(out=args.out, image=args.image, kernel=args.kernel, stride=args.stride, padding=args.padding,
                       dilation=args.dilation, channels=args.channels, size=args.size, bias=args.bias,
                       model=args.model, layer=args.layer, filter=args.filter, seed=args.seed,
                       frame_ms=args.frame_ms, max_frames=args.max_frames, dataset=args.dataset,
                       data_dir=args.data_dir, index=args.index)
    ho, wo = res["output_shape"]
    print(f"convolution: input {tuple(res['input_shape'])}, kernel {tuple(res['kernel_shape'])}, "
          f"output {ho}x{wo}, {res['frames']} frames")
    e = res["edges"]
    print(f"edge detectors on {e['description']}: " + ", ".join(
        f"{k['name']} {k['on_border']:.0%} of strong responses on the ink's border" for k in e["kernels"]))
    for k, v in res["files"].items():
        print(f"  {k:15s} {v}")
    return 0
