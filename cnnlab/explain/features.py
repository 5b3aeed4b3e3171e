"""What a trained CNN computes, layer by layer: feature maps, first-layer filters and how they were learned.

``explain_features`` runs one image through every layer and draws each
layer's output as a grid of feature maps (one tile per channel, one colour
scale shared by the whole layer, so tiles can be compared), then the learned
first-layer filters (a diverging colour map centred at zero: red where the
filter adds the pixel, blue where it subtracts it) and, when snapshots taken
during training exist, an animation of those filters from their random
initialization to the end of training. :func:`describe_filters` says what
each first-layer filter is, measured from its weights: an oriented edge, a
bar, a blob, or none of these clearly (as at a random start).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import images
from ..analysis import texts
from ..analysis.layers import feature_maps, first_conv, statistics
from .._io import CnnlabFileError
from ..analysis.filters import filter_change
from . import common
from .result import ExplainResult
from .subject import (add_common_arguments, model_argument, pick_input, read_filter_snapshots, resolve_subject,
                      shape_text, softmax1, stderr_log)


def grid_shape(n, max_cols=8):
    cols = min(max_cols, max(1, int(np.ceil(np.sqrt(n)))))
    return int(np.ceil(n / cols)), cols


def mosaic(tiles, cols, gap=1, top=0):
    """Tiles (n, h, w) laid out ``cols`` per row, separated by NaN gaps (drawn as the background).

    ``top`` blank rows above every row of tiles leave room for labels.
    """
    n, h, w = tiles.shape
    rows = -(-n // cols)
    step = top + h + gap
    m = np.full((rows * step - gap, cols * (w + gap) - gap), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        m[r * step + top:r * step + top + h, c * (w + gap):c * (w + gap) + w] = tiles[i]
    return m


def _labels_above(ax, labels, h, w, cols, top, gap=1, fontsize=7):
    """Labels centred in the blank band ``mosaic(..., top=top)`` leaves above each tile."""
    for i, text in enumerate(labels):
        r, c = divmod(i, cols)
        ax.text(c * (w + gap) + (w - 1) / 2, r * (top + h + gap) + top / 2 - 0.5, text, fontsize=fontsize,
                ha="center", va="center", color="#333")


def value_scale(a):
    """``(cmap, vmin, vmax)``: diverging and centred at 0 when ``a`` has both signs, else sequential from 0."""
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if lo < 0 < hi or (lo < 0 and hi <= 0):
        vmin, vmax = common.symmetric_limits(a)
        return common.SIGNED_CMAP, vmin, vmax
    return common.HEAT_CMAP, min(lo, 0.0), (hi if hi > 0 else 1.0)


def plot_feature_maps(layer, a, max_maps=64, class_names=None):
    """One figure for one layer's output: a grid of maps (3-D) or the vector (1-D), with a colour bar."""
    a = np.asarray(a, np.float64)
    kind = type(layer).__name__
    shape_txt = "\u00d7".join(map(str, a.shape))
    if a.ndim == 3:
        c = a.shape[2]
        shown = min(c, max_maps)
        tiles = np.moveaxis(a[:, :, :shown], 2, 0)
        rows, cols = grid_shape(shown)
        fig = common.new_figure(min(1.25 * cols + 1.4, 12), 1.25 * rows + 0.9)
        ax = fig.add_subplot(1, 1, 1)
        cmap, vmin, vmax = value_scale(a)
        import matplotlib
        cm = matplotlib.colormaps[cmap].with_extremes(bad="white")
        top = max(1, -(-a.shape[0] // 6))                 # a blank band above each map for its channel number
        im = ax.imshow(mosaic(tiles, cols, top=top), cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
        _labels_above(ax, [f"ch {i}" for i in range(shown)], a.shape[0], a.shape[1], cols, top)
        ax.set_xticks([])
        ax.set_yticks([])
        more = f", first {shown} of {c} channels" if shown < c else ""
        ax.set_title(f"{layer.name} ({kind}): output {shape_txt}{more}\none map per channel, one colour scale",
                     fontsize=10)
        common.colorbar(fig, im, ax, "activation")
        return fig
    v = a.ravel()
    if v.size <= 64:
        fig = common.new_figure(min(max(4.0, 0.32 * v.size + 1.5), 12), 2.8)
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(np.arange(v.size), v, color=np.where(v >= 0, "#c0392b", "#2c6fbb"))
        ax.axhline(0, color="black", lw=0.6)
        names = class_names if class_names is not None and len(class_names) == v.size else None
        ax.set_xticks(np.arange(v.size))
        ax.set_xticklabels(names if names else [str(i) for i in range(v.size)],
                           rotation=45 if names else 0, ha="right" if names else "center", fontsize=7)
        ax.set_xlabel("class" if names else "unit")
        ax.set_ylabel("value")
        ax.set_title(f"{layer.name} ({kind}): output {shape_txt}", fontsize=10)
        return fig
    width = 32 if v.size >= 256 else 16
    rows = -(-v.size // width)
    strip = np.full(rows * width, np.nan)
    strip[:v.size] = v
    fig = common.new_figure(7, max(1.5, 0.16 * rows + 1.1))
    ax = fig.add_subplot(1, 1, 1)
    cmap, vmin, vmax = value_scale(v)
    import matplotlib
    cm = matplotlib.colormaps[cmap].with_extremes(bad="white")
    im = ax.imshow(strip.reshape(rows, width), cmap=cm, vmin=vmin, vmax=vmax, aspect="auto",
                   interpolation="nearest")
    ax.set_xlabel(f"position in the row (unit = row start + 0..{width - 1})")
    ticks = np.arange(0, rows, max(1, rows // 6))
    ax.set_yticks(ticks)
    ax.set_yticklabels([str(t * width) for t in ticks])
    ax.set_ylabel("row start (unit index)")
    ax.set_title(f"{layer.name} ({kind}): output {shape_txt} (vector, {width} per row)", fontsize=10)
    common.colorbar(fig, im, ax, "activation")
    return fig


# ---------------------------------------------------------------------------
# First-layer filters and their evolution
# ---------------------------------------------------------------------------
def filter_tiles(kernel):
    """Kernel (kh, kw, C, F) -> tiles (F*C, kh, kw), filter-major, with labels ``f3`` or ``f3 c1``."""
    kh, kw, c, f = kernel.shape
    tiles = np.transpose(kernel, (3, 2, 0, 1)).reshape(f * c, kh, kw)
    labels = [f"{j}" if c == 1 else f"{j}:{ch}" for j in range(f) for ch in range(c)]
    return tiles, labels


def _draw_filters(fig, kernel, title, limits=None, where=(1, 1, 1), label="weight (0 = white)"):
    import matplotlib
    kernel = np.asarray(kernel, np.float64)
    tiles, labels = filter_tiles(kernel)
    c = kernel.shape[2]
    cols = c * max(1, min(kernel.shape[3], max(1, 16 // c))) if c > 1 else grid_shape(len(tiles), 8)[1]
    ax = fig.add_subplot(*where)
    vmin, vmax = limits if limits is not None else common.symmetric_limits(kernel)
    cm = matplotlib.colormaps[common.SIGNED_CMAP].with_extremes(bad="white")
    top = max(1.0, kernel.shape[0] / 4)
    top = int(np.ceil(top))
    im = ax.imshow(mosaic(tiles, cols, top=top), cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    _labels_above(ax, labels, kernel.shape[0], kernel.shape[1], cols, top, fontsize=6 if c > 1 else 7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    common.colorbar(fig, im, ax, label)
    return ax


def _filters_figsize(kernel):
    kh, kw, c, f = kernel.shape
    n = f * c
    cols = c * max(1, min(f, max(1, 16 // c))) if c > 1 else grid_shape(n, 8)[1]
    rows = -(-n // cols)
    scale = 0.75 if kh <= 7 else 1.1
    return (min(max(cols * scale + 1.8, 4.5), 12), rows * scale * 1.25 + 1.0)


def plot_filters(kernel, title):
    """The filters of a convolution (kh, kw, C, F) as a grid, diverging colours centred at 0, with a colour bar."""
    fig = common.new_figure(*_filters_figsize(np.asarray(kernel)))
    _draw_filters(fig, kernel, title)
    return fig


# What a filter is, measured: each filter's cosine similarity with templates of oriented edges, bars and a blob.
ANGLES = np.arange(0.0, 180.0, 22.5)     # template orientations, degrees anticlockwise from horizontal (as drawn)
DIRECTIONS = {0: "horizontal", 45: "diagonal /", 90: "vertical", 135: "diagonal \\"}
CHANCE = 95                               # a match counts when it beats this percentile of random filters' matches


def shape_templates(kh, kw):
    """Unit-norm templates of a ``kh x kw`` filter: ``([(kind, angle, array)], blob)``.

    On a Gaussian window ``g`` of width ``s = max(kh, kw) / 4`` around the centre,
    with ``u`` the signed distance across a line at ``angle``: an *edge* is ``u g``
    (dark on one side, bright on the other), a *bar* is ``(1 - u^2 / s^2) g`` minus
    its mean (a bright line on dark), the *blob* is ``g`` itself (a bright spot).
    """
    r, c = np.mgrid[0:kh, 0:kw]
    x, y = c - (kw - 1) / 2, (kh - 1) / 2 - r                 # y points up, as the picture is seen
    s = max(kh, kw) / 4
    g = np.exp(-(x ** 2 + y ** 2) / (2 * s * s))
    out = []
    for angle in ANGLES:
        t = np.radians(angle + 90)                            # the direction across the line
        u = x * np.cos(t) + y * np.sin(t)
        for kind, tm in (("edge", u * g), ("bar", (1 - u ** 2 / s ** 2) * g)):
            tm = tm - tm.mean()
            out.append((kind, float(angle), tm / np.linalg.norm(tm)))
    return out, g / np.linalg.norm(g)


def _matches(k, templates, blob):
    """``(|cosine| with each oriented template, signed cosine with the blob)`` of one 2-D filter."""
    k = k / max(float(np.linalg.norm(k)), 1e-12)
    return np.array([abs(float((k * t).sum())) for _, _, t in templates]), float((k * blob).sum())


def chance_levels(kh, kw, samples=2000, seed=0):
    """The ``CHANCE``-th percentile of the best oriented match and of the blob match of random Gaussian filters."""
    templates, blob = shape_templates(kh, kw)
    rng = np.random.default_rng(seed)
    found = [_matches(rng.standard_normal((kh, kw)), templates, blob) for _ in range(samples)]
    return (float(np.percentile([m.max() for m, _ in found], CHANCE)),
            float(np.percentile([abs(b) for _, b in found], CHANCE)))


def describe_filters(kernel) -> dict:
    """What each filter of a convolution (kh, kw, C, F) is, measured from its weights.

    Each filter (summed over its input channels: its response to gray
    patterns) is compared with :func:`shape_templates` by cosine similarity. It
    is an ``edge`` or a ``bar`` at the best template's orientation when that
    match beats ``CHANCE`` % of random filters of its size, a ``blob`` when its
    match with the blob does (whichever beats its chance level by more), and
    ``none`` otherwise. ``direction`` is the nearest of horizontal, vertical and
    the two diagonals (``angle`` is the template's own). Returns ``{"filters": [{"filter", "kind", "angle",
    "direction", "oriented_cosine", "blob_cosine"}], "chance": {"oriented",
    "blob"}, "channels"}``.
    """
    kernel = np.asarray(kernel, np.float64)
    kh, kw, c, f = kernel.shape
    templates, blob = shape_templates(kh, kw)
    t_or, t_blob = chance_levels(kh, kw)
    rows = []
    for j in range(f):
        scores, b = _matches(kernel[:, :, :, j].sum(axis=2), templates, blob)
        best = int(scores.argmax())
        kind, angle, _ = templates[best]
        if not (scores[best] >= t_or and scores[best] - t_or >= abs(b) - t_blob):
            kind = ("bright blob" if b > 0 else "dark blob") if abs(b) >= t_blob else "none"
        direction = DIRECTIONS[int(45 * round(angle / 45)) % 180]      # ties (22.5, 67.5, ...) round to 0 or 90
        rows.append({"filter": j, "kind": kind, "angle": angle, "direction": direction,
                     "oriented_cosine": float(scores[best]), "blob_cosine": b})
    return {"filters": rows, "chance": {"oriented": t_or, "blob": t_blob}, "channels": c, "percentile": CHANCE,
            "directions": list(DIRECTIONS.values())}


def filters_table(described) -> str:
    """Each filter's best match, as an HTML table."""
    return common.table_html(
        ["filter", "what it is", "best orientation", "cosine with that edge or bar", "cosine with the blob"],
        [[r["filter"], r["kind"], f"{r['direction']} ({r['angle']:g}\u00b0)", f"{r['oriented_cosine']:.2f}",
          f"{r['blob_cosine']:+.2f}"] for r in described["filters"]])


def plot_filter_change(change, layer_name="conv"):
    """One line per filter: its relative change from initialization against the optimizer step."""
    fig = common.new_figure(6.5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    steps, per = change["steps"], np.asarray(change["per_filter"])
    for f in range(per.shape[1]):
        ax.plot(steps, per[:, f], lw=1, alpha=0.7, marker=".", ms=3)
    ax.plot(steps, change["total"], color="black", lw=2.2, label="all filters together")
    ax.axvline(change["half_step"], color="gray", ls=":", lw=1, label=f"half the change by step {change['half_step']:,}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("||k_t - k_0|| / ||k_0||")
    ax.set_title(f"{layer_name}: how far each filter moved from its random start (one line per filter)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def filter_evolution_frames(snapshots, layer_name="conv"):
    """One RGB frame per snapshot: the filters (left) and what training added so far, ``k_t - k_0`` (right).

    Each half has one colour scale shared by all frames, so a colour means the
    same weight in every frame; the step is in the title.
    """
    steps = list(snapshots)
    kernels = [np.asarray(snapshots[s], np.float64) for s in steps]
    limits = common.symmetric_limits(np.stack(kernels))
    d_limits = common.symmetric_limits(np.stack(kernels) - kernels[0])
    w, h = _filters_figsize(kernels[0])
    frames = []
    for i, (s, k) in enumerate(zip(steps, kernels)):
        fig = common.new_figure(2 * w, h + 0.4)
        fig.set_layout_engine("constrained")          # frames are drawn whole: keep the colour bars inside
        when = "before training" if s == 0 else f"snapshot {i + 1} of {len(steps)}"
        _draw_filters(fig, k, f"{layer_name} at step {s:,} ({when})", limits, where=(1, 2, 1))
        _draw_filters(fig, k - kernels[0], f"change since step 0: k(step {s:,}) \u2212 k(0)", d_limits,
                      where=(1, 2, 2), label="weight change")
        frames.append(common.figure_rgb(fig))
    return frames


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------
def _safe(name):
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def explain_features(out, model=None, image=None, index=0, dataset=None, data_dir=None, snapshots=None,
                     max_maps=64, invert="auto", center="auto", seed=0, log=None) -> dict:
    """Feature maps of every layer, the first-layer filters and their evolution, for one image.

    Args:
        out: output folder (created).
        model: ``Sequential``, run directory or ``.safetensors`` file; ``None`` trains the demo model (the zoo's ``tiny_cnn``) now.
        image: path of a picture (resized to the model's input); default test image ``index``.
        snapshots: ``filters.safetensors`` path or ``{step: kernel}``; default the run's
            ``filters.safetensors``, or the snapshots taken while training the demo model.
        max_maps: at most this many channels per layer grid.

    Writes ``input.png``, ``maps_NN_<layer>.png`` per layer, ``filters.png``,
    ``filters_evolution.gif`` (when snapshots exist), ``features.json`` and
    ``features.html``; returns the JSON content.
    """
    out = common.out_dir(out)
    subject = resolve_subject(model, dataset, data_dir, seed=seed, log=log)
    net = subject.model
    x, label, source = pick_input(subject, image, index, invert, center)
    if isinstance(snapshots, (str, Path)):
        snapshots = read_filter_snapshots(snapshots)
    elif snapshots is None:
        snapshots = subject.snapshots
    if not subject.class_names or len(subject.class_names) != net.num_classes:
        subject.class_names = [str(i) for i in range(net.num_classes)]
    try:
        conv = first_conv(net)
    except ValueError:                                      # no convolution: no filters to draw
        conv = None
    if snapshots and conv is not None:
        first = np.asarray(next(iter(snapshots.values())))
        if tuple(first.shape) != tuple(conv.params["kernel"].shape):
            raise CnnlabFileError(f"filter snapshots have shape {tuple(first.shape)}, but {conv.name} has "
                                  f"{tuple(conv.params['kernel'].shape)}: they belong to another model")
    maps = feature_maps(net, x)
    probs = softmax1(maps[-1][1])
    pred = int(np.argmax(probs))
    files, sections = [], []

    # the input
    fig = common.new_figure(3.2, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    im = common.show_image(ax, x, cmap=common.IMAGE_CMAP, vmin=0, vmax=1)
    truth = f", true: {subject.class_name(label)}" if label is not None else ""
    ax.set_title(f"input {x.shape[0]}\u00d7{x.shape[1]}\u00d7{x.shape[2]}{truth}\n"
                 f"predicted: {subject.class_name(pred)} ({probs[pred]:.1%})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if x.shape[2] == 1:
        common.colorbar(fig, im, ax, "pixel value")
    input_png = common.save_figure(fig, out / "input.png")
    files.append("input.png")

    # every layer
    layers_json, layer_imgs = [], []
    for i, (layer, a) in enumerate(maps):
        stats = statistics(layer, a)
        name = f"maps_{i:02d}_{_safe(layer.name)}.png"
        is_last = i == len(maps) - 1
        fig = plot_feature_maps(layer, a, max_maps, subject.class_names if is_last else None)
        png = common.save_figure(fig, out / name)
        stats.update(index=i, png=name)
        layers_json.append(stats)
        layer_imgs.append((stats, png))
        files.append(name)

    # first-layer filters
    filters_json, filters_png = None, None
    if conv is not None:
        k = conv.params["kernel"]
        fig = plot_filters(k, f"learned filters of {conv.name}: {k.shape[3]} filters of "
                              f"{k.shape[0]}\u00d7{k.shape[1]}\u00d7{k.shape[2]}")
        filters_png = common.save_figure(fig, out / "filters.png")
        files.append("filters.png")
        filters_json = {"layer": conv.name, "shape": list(k.shape), "min": float(k.min()), "max": float(k.max()),
                        "png": "filters.png", "described": describe_filters(k)}

    # evolution
    evolution, gif_bytes = None, None
    if snapshots and conv is not None:
        frames = filter_evolution_frames(snapshots, conv.name)
        n = common.save_gif(frames, out / "filters_evolution.gif", duration_ms=500, last_ms=2000)
        gif_bytes = (out / "filters_evolution.gif").read_bytes()
        files.append("filters_evolution.gif")
        change = filter_change(snapshots)
        change_png = common.save_figure(plot_filter_change(change, conv.name), out / "filters_change.png")
        files.append("filters_change.png")
        per_final = np.asarray(change["per_filter"])[-1]
        evolution = {"gif": "filters_evolution.gif", "change_png": "filters_change.png", "steps": change["steps"],
                     "frames": n, "relative_change": float(change["total"][-1]), "half_step": change["half_step"],
                     "relative_change_per_filter": [float(v) for v in per_final]}

    result = {
        "model": subject.description, "input_shape": list(net.input_shape), "num_params": net.num_params,
        "image": {"source": source, "label": label, "label_name": subject.class_name(label) if label is not None else None},
        "prediction": {"class": pred, "class_name": subject.class_name(pred), "probability": float(probs[pred]),
                       "probabilities": [float(p) for p in probs]},
        "layers": layers_json, "filters": filters_json, "evolution": evolution,
        "files": files + ["features.json", "features.html"],
    }
    common.save_json(out / "features.json", result)

    # the page
    esc = common.esc
    intro = (f"<p>Model: <b>{esc(subject.description)}</b>. Data: <b>{esc(subject.data_name)}</b>. "
             f"Input: {esc(source)}.</p><p>Each layer turns its input "
             "into a stack of <i>feature maps</i>: a convolution slides the same small filter over every position, "
             "so a map is bright wherever the filter's pattern occurs. Pooling shrinks the maps and keeps the "
             "strongest responses; dense layers combine everything into class scores.</p>")
    sections.append(("Input and prediction", common.img_tag(input_png, "input image", width="280px") +
                     f"<p>Predicted <b>{esc(subject.class_name(pred))}</b> with probability {probs[pred]:.3f}.</p>"))
    if filters_png is not None:
        body = common.img_tag(filters_png, "first-layer filters") + (
            "<p class='note'>Red weights add the pixel under them, blue ones subtract it, white is zero. A filter "
            "with a red band next to a blue band responds to an edge in that direction; an L-shaped pattern to a "
            f"corner. These filters were trained on {esc(subject.data_name)}; see below how much of each is learned "
            "and how much is left of its random start.</p>"
            f"<p>{esc(texts.filters_caption(filters_json['described']))}</p>"
            f"<details><summary>each filter's best match</summary>{filters_table(filters_json['described'])}</details>")
        if gif_bytes is not None:
            ev = evolution
            body += ("<h3>How the filters were learned</h3>" + common.img_tag(gif_bytes, "filter evolution",
                     mime="image/gif") + "<p class='note'>" + esc(texts.filter_evolution(
                         len(ev["steps"]), ev["steps"][0], ev["steps"][-1], ev["relative_change"],
                         ev["relative_change_per_filter"], ev["half_step"])) + "</p>" +
                     common.img_tag(change_png, "change per filter"))
        else:
            body += "<p class='note'>No filter snapshots were recorded for this model (train with " \
                    "<code>--snapshot-filters N</code> to see their evolution).</p>"
        sections.append(("First-layer filters", body))
    rows = [(s["index"], s["name"], s["type"], shape_text(s["output_shape"]), f"{s['min']:.3g}",
             f"{s['max']:.3g}", f"{s['mean']:.3g}", f"{s['fraction_zero']:.1%}") for s in layers_json]
    sections.append(("Layer statistics", common.table_html(
        ["#", "layer", "type", "output", "min", "max", "mean", "zeros"], rows) +
        "<p class='note'>After a ReLU a large fraction of exact zeros is normal: each map is silent "
        "where its pattern is absent.</p>"))
    body = "".join(f"<h3>{esc(s['name'])} ({esc(s['type'])}) \u2014 {shape_text(s['output_shape'])}"
                   f"</h3>{common.img_tag(png, s['name'])}" for s, png in layer_imgs)
    sections.append(("Feature maps, layer by layer", body))
    common.write_html(out / "features.html", "Feature maps and filters", sections, intro=intro)
    return ExplainResult(result, "Feature maps and filters", out, [f for f in files if f.endswith(".png")])


def _cli(args):
    result = explain_features(args.out, model=model_argument(args), image=args.image, index=args.index, dataset=args.dataset,
                              data_dir=args.data_dir, snapshots=args.snapshots, max_maps=args.max_maps,
                              **images.options_from(args), seed=args.seed, log=stderr_log)
    p = result["prediction"]
    print(f"predicted {p['class_name']} ({p['probability']:.3f}); {len(result['layers'])} layers; "
          f"wrote {Path(args.out) / 'features.html'}")
    return 0


def add_parser(subparsers):
    """``cnnlab explain features``."""
    p = subparsers.add_parser(
        "features", help="feature maps of every layer, the learned filters and their evolution",
        description="Draw every layer's feature maps for one image, the first-layer filters, and (from "
                    "filters.safetensors snapshots) an animation of the filters during training. Writes PNGs, "
                    "filters_evolution.gif, features.json and a self-contained features.html.")
    add_common_arguments(p, "features")
    p.add_argument("--snapshots", metavar="FILE", help="filters.safetensors with first-layer kernel snapshots "
                   "(default: the run's own)")
    p.add_argument("--max-maps", type=int, default=64, help="at most this many channels per layer (default 64)")
    p.set_defaults(func=_cli)
    return p
