r"""Convolution as template matching: a filter responds most where the input looks like it.

The output of a convolution at one position is the dot product of the kernel
with the patch under it, ``<k, p> = |k| |p| cos(k, p)``: for patches of similar
brightness it is largest where the patch points the same way as the kernel.
Sliding a *template* over an image this way is the classic matched filter of
signal processing; its response map peaks where the template was planted,
even in heavy noise, because the noise is uncorrelated with the template.
Normalized cross-correlation divides out the patch's mean and contrast, so
bright regions cannot win by brightness alone.

A trained first-layer filter is such a template, learned: the input patches
that activate it most are those most similar to it (high cosine).
:func:`explain_matched_filter` shows both.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..images import resize
from ..analysis import texts
from ..analysis.layers import conv_layer, layer_inputs
from ..analysis.patches import cross_correlate, normalized_cross_correlate, top_patches
from .common import (HEAT_CMAP, IMAGE_CMAP, SIGNED_CMAP, colorbar, esc, img_tag, load_image,
                     new_figure, out_dir, save_figure, save_json, symmetric_limits, table_html,
                     write_html)
from .result import ExplainResult
from .subject import add_model_arguments, model_argument, resolve_subject, tool_out


def cross_template(size=7, thickness=1):
    """A plus-shaped template: ones on the middle row and column, zeros elsewhere."""
    t = np.zeros((size, size))
    a = (size - thickness) // 2
    t[a:a + thickness, :] = 1
    t[:, a:a + thickness] = 1
    return t


def _place(rng, shape, box, taken, tries=500):
    """A top-left corner for a ``box`` (h, w) inside ``shape`` that overlaps no rectangle in ``taken``."""
    h, w = shape
    bh, bw = box
    for _ in range(tries):
        r, c = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        if all(r + bh + 2 <= r2 or r2 + h2 + 2 <= r or c + bw + 2 <= c2 or c2 + w2 + 2 <= c
               for r2, c2, h2, w2 in taken):
            taken.append((r, c, bh, bw))
            return r, c
    raise ValueError(f"could not place a {bh}x{bw} shape in a {h}x{w} image without overlap; use a larger --size")


def planted_scene(template, size=48, noise=0.35, distractors=3, seed=0, background=None):
    """Plant ``template`` at a seeded random position of a noisy image, with a few distractor strokes.

    Returns ``(image, (row, col))``, the true top-left corner. Distractors are
    straight strokes as long as the template: partial matches that a good
    matched filter must rank below the real thing.
    """
    rng = np.random.default_rng(seed)
    t = np.asarray(template, np.float64)
    th, tw = t.shape
    if background is None:
        img = np.zeros((size, size))
    else:
        img = np.array(background, np.float64)
    h, w = img.shape
    if th > h or tw > w:
        raise ValueError(f"the template ({th}x{tw}) is larger than the image ({h}x{w})")
    taken = []
    pos = _place(rng, (h, w), (th, tw), taken)
    img[pos[0]:pos[0] + th, pos[1]:pos[1] + tw] += t
    amp = float(t.max()) if t.max() > 0 else 1.0
    for k in range(distractors):
        horizontal = k % 2 == 0
        box = (1, tw) if horizontal else (th, 1)
        try:
            r, c = _place(rng, (h, w), box, taken)
        except ValueError:
            break
        img[r:r + box[0], c:c + box[1]] += amp
    img += rng.standard_normal(img.shape) * noise
    return img, pos


def _peak(resp):
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(resp)), resp.shape))


def _second_peak(resp, peak, radius):
    """Largest response farther than ``radius`` from the peak (how clearly the peak wins)."""
    r = resp.copy()
    i, j = peak
    r[max(0, i - radius):i + radius + 1, max(0, j - radius):j + radius + 1] = -np.inf
    return float(r.max()) if np.isfinite(r.max()) else None


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------
def _scene_figure(img, template, resp, ncc, true_pos, peak, ncc_peak):
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator
    th, tw = template.shape
    fig = new_figure(20, 5.6, dpi=90)
    axes = fig.subplots(1, 4, gridspec_kw={"wspace": 0.6, "width_ratios": [1, 0.55, 1, 1]})

    def mark(ax, pos, colour, label, shift=(0, 0), box=True):
        if pos is None:
            return
        r, c = pos[0] + shift[0], pos[1] + shift[1]
        true = colour == "lime"
        if box:
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), tw, th, fill=False, edgecolor=colour, lw=3.5 if true else 1.6,
                                   ls="-" if true else "--", label=label))
        else:
            ax.plot(c, r, marker="o" if true else "x", ms=14 if true else 9, mfc="none", mec=colour,
                    mew=2.5 if true else 2, ls="none", label=label)

    ax = axes[0]
    im = ax.imshow(img, cmap=IMAGE_CMAP, interpolation="nearest")
    colorbar(fig, im, ax, "pixel value")
    mark(ax, true_pos, "lime", "planted (true)")
    mark(ax, peak, "red", "response peak")
    ax.set_title("noisy image with the planted template")
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    _legend_below(ax)
    ax = axes[1]
    lim = symmetric_limits(template)
    im = ax.imshow(template, cmap=SIGNED_CMAP, vmin=lim[0], vmax=lim[1], interpolation="nearest")
    colorbar(fig, im, ax, "weight")
    ax.set_title(f"template = kernel ({th}\u00d7{tw})")
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    for a in axes:                                     # pixel positions are whole numbers
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, m, title, pk, label in ((axes[2], resp, "cross-correlation (what Conv2D computes)", peak, "response"),
                                    (axes[3], ncc, "normalized cross-correlation", ncc_peak, "NCC")):
        lim = symmetric_limits(m)
        im = ax.imshow(m, cmap=SIGNED_CMAP if m.min() < 0 else HEAT_CMAP,
                       vmin=lim[0] if m.min() < 0 else None, vmax=lim[1] if m.min() < 0 else None,
                       interpolation="nearest")
        colorbar(fig, im, ax, label)
        mark(ax, true_pos, "lime", f"true {tuple(true_pos)}" if true_pos else None, box=False)
        mark(ax, pk, "red", f"peak {tuple(pk)}", box=False)
        ax.set_title(title)
        ax.set_xlabel("window left column j")
        ax.set_ylabel("window top row i")
        _legend_below(ax)
    return fig


def _legend_below(ax):
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)


def _filters_figure(filters, layer_name):
    rows = len(filters)
    k = max(len(f["top_patches"]) for f in filters) if filters else 0
    height = 1.75 * rows + 1.7
    fig = new_figure(max(1.45 * (k + 1) + 0.6, 7.5), height, dpi=90)
    # one row per filter, then a thin row for the two colour keys
    gs = fig.add_gridspec(rows + 1, k + 1, hspace=0.75, wspace=0.25, top=1 - 0.65 / height,
                          height_ratios=[1] * rows + [0.12])
    fig.suptitle(f"layer {layer_name!r}: each filter (left) and the {k} input patches that activate it most",
                 fontsize=11)
    klim = symmetric_limits(np.stack([f["kernel"] for f in filters]))
    all_p = [p["patch"] for f in filters for p in f["top_patches"]]
    plo = min(float(p.min()) for p in all_p) if all_p else 0.0
    phi = max(float(p.max()) for p in all_p) if all_p else 1.0
    for r, f in enumerate(filters):
        ax = fig.add_subplot(gs[r, 0])
        kern = f["kernel"]
        if kern.shape[2] == 3:
            ax.imshow((kern - klim[0]) / (klim[1] - klim[0]), interpolation="nearest")
        else:
            ax.imshow(kern.mean(axis=2), cmap=SIGNED_CMAP, vmin=klim[0], vmax=klim[1], interpolation="nearest")
        ax.set_title(f"filter {f['index']}", fontsize=9)
        ax.set_xlabel(f"cosine with random\npatches: {f['random_cosine_mean']:+.2f}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        for c, p in enumerate(f["top_patches"]):
            ax = fig.add_subplot(gs[r, c + 1])
            patch = p["patch"]
            if patch.shape[2] == 3:
                ax.imshow(np.clip((patch - plo) / max(phi - plo, 1e-12), 0, 1), interpolation="nearest")
            else:
                ax.imshow(patch.mean(axis=2), cmap=IMAGE_CMAP, vmin=plo, vmax=phi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"cosine {p['cosine']:.2f}\noutput {p['activation']:.2f}", fontsize=8)
            if r == 0:
                ax.set_title(f"#{c + 1}", fontsize=9)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    half = max((k + 1) // 2, 1)
    for cols, cmap, lim, label in (
            (slice(0, half), SIGNED_CMAP, klim, "filter weight: red adds the pixel, blue subtracts it"),
            (slice(half, k + 1), IMAGE_CMAP, (plo, phi), "patch pixel: dark to bright")):
        cax = fig.add_subplot(gs[rows, cols])
        fig.colorbar(ScalarMappable(Normalize(*lim), cmap), cax=cax, orientation="horizontal")
        cax.set_xlabel(label, fontsize=8)
        cax.tick_params(labelsize=7)
    return fig


# ---------------------------------------------------------------------------
# The tool
# ---------------------------------------------------------------------------
def explain_matched_filter(out=tool_out("matched-filter"), image=None, template=None, size=48, template_size=None, noise=0.35,
                           distractors=3, model=None, layer=None, dataset=None, data_dir=None, n_samples=500,
                           top_k=5, seed=0) -> dict:
    """Template matching with a convolution, and trained filters seen as learned templates.

    Part 1: a template (default a 7x7 cross; ``template`` a picture path or an
    array) is planted at a seeded random position of a noisy ``size`` x ``size``
    image (or the user's ``image``, resized to ``size`` on its longest side).
    Without a template the user's image gets a patch of itself as template. The
    response map (cross-correlation, via ``Conv2D``) and the normalized
    cross-correlation are drawn with the true and peak positions (top-left
    corners of the window; ``None`` when unknown because both image and
    template were given).

    Part 2: the first convolution of ``model`` (run folder or ``.safetensors``;
    default: the demo model trained now, :func:`cnnlab.explain.subject.resolve_subject`),
    or ``layer``: for each filter the ``top_k`` most activating patches of the
    first ``n_samples`` test images of ``dataset`` (default: the run's, else
    MNIST when on disk, else ``shapes``), with kernel-patch cosines.

    Writes ``matched_filter.json``, ``matched_filter_response.png``,
    ``matched_filter_filters.png`` and ``matched_filter.html`` to ``out``.
    """
    out = out_dir(out)
    files = {"json": out / "matched_filter.json", "html": out / "matched_filter.html",
             "response_png": out / "matched_filter_response.png", "filters_png": out / "matched_filter_filters.png"}
    rng = np.random.default_rng(seed)
    source = {}

    # ---- Part 1: a planted template.
    if template is None:
        tmpl = None
    elif isinstance(template, (str, Path)):
        tmpl = load_image(template, size=template_size, channels=1)[:, :, 0].astype(np.float64)
        source["template"] = str(template)
    else:
        tmpl = np.array(template, np.float64)
        source["template"] = "given"
    if image is not None:
        if isinstance(image, (str, Path)):
            full = load_image(image, channels=1)
            h0, w0 = full.shape[:2]
            scale = size / max(w0, h0)
            img0 = resize(full, max(1, round(h0 * scale)), max(1, round(w0 * scale)))[:, :, 0].astype(np.float64)
            source["image"] = str(image)
        else:
            img0 = np.array(image, np.float64)
            source["image"] = "given"
        if tmpl is None:                     # a patch of the image itself, from a textured place, plus noise
            ts = template_size or max(5, min(img0.shape) // 6)
            if ts > min(img0.shape):
                raise ValueError(f"template_size {ts} is larger than the image {img0.shape}")
            cands = [(int(rng.integers(0, img0.shape[0] - ts + 1)), int(rng.integers(0, img0.shape[1] - ts + 1)))
                     for _ in range(200)]
            true_pos = max(cands, key=lambda rc: img0[rc[0]:rc[0] + ts, rc[1]:rc[1] + ts].std())
            tmpl = img0[true_pos[0]:true_pos[0] + ts, true_pos[1]:true_pos[1] + ts].copy()
            img = img0 + rng.standard_normal(img0.shape) * noise * max(float(img0.std()), 1e-3)
            source["template"] = "patch of the image"
        else:
            img, true_pos = img0, None
    else:
        if tmpl is None:
            tmpl = cross_template(template_size or 7)
            source["template"] = "cross"
        img, true_pos = planted_scene(tmpl, size, noise, distractors, seed)
        source["image"] = f"noise sigma {noise} + {distractors} distractor strokes"
    if tmpl.shape[0] > img.shape[0] or tmpl.shape[1] > img.shape[1]:
        raise ValueError(f"the template {tmpl.shape} is larger than the image {img.shape}")
    resp = cross_correlate(img, tmpl)
    ncc = normalized_cross_correlate(img, tmpl)
    peak, ncc_peak = _peak(resp), _peak(ncc)
    radius = max(tmpl.shape) // 2
    response_png = save_figure(_scene_figure(img, tmpl, resp, ncc, true_pos, peak, ncc_peak), files["response_png"])

    # ---- Part 2: trained filters.
    subject = resolve_subject(model, dataset, data_dir, seed=seed)
    m, model_name, data_name = subject.model, subject.description, subject.data_name
    conv = conv_layer(m, layer)
    xs = subject.test_split(n_samples)[0]
    xin = layer_inputs(m, conv, xs)
    filters = top_patches(conv, xin, k=top_k, seed=seed)
    filters_png = save_figure(_filters_figure(filters, conv.name), files["filters_png"])

    result = {
        "true_position": list(true_pos) if true_pos is not None else None,
        "peak_position": list(peak), "ncc_peak_position": list(ncc_peak),
        "position_convention": "(row, col) of the template window's top-left corner in the image",
        "true_center": [true_pos[0] + tmpl.shape[0] // 2, true_pos[1] + tmpl.shape[1] // 2] if true_pos else None,
        "peak_center": [peak[0] + tmpl.shape[0] // 2, peak[1] + tmpl.shape[1] // 2],
        "peak_response": float(resp.max()), "second_peak_response": _second_peak(resp, peak, radius),
        "ncc_peak": float(ncc.max()), "ncc_second_peak": _second_peak(ncc, ncc_peak, radius),
        "image_shape": list(img.shape), "template": tmpl, "noise": noise, "seed": seed, "source": source,
        "model": model_name, "layer": conv.name, "samples": {"dataset": data_name, "n": int(len(xs))},
        "filters": [{"index": f["index"], "bias": f["bias"], "kernel": f["kernel"],
                     "mean_top_cosine": f["mean_top_cosine"], "random_cosine_mean": f["random_cosine_mean"],
                     "random_cosine_std": f["random_cosine_std"],
                     "top_patches": [{k: v for k, v in p.items() if k != "patch"} for p in f["top_patches"]]}
                    for f in filters],
    }
    save_json(files["json"], result)
    _write_page(files["html"], result, response_png, filters_png)
    result["files"] = {k: str(v) for k, v in files.items()}
    return ExplainResult(result, "Convolution as template matching", out,
                         [files["response_png"].name, files["filters_png"].name], _why_cosines(result))


def _why_cosines(r) -> str:
    """Why a top-patch cosine well below 1 still means "matching" (``analysis.texts.top_patch_cosines``)."""
    fs = [f for f in r["filters"] if f["top_patches"]]
    if not fs:
        return ""
    return texts.top_patch_cosines(float(np.mean([f["mean_top_cosine"] for f in fs])),
                                   float(np.mean([f["random_cosine_mean"] for f in fs])),
                                   float(np.mean([f["random_cosine_std"] for f in fs])))


def _write_page(path, r, response_png, filters_png):
    tp = tuple(r["true_position"]) if r["true_position"] else "unknown"
    found = r["true_position"] is not None and r["peak_position"] == r["true_position"]
    sp = r["second_peak_response"]
    intro = (
        "<p>At each position a convolution outputs the dot product of its kernel with the patch under it: "
        "<code>&lt;k, p&gt; = |k| |p| cos(k, p)</code>. It is largest where the patch <em>looks like</em> the "
        "kernel. Used this way a kernel is a <b>template</b>, and the feature map is a map of where the template "
        "matches: the matched filter of signal processing, optimal for finding a known shape in white noise.</p>")
    table = table_html(["", "row, col"], [
        ["planted (true) position", str(tp)], ["cross-correlation peak", str(tuple(r["peak_position"]))],
        ["normalized cross-correlation peak", str(tuple(r["ncc_peak_position"]))]])
    s1 = (img_tag(response_png, "image, template and response maps") + table
          + f"<p>Peak response {r['peak_response']:.2f}"
          + (f"; the best response away from it is {sp:.2f}" if sp is not None else "")
          + f". Peak NCC {r['ncc_peak']:.2f} (1 would be a perfect match). "
          + ("The peak is exactly at the planted position. " if found else "")
          + "Positions are the top-left corner of the template's window; a response map is smaller than the "
            "image by the template size minus one (valid positions only).</p>"
            "<p class=\"note\">Raw cross-correlation also grows with the patch's brightness, so a bright blob can "
            "beat a faint perfect match; normalized cross-correlation removes each patch's mean and divides by "
            "its contrast, leaving only the shape similarity (a cosine).</p>")
    rows = [[f["index"], f"{f['mean_top_cosine']:.2f}",
             f"{f['random_cosine_mean']:+.2f} \u00b1 {f['random_cosine_std']:.2f}",
             f"{max(p['activation'] for p in f['top_patches']):.2f}" if f["top_patches"] else "-"]
            for f in r["filters"]]
    s2 = (f"<p>Model: {esc(r['model'])}; layer <code>{esc(r['layer'])}</code>; patches from {r['samples']['n']} "
          f"{esc(r['samples']['dataset'])} images (at most one per image per filter). Under each patch: the cosine "
          "between kernel and patch, and the filter's output (activation, bias included).</p>"
          + img_tag(filters_png, "filters and their most activating patches")
          + table_html(["filter", "mean cosine, top patches", "cosine, random patches", "top activation"], rows)
          + "<p>The most activating patches point the same way as the kernel (high cosine), unlike random "
            f"patches: a trained filter is a template for the local pattern it detects. {esc(_why_cosines(r))} They do "
            "not reach 1 because a filter is not a picture of one patch: it is a compromise among all the patches "
            "it must respond to, and a patch also holds parts of other strokes.</p>")
    write_html(path, "Convolution as template matching", [("Finding a planted template", s1),
                                                          ("Trained filters are learned templates", s2),
                                                          ("Numbers", "<p>Everything above is in "
                                                                      "<code>matched_filter.json</code>.</p>")],
               intro)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def add_parser(subparsers):
    p = subparsers.add_parser(
        "matched-filter", help="convolution as template matching; trained filters and their top patches",
        description="Plant a template in a noisy image and find it with a convolution (response map, peak vs "
                    "true position); show each trained first-layer filter's most activating patches.")
    p.add_argument("--out", default=tool_out("matched-filter"),
                   help=f"output folder (default ./{tool_out('matched-filter')})")
    p.add_argument("--image", help="your picture (resized to --size on its longest side)")
    p.add_argument("--template", help="your template picture (default: a 7x7 cross, or a patch of --image)")
    p.add_argument("--size", type=int, default=48, help="image side in pixels (default 48)")
    p.add_argument("--template-size", type=int, help="resize the template to this side")
    p.add_argument("--noise", type=float, default=0.35, help="noise standard deviation (default 0.35)")
    p.add_argument("--distractors", type=int, default=3, help="distractor strokes (default 3)")
    add_model_arguments(p)                                              # --model, --runs: the default subject
    p.add_argument("--layer", help="convolution layer (default: the first)")
    p.add_argument("--dataset", help="images for the top patches (default: the run's dataset, else MNIST when on "
                   "disk, else shapes)")
    p.add_argument("--data-dir", help="where the dataset's files are")
    p.add_argument("--samples", type=int, default=500, help="images searched for top patches (default 500)")
    p.add_argument("--top-k", type=int, default=5, help="patches per filter (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_cli)
    return p


def run_cli(args):
    r = explain_matched_filter(out=args.out, image=args.image, template=args.template, size=args.size,
                               template_size=args.template_size, noise=args.noise, distractors=args.distractors,
                               model=model_argument(args), layer=args.layer, dataset=args.dataset, data_dir=args.data_dir,
                               n_samples=args.samples, top_k=args.top_k, seed=args.seed)
    print(f"template matching: true position {r['true_position']}, response peak {r['peak_position']}, "
          f"NCC peak {r['ncc_peak_position']}")
    print(f"layer {r['layer']}: mean cosine of top patches "
          + ", ".join(f"{f['mean_top_cosine']:.2f}" for f in r["filters"]))
    for k, v in r["files"].items():
        print(f"  {k:13s} {v}")
    return 0
