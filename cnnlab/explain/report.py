"""``cnnlab report RUN_DIR``: one self-contained HTML page about a training run.

The page gathers what a run directory holds and what its model does on the
test split: the training curves (``history.json``), the confusion matrix
(``evaluation.json``, or computed now by evaluating the model), the test
images the model gets wrong with the most confidence, the first-layer filters
(and their evolution, from ``filters.safetensors``), feature maps of a few
test images, the model summary and the training configuration. Every picture
is inlined as a base64 ``data:`` URI, so the file opens from disk in any
browser with no server and no network. The numbers behind the page are also
embedded as JSON (``<script type="application/json" id="report-data">``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import images
from .._io import CnnlabFileError
from ..layers import Conv2D
from ..analysis import texts
from ..analysis.layers import feature_maps, kind
from ..plots import plot_confusion, plot_history
from ..runs import files
from ..runs.evaluation import confusion_matrix
from . import common
from ..analysis.filters import filter_change
from .features import describe_filters, filter_evolution_frames, filters_table, plot_filters
from .subject import fit_class_names, load_data, log_to, run_config, run_data, stderr_log


# ---------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------
def confident_mistakes(probs, y, n=16):
    """Indices of the wrongly classified examples, most confident (highest predicted probability) first."""
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    order = np.argsort(-probs[wrong, pred[wrong]], kind="stable")
    return wrong[order][:n]


MISTAKE_FONT = 10        # points: the captions under each mistake stay readable when the page is read


def plot_mistakes(x, y, probs, idx, class_names):
    """The misclassified images, each captioned with its true class, the predicted one and its probability."""
    cols = min(5, max(len(idx), 1))
    rows = -(-len(idx) // cols)
    fig = common.new_figure(2.2 * cols, 2.8 * rows + 0.5)        # 11 inches: about the page's width at 100 dpi
    fig.set_layout_engine("constrained")
    for j, i in enumerate(idx):
        ax = fig.add_subplot(rows, cols, j + 1)
        common.show_image(ax, x[i], cmap="gray", vmin=0, vmax=1)
        p = int(probs[i].argmax())
        ax.set_xlabel(f"true: {class_names[int(y[i])]}\npred: {class_names[p]} ({probs[i, p]:.1%})",
                      fontsize=MISTAKE_FONT, color="#b00000")
        ax.set_title(f"test #{i}", fontsize=MISTAKE_FONT - 1, color="#555555")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Most confident mistakes: true class, predicted class (its probability)", fontsize=12)
    return fig


def _map_layers(model):
    """The layers whose maps the sample figure shows: first conv (after its activation) and the last spatial layer."""
    spatial = [i for i, l in enumerate(model.layers) if len(l.output_shape) == 3]
    convs = [i for i, l in enumerate(model.layers) if isinstance(l, Conv2D)]
    if not convs:
        return []
    first = convs[0]
    if first + 1 < len(model.layers) and kind(model.layers[first + 1]) == "activation":
        first += 1
    last = max(i for i in spatial)
    return [first] if last == first else [first, last]


def plot_sample_maps(model, samples, class_names, layer_index, per_layer=8):
    """Rows: sample images; columns: the image and the first channels of one layer, on one colour scale."""
    outs = [feature_maps(model, x)[layer_index] for x, _ in samples]
    layer = outs[0][0]
    maps = np.stack([a for _, a in outs])
    shown = min(per_layer, maps.shape[3])
    vmin, vmax = min(0.0, float(maps.min())), float(maps.max()) or 1.0
    cmap = common.HEAT_CMAP
    if vmin < 0:
        cmap, (vmin, vmax) = common.SIGNED_CMAP, common.symmetric_limits(maps)
    ncols = 1 + shown
    fig = common.new_figure(1.35 * ncols + 1.0, 1.45 * len(samples) + 0.6)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(len(samples), ncols, squeeze=False)
    im = None
    for r, (x, label) in enumerate(samples):
        common.show_image(axes[r, 0], x, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(f"input: {class_names[label]}", fontsize=8)
        for c in range(shown):
            im = axes[r, c + 1].imshow(maps[r, :, :, c], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            axes[r, c + 1].set_title(f"channel {c}", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    common.colorbar(fig, im, list(axes.ravel()), "activation")
    more = f", first {shown} of {maps.shape[3]} channels" if shown < maps.shape[3] else ""
    fig.suptitle(f"{layer.name} ({type(layer).__name__}), maps of {maps.shape[1]}x{maps.shape[2]}{more}; "
                 "one colour scale", fontsize=9)
    return fig


def kv_table(rows) -> str:
    """A two-column table of settings: names as row headers, values left-aligned."""
    body = "".join(f"<tr><th style='text-align:left'>{common.esc(k)}</th><td style='text-align:left'>"
                   f"{common.esc(v)}</td></tr>" for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
def _out_path(run_dir, out):
    if out is None:
        return run_dir / "report.html"
    out = Path(out)
    if out.suffix.lower() in (".html", ".htm"):
        return out
    return common.out_dir(out) / "report.html"


def write_report(run_dir, out=None, dataset=None, data_dir=None, limit=None, mistakes=15, samples=3,
                 log=None) -> Path:
    """Write the HTML report of a run directory; returns the path written (``RUN_DIR/report.html`` by default).

    Args:
        run_dir: a run directory (``model.safetensors`` and the files written by ``cnnlab train``).
        out: an ``.html`` file or a folder for ``report.html``.
        dataset, data_dir: evaluate on this data instead of the run's own (``config.json``).
        limit: evaluate only the first ``limit`` test images.
        mistakes: how many confidently misclassified images to show; samples: images for feature maps.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnlabFileError(f"run directory {run_dir} does not exist")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be a positive integer, received {limit}")
    model = common.load_model(run_dir)
    config = run_config(run_dir)
    history = files.read_history(run_dir, missing_ok=True)
    evaluation = files.read_evaluation(run_dir, missing_ok=True)
    state = files.read_state(run_dir, missing_ok=True)
    k = model.num_classes
    notes = []

    # the test data
    ds, dd, options = run_data(run_dir, dataset, data_dir)
    test, class_names = None, [str(i) for i in range(k)]
    if ds:
        try:
            _, (xte, yte), info = load_data(ds, dd, n_train=1, n_test=limit, options=options)
            if tuple(info["input_shape"]) != tuple(model.input_shape):
                raise ValueError(f"its images have shape {tuple(info['input_shape'])}, the model expects "
                                 f"{tuple(model.input_shape)}")
            test = (xte, yte)
            class_names = fit_class_names(info.get("class_names"), k)
        except (CnnlabFileError, ValueError, OSError) as e:
            notes.append(f"The test data ({ds}) could not be loaded, so the sections that need it are left out: {e}")
            if dataset is not None:
                raise
    else:
        notes.append(f"No dataset is recorded for this run ({files.CONFIG_FILE} is missing); pass --dataset to "
                     "evaluate.")
    if evaluation and evaluation.get("class_names") and len(evaluation["class_names"]) == k:
        class_names = [str(c) for c in evaluation["class_names"]]

    data = {"run_dir": str(run_dir), "model": model.name, "num_params": model.num_params,
            "dataset": ds, "class_names": class_names}
    sections, scripts = [], []
    esc = common.esc

    # overview
    rows = [("model", f"{model.name} ({model.num_params:,} parameters)"), ("dataset", ds or "unknown")]
    if history and history.get("loss"):
        rows.append(("epochs trained", len(history["loss"])))
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            vals = [v for v in history.get(key) or [] if v is not None]
            if vals:
                rows.append((f"final {key.replace('_', ' ')}", f"{vals[-1]:.4f}"))
        if history.get("val_accuracy") and any(v is not None for v in history["val_accuracy"]):
            va = [v if v is not None else -1 for v in history["val_accuracy"]]
            best = int(np.argmax(va))
            rows.append(("best validation accuracy", f"{va[best]:.4f} (epoch {best + 1})"))
    if state and state.get("status"):
        rows.append(("status", state["status"]))

    # evaluation on the test split
    probs = None
    matrix, acc, source = None, None, None
    if test is not None:
        log_to(log, f"evaluating on {len(test[0])} test images of {ds} ...")
        probs = model.predict(test[0])
        pred = probs.argmax(axis=1)
        acc = float(np.mean(pred == test[1]))
        data["evaluated"] = {"num_images": int(len(test[1])), "accuracy": acc}
    if evaluation and dataset is None and limit is None:
        matrix = np.asarray(evaluation["confusion_matrix"], np.int64)
        acc_e = evaluation.get("accuracy")
        source = (f"from {files.EVALUATION_FILE} ({evaluation.get('num_images', int(matrix.sum()))} images"
                  + (f", accuracy {acc_e:.4f}" if isinstance(acc_e, (int, float)) else "") + ")")
        acc = float(acc_e) if isinstance(acc_e, (int, float)) else float(np.trace(matrix) / max(matrix.sum(), 1))
    elif probs is not None:
        matrix = confusion_matrix(test[1], probs.argmax(axis=1), k)
        source = f"computed now on {'the first ' if limit else ''}{len(test[1])} test images of {ds}"
    if acc is not None:
        rows.append((f"test accuracy ({int(matrix.sum()):,} images)", f"{acc:.4f}"))
    sections.append(("Overview", kv_table(rows) +
                     "".join(f"<p class='note'>{esc(n)}</p>" for n in notes)))

    if history and history.get("loss"):
        sections.append(("Training curves", common.img_tag(common.figure_png(plot_history(history)), "training curves")
                         + f"<p class='note'>From {files.HISTORY_JSON}. A validation curve that turns up while the training "
                           "curve keeps falling is the sign of overfitting.</p>"))
        data["history"] = {key: history.get(key) for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")}
    else:
        sections.append(("Training curves", f"<p class='note'>{files.HISTORY_JSON} is missing or empty.</p>"))

    if matrix is not None:
        if matrix.shape != (k, k):
            raise CnnlabFileError(f"{run_dir / files.EVALUATION_FILE}: the confusion matrix is {matrix.shape}, "
                                  f"the model has {k} classes")
        png = common.figure_png(plot_confusion(matrix, class_names, f"confusion matrix, accuracy {acc:.2%}"))
        table = common.table_html(["true \\ predicted"] + class_names,
                                  [[class_names[i]] + [int(v) for v in matrix[i]] for i in range(k)])
        per_class = [(class_names[i], int(matrix[i].sum()), f"{matrix[i, i] / matrix[i].sum():.3f}"
                      if matrix[i].sum() else "-") for i in range(k)]
        sections.append(("Confusion matrix", common.img_tag(png, "confusion matrix") +
                         f"<p class='note'>Rows: true class; columns: predicted class; {esc(source)}.</p>" +
                         f"<details><summary>counts as a table, and accuracy per class</summary>{table}"
                         f"{common.table_html(['class', 'test images', 'accuracy'], per_class)}</details>"))
        data["confusion_matrix"] = matrix.tolist()
        data["confusion_source"] = source
        data["accuracy"] = acc

    if probs is not None:
        x, y = test
        idx = confident_mistakes(probs, y, mistakes)
        data["mistakes"] = [{"index": int(i), "true": int(y[i]), "predicted": int(probs[i].argmax()),
                             "probability": float(probs[i].max())} for i in idx]
        if len(idx):
            png = common.figure_png(plot_mistakes(x, y, probs, idx, class_names))
            sections.append(("Most confident mistakes", common.img_tag(png, "misclassified test images") +
                             f"<p class='note'>{int(np.sum(probs.argmax(1) != y))} of {len(y)} test images are "
                             "misclassified; these are the ones the model was surest about. Many are ambiguous or "
                             "mislabelled; the others show what the model has not learned.</p>"))
        else:
            sections.append(("Most confident mistakes", "<p>No test image is misclassified.</p>"))

    convs = [l for l in model.layers if isinstance(l, Conv2D)]
    if convs:
        kern = convs[0].params["kernel"]
        body = common.img_tag(common.figure_png(plot_filters(kern, f"{convs[0].name}: {kern.shape[3]} filters of "
                                                                   f"{kern.shape[0]}x{kern.shape[1]}x{kern.shape[2]}")),
                              "first-layer filters")
        described = describe_filters(kern)
        data["first_layer_filters"] = described
        body += (f"<p>{esc(texts.filters_caption(described))}</p><p class='note'>Red weights add the pixel, blue subtract "
                 "it (white = 0).</p>")
        body += f"<details><summary>each filter's best match</summary>{filters_table(described)}</details>"
        if files.has_filter_snapshots(run_dir):
            try:
                snaps = files.read_filter_snapshots(run_dir)
                if next(iter(snaps.values())).shape != kern.shape:
                    raise CnnlabFileError(f"{run_dir / files.FILTERS_FILE}: snapshots do not match {convs[0].name}'s kernel {kern.shape}")
                frames = filter_evolution_frames(snaps, convs[0].name)
                player, script = common.frame_player([images.encode_png(f) for f in frames], "filters",
                                                     "filter snapshot", [f"step {s:,}" for s in snaps])
                moved = filter_change(snaps)
                body += (f"<h3>How they were learned ({len(snaps)} snapshots)</h3>{player}<p class='note'>From step "
                         f"{moved['steps'][0]:,} to step {moved['steps'][-1]:,} the filters moved by "
                         f"{moved['total'][-1]:.0%} of their size at the first snapshot.</p>")
                scripts.append(script)
                data["filter_snapshots"] = list(snaps)
            except CnnlabFileError as e:
                body += f"<p class='note'>{esc(e)}</p>"
        sections.append(("First-layer filters", body))

    if test is not None and samples > 0:
        x, y = test
        picked, seen = [], set()
        for i in range(len(y)):
            if int(y[i]) not in seen:
                seen.add(int(y[i]))
                picked.append((x[i], int(y[i])))
            if len(picked) == samples:
                break
        figs = [plot_sample_maps(model, picked, class_names, i) for i in _map_layers(model)]
        if figs:
            sections.append(("Feature maps of sample images",
                             "".join(common.img_tag(common.figure_png(f), "feature maps") for f in figs) +
                             "<p class='note'>Each convolution filter, slid over the image, lights up where its "
                             "pattern occurs; deeper maps are coarser and respond to combinations of patterns.</p>"))

    sections.append(("Model", f"<pre>{esc(model.summary(print_fn=None))}</pre>"))
    if config:
        crow = [(key, json.dumps(v) if isinstance(v, (dict, list)) else ("null" if v is None else v))
                for key, v in config.items()]
        sections.append(("Training configuration", kv_table(crow)))
    else:
        sections.append(("Training configuration", f"<p class='note'>{files.CONFIG_FILE} is missing.</p>"))

    payload = json.dumps(common.to_jsonable(data)).replace("</", "<\\/")
    heading, body = sections[-1]
    sections[-1] = (heading, body + f'<script type="application/json" id="report-data">{payload}</script>')
    path = _out_path(run_dir, out)
    intro = (f"<p class='note'>Run directory <code>{esc(run_dir.resolve())}</code>. Everything on this page is in "
             "this one file: it needs no server and no network.</p>")
    common.write_html(path, f"Training report: {run_dir.resolve().name}", sections, intro=intro,
                      script="\n".join(scripts))
    return path


def _cli(args):
    path = write_report(args.run_dir, out=args.out, dataset=args.dataset, data_dir=args.data_dir, limit=args.limit,
                        log=stderr_log)
    print(f"wrote {path}")
    return 0


def add_parser(subparsers):
    """``cnnlab report RUN_DIR``."""
    p = subparsers.add_parser(
        "report", help="one self-contained HTML page about a training run",
        description="Write RUN_DIR/report.html: training curves, confusion matrix, the most confident mistakes, "
                    "first-layer filters, feature maps of sample images, the model summary and the configuration. "
                    "The page embeds everything and opens from disk with no server or network.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by cnnlab train")
    p.add_argument("--out", metavar="PATH", help="an .html file or a folder (default RUN_DIR/report.html)")
    p.add_argument("--dataset", help="evaluate on this dataset instead of the run's own")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding the dataset files")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N test images")
    p.set_defaults(func=_cli)
    return p
