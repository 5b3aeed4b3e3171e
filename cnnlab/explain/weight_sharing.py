r"""Weight sharing: a convolution is a fully connected layer with tied, mostly-zero weights.

Flatten an input image to a vector of ``H*W*C`` pixels and an output map to a
vector of ``Ho*Wo*F`` units. Any layer that is linear in its input is then a
matrix ``W`` with ``y = x @ W + b``. For a convolution, column ``(i, j, f)``
of ``W`` holds filter ``f``'s kernel laid over the window of output pixel
``(i, j)`` and zeros everywhere else, so:

* almost all entries are zero (each output sees only ``kh*kw*C`` of the ``H*W*C`` pixels: *sparse connectivity*);
* the nonzero entries repeat: the same ``kh*kw*C*F`` numbers appear in every
  position's column, shifted along diagonals (*weight sharing*).

A locally connected layer keeps the sparsity but unties the copies (a fresh
kernel per position), and a dense layer has neither constraint.
:func:`explain_weight_sharing` builds the matrix, checks it reproduces the
convolution, and trains the three kinds of layer on the same data to show what
the constraints buy: far fewer parameters, and better accuracy from little data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..analysis import texts
from ..analysis.baselines import SHARING_KEYS as MODEL_KEYS, sharing_experiment, sharing_models as build_models
from ..analysis.convolution import check_dense_equivalent, dense_equivalent, expected_nonzeros
from ..layers.conv import Conv2D
from ..layers.local import LocallyConnected2D
from .common import (SIGNED_CMAP, colorbar, esc, img_tag, new_figure, out_dir, save_figure, save_json,
                     symmetric_limits, table_html, text_colour, write_html)
from .result import ExplainResult
from .subject import load_data, tool_out

MODEL_LABELS = {"conv": "convolution (shared weights)", "locally_connected": "locally connected (untied)",
                "dense": "dense MLP (fully connected)"}
MODEL_COLOURS = {"conv": "#1f77b4", "locally_connected": "#ff7f0e", "dense": "#2ca02c"}


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------
def _matrix_figure(mats, names, kernel, demo_shape, out_hw):
    """The three weight matrices side by side, plus the shared kernel and a few columns seen as images."""
    from matplotlib.patches import Rectangle
    h, w, c = demo_shape
    ho, wo = out_hw
    fig = new_figure(17, 10.5, dpi=90)
    gs = fig.add_gridspec(2, 3, height_ratios=[1.5, 1], hspace=0.35, wspace=0.5)
    lim = symmetric_limits(np.concatenate([m.ravel() for m in mats]))
    for k, (m, name) in enumerate(zip(mats, names)):
        ax = fig.add_subplot(gs[0, k])
        shown = np.where(m == 0, np.nan, m)
        cmap = _white_bad(SIGNED_CMAP)
        im = ax.imshow(shown, cmap=cmap, vmin=lim[0], vmax=lim[1], aspect="auto", interpolation="nearest")
        zeros = float((m == 0).mean())
        distinct = len(np.unique(m[m != 0]))
        ax.set_title(f"{name}\n{m.shape[0]}\u00d7{m.shape[1]} matrix: {100 * zeros:.0f}% zeros, "
                     f"{distinct} distinct weights", fontsize=10)
        ax.set_xlabel("output unit (i, j, f), flattened")
        ax.set_ylabel("input pixel (r, s, c), flattened")
        colorbar(fig, im, ax, "weight (white: 0, no connection)")
        if k == 0:
            # Column (i, j) holds kernel[p, q] at row (i + p) * w + (j + q): weight (0, 0) runs down a diagonal.
            kk = kernel.shape[0]
            text = (f"the same {kernel.size} weights in every column,\nshifted along diagonals: "
                    f"one {kk}\u00d7{kk} kernel\n{100 * float((m == 0).mean()):.0f}% of the entries are 0")
            at = (0.02 * m.shape[1], 0.9 * m.shape[0])         # the empty lower-left corner
            for col in (1, 3):
                ax.annotate(text if col == 1 else "", xy=(col, col), xytext=at, ha="left", va="bottom",
                            fontsize=8.5, arrowprops=dict(arrowstyle="->", color="black", lw=1),
                            bbox=dict(boxstyle="round", fc="white", ec="gray") if col == 1 else None)
    # Bottom row: the kernel, and three columns of the conv matrix reshaped to the input image.
    ax = fig.add_subplot(gs[1, 0])
    klim = symmetric_limits(kernel)
    im = ax.imshow(kernel[:, :, 0, 0], cmap=SIGNED_CMAP, vmin=klim[0], vmax=klim[1], interpolation="nearest")
    for p in range(kernel.shape[0]):
        for q in range(kernel.shape[1]):
            v = kernel[p, q, 0, 0]
            ax.text(q, p, f"{v:.2f}", ha="center", va="center", fontsize=9,
                    color=text_colour(v, *klim, SIGNED_CMAP))
    ax.set_xticks(range(kernel.shape[1]))
    ax.set_yticks(range(kernel.shape[0]))
    ax.set_title("the shared kernel (3\u00d73): all the conv matrix holds", fontsize=10)
    ax.set_xlabel("q")
    ax.set_ylabel("p")
    colorbar(fig, im, ax, "weight")
    sub = gs[1, 1:].subgridspec(1, 3, wspace=0.3)
    picks = [0, (ho // 2) * wo + wo // 2, ho * wo - 1]
    for k, col in enumerate(picks):
        ax = fig.add_subplot(sub[0, k])
        img = mats[0][:, col].reshape(h, w, c)[:, :, 0]
        ax.imshow(np.where(img == 0, np.nan, img), cmap=_white_bad(SIGNED_CMAP), vmin=lim[0], vmax=lim[1],
                  interpolation="nearest")
        ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor="gray", lw=1))
        i, j = divmod(col, wo)
        ax.set_title(f"column of output ({i}, {j})\nas a {h}\u00d7{w} image", fontsize=9)
        ax.set_xlabel("input column")
        ax.set_ylabel("input row")
    return fig


def _white_bad(name):
    import matplotlib
    return matplotlib.colormaps[name].with_extremes(bad="white")


def _results_figure(params, acc, histories):
    fig = new_figure(19, 4.6, dpi=100)
    axes = fig.subplots(1, 4, gridspec_kw={"wspace": 0.35})
    ax = axes[0]
    for key in MODEL_KEYS:
        ax.scatter(params[key], acc[key], s=90, color=MODEL_COLOURS[key], label=MODEL_LABELS[key], zorder=3)
        ax.annotate(f"{acc[key]:.1%}\n{params[key]:,} params", (params[key], acc[key]), textcoords="offset points",
                    xytext=(8, -4), fontsize=8)
    ax.set_xscale("log")
    lo, hi = min(params.values()), max(params.values())
    ax.set_xlim(lo / 2, hi * 4)
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("accuracy against parameter count")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax = axes[1]
    xs = np.arange(len(MODEL_KEYS))
    bars = ax.bar(xs, [params[k] for k in MODEL_KEYS], color=[MODEL_COLOURS[k] for k in MODEL_KEYS])
    for b, k in zip(bars, MODEL_KEYS):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{params[k]:,}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels(["conv", "locally\nconnected", "dense"])
    ax.set_yscale("log")
    ax.set_ylim(min(params.values()) / 3, max(params.values()) * 3)
    ax.set_ylabel("trainable parameters (log scale)")
    ax.set_title("parameters")
    from matplotlib.ticker import MaxNLocator
    for ax, (title, ylabel) in zip(axes[2:], (("training loss (until it stops falling)", "training loss"),
                                              ("error: training (solid) and test (dashed)", "error rate"))):
        for key in MODEL_KEYS:
            hist = histories[key]
            ep = np.arange(1, len(hist["loss"]) + 1)
            if ax is axes[2]:
                ax.plot(ep, hist["loss"], "-o", color=MODEL_COLOURS[key], label=MODEL_LABELS[key])
            else:
                ax.plot(ep, 1 - np.asarray(hist["accuracy"]), "-o", color=MODEL_COLOURS[key], ms=4,
                        label=f"{key}: training")
                ax.plot(ep, 1 - np.asarray(hist["val_accuracy"]), "--s", color=MODEL_COLOURS[key], ms=4,
                        label=f"{key}: test")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


# ---------------------------------------------------------------------------
# The tool
# ---------------------------------------------------------------------------
def explain_weight_sharing(out=tool_out("weight-sharing"), dataset=None, data_dir=None, n_train=3000, n_test=1000,
                           epochs=12, batch_size=32, lr=2e-3, filters=8, kernel_size=5, hidden=None,
                           image_size=28, demo_size=7, seed=0, train=True, verbose=0) -> dict:
    """Show a convolution as a tied sparse dense matrix and compare conv, locally connected and dense models.

    Writes ``weight_sharing.json`` (``max_abs_difference``, ``parameters``,
    ``accuracy``, ...), ``weight_sharing_matrix.png``, ``weight_sharing_results.png``
    and ``weight_sharing.html`` to ``out``.

    Args:
        dataset: a name or folder (default: MNIST when on disk, else the generated ``shapes``); the first
            ``n_train`` / ``n_test`` examples are used (:func:`cnnlab.explain.subject.load_data`).
        epochs, batch_size, lr: the same training (Adam) for all three models, each until its training loss
            stops falling (:func:`cnnlab.analysis.baselines.loss_stopped_falling`), at most ``epochs`` epochs.
        filters, kernel_size: the conv / locally connected layer; ``hidden``: units of the dense
            model (default: as many as give it the conv model's parameter count).
        image_size: side of the generated shapes images.
        demo_size: side of the small single-channel image whose matrix is drawn.
        train: ``False`` skips training (only the matrix part).
    """
    out = out_dir(out)
    rng = np.random.default_rng(seed)
    files = {"json": out / "weight_sharing.json", "html": out / "weight_sharing.html",
             "matrix_png": out / "weight_sharing_matrix.png", "results_png": out / "weight_sharing_results.png"}

    # 1. A small conv and its dense equivalent, drawn.
    demo_shape = (demo_size, demo_size, 1)
    demo = Conv2D(1, 3, name="demo")
    demo.build(demo_shape, rng=np.random.default_rng(seed), dtype=np.float64)
    demo.params["kernel"][...] = np.round(rng.uniform(-1, 1, (3, 3, 1, 1)), 2)
    demo.params["kernel"][np.abs(demo.params["kernel"]) < 0.05] = 0.1    # no zero weights: zeros mean "no connection"
    demo.params["bias"][...] = 0.1
    w_conv, _ = dense_equivalent(demo)
    local = LocallyConnected2D(1, 3)
    local.build(demo_shape, rng=np.random.default_rng(seed + 1), dtype=np.float64)
    w_local, _ = dense_equivalent(local)
    w_dense = np.random.default_rng(seed + 2).uniform(-1, 1, w_conv.shape) * np.abs(w_conv).max()
    xs = rng.standard_normal((4,) + demo_shape)
    diff_demo = check_dense_equivalent(demo, xs)
    nonzeros = int(np.count_nonzero(w_conv))
    expected = expected_nonzeros(demo_shape, demo.params["kernel"].shape)
    demo_info = {"input_shape": list(demo_shape), "kernel_shape": list(demo.params["kernel"].shape),
                 "dense_shape": list(w_conv.shape), "nonzeros": nonzeros, "expected_nonzeros": expected,
                 "fraction_zeros": 1 - nonzeros / w_conv.size,
                 "distinct_nonzero_values": int(len(np.unique(w_conv[w_conv != 0]))),
                 "max_abs_difference": diff_demo, "kernel": demo.params["kernel"][:, :, 0, 0]}
    ho, wo, _ = demo.output_shape
    matrix_png = save_figure(_matrix_figure([w_conv, w_local, w_dense],
                                            ["convolution: sparse + tied", "locally connected: sparse, untied",
                                             "dense: every pixel to every unit"],
                                            demo.params["kernel"], demo_shape, (ho, wo)), files["matrix_png"])

    # 2. The three models on the same data.
    (xtr, ytr), (xte, yte), info = load_data(dataset, data_dir, n_train, n_test, seed, image_size=image_size)
    data_name = info["name"]
    num_classes = int(max(ytr.max(), yte.max()) + 1)
    models = build_models(xtr.shape[1:], num_classes, filters, kernel_size, hidden, seed)
    params = {k: int(m.num_params) for k, m in models.items()}
    conv_layer = models["conv"]["conv"]
    diff_model = check_dense_equivalent(conv_layer, xte[:4])
    w_big, _ = dense_equivalent(conv_layer)
    model_dense = {"layer_input_shape": list(conv_layer.input_shape), "dense_shape": list(w_big.shape),
                   "nonzeros": int(np.count_nonzero(w_big)),
                   "expected_nonzeros": expected_nonzeros(conv_layer.input_shape, conv_layer.params["kernel"].shape),
                   "fraction_zeros": 1 - np.count_nonzero(w_big) / w_big.size,
                   "max_abs_difference": diff_model, "free_parameters": int(conv_layer.num_params),
                   "dense_layer_parameters": int(w_big.size + w_big.shape[1])}
    del w_big
    acc, histories, seconds, converged, train_acc = {}, {}, {}, {}, {}
    if train:
        r = sharing_experiment((xtr, ytr), (xte, yte), epochs, batch_size, lr, models=models, verbose=verbose)
        acc, histories, seconds = r["accuracy"], r["histories"], r["seconds"]
        converged, train_acc = r["converged"], r["train_accuracy"]
    result = {
        "max_abs_difference": max(diff_demo, diff_model),
        "parameters": params, "accuracy": acc if train else None,
        "demo": demo_info, "model_conv_layer": model_dense,
        "models": {k: [f"{l.name} ({type(l).__name__})" for l in m.layers] for k, m in models.items()},
        "training": {"dataset": data_name, "n_train": int(len(xtr)), "n_test": int(len(xte)),
                     "input_shape": list(xtr.shape[1:]), "max_epochs": epochs, "batch_size": batch_size,
                     "epochs": {k: len(h["loss"]) for k, h in histories.items()}, "converged": converged,
                     "train_accuracy": train_acc,
                     "optimizer": f"Adam(lr={lr})", "seed": seed, "seconds": seconds,
                     "history": {k: {kk: vv for kk, vv in h.items() if kk in ("loss", "accuracy", "val_loss",
                                                                               "val_accuracy")}
                                 for k, h in histories.items()}},
    }
    results_png = save_figure(_results_figure(params, acc, histories), files["results_png"]) if train else None
    save_json(files["json"], result)
    _write_page(files["html"], result, matrix_png, results_png, models)
    result["files"] = {k: str(v) for k, v in files.items() if k != "results_png" or train}
    return ExplainResult(result, "Weight sharing: a convolution is a dense layer with tied weights", out,
                         [Path(result["files"][k]).name for k in ("matrix_png", "results_png") if k in result["files"]],
                         _verdict(result) if train else "")


def _verdict(r) -> str:
    """Whether the dense model lost for lack of training or of structure (``analysis.texts.weight_sharing_verdict``)."""
    t = r["training"]
    return texts.weight_sharing_verdict(t["converged"].get("dense", False), t["epochs"]["dense"],
                                        t["train_accuracy"]["dense"], r["accuracy"])


def _write_page(path, r, matrix_png, results_png, models):
    d, md = r["demo"], r["model_conv_layer"]
    intro = (
        "<p>Flatten an image into a vector of H\u00b7W\u00b7C pixels and a feature map into a vector of "
        "Ho\u00b7Wo\u00b7F units. Then a convolution is an ordinary fully connected layer, <code>y = x @ W + b</code>, "
        "whose matrix <code>W</code> is special in two ways:</p><ul>"
        "<li><b>sparse connectivity</b>: each output unit is connected only to the kh\u00d7kw\u00d7C pixels of its "
        "window, so almost every entry is zero;</li>"
        "<li><b>weight sharing</b>: every output position uses the same kernel, so the nonzero entries are the "
        "same few numbers repeated, shifted one pixel per column. A convolution is one hidden neuron "
        "replicated over every patch.</li></ul>")
    check = table_html(["", "small example", "first layer of the conv model"], [
        ["input (H, W, C)", str(tuple(d["input_shape"])), str(tuple(md["layer_input_shape"]))],
        ["dense-equivalent matrix", " \u00d7 ".join(map(str, d["dense_shape"])),
         " \u00d7 ".join(map(str, md["dense_shape"]))],
        ["nonzero entries (expected)", f"{d['nonzeros']:,} ({d['expected_nonzeros']:,})",
         f"{md['nonzeros']:,} ({md['expected_nonzeros']:,})"],
        ["fraction of zeros", f"{d['fraction_zeros']:.1%}", f"{md['fraction_zeros']:.2%}"],
        ["max |conv(x) \u2212 (x @ W + b)|", f"{d['max_abs_difference']:.2e}", f"{md['max_abs_difference']:.2e}"],
    ])
    sections = [("The convolution as a matrix", img_tag(matrix_png, "dense-equivalent weight matrices") + check
                 + f"<p class=\"note\">The conv layer of the model has {md['free_parameters']:,} free parameters; "
                   f"as an unconstrained dense layer the same connections would need "
                   f"{md['dense_layer_parameters']:,}.</p>")]
    if results_png is not None:
        t = r["training"]
        shape_txt = " \u00d7 ".join(map(str, t["input_shape"]))
        rows = [[MODEL_LABELS[k], f"{r['parameters'][k]:,}", f"{t['train_accuracy'][k]:.1%}",
                 f"{r['accuracy'][k]:.1%}", f"{t['epochs'][k]}" + ("" if t["converged"][k] else " (limit)"),
                 f"{t['seconds'][k]:.1f} s", " \u2192 ".join(x.split(" ")[0] for x in r["models"][k])]
                for k in MODEL_KEYS]
        sections.append(("What the constraints buy", img_tag(results_png, "accuracy against parameters") + table_html(
            ["model", "parameters", "training accuracy", "test accuracy", "epochs", "training time", "layers"], rows)
            + f"<p>All three were trained on the same {t['n_train']:,} {esc(t['dataset'])} images "
              f"({shape_txt}) with {esc(t['optimizer'])}, batch {t['batch_size']}, each until its training loss "
              f"stopped falling (at most {t['max_epochs']} epochs), and tested on {t['n_test']:,} others. "
              + _verdict(r) + " The locally connected model has the "
              "conv model's connectivity but a separate kernel at every position, so it has many times the "
              "parameters and must learn each feature at each place separately. The dense model has the conv "
              "model's parameter count but no notion of neighbourhood or position.</p>"))
    sections.append(("Numbers", "<p>Everything above is in <code>weight_sharing.json</code>.</p>"))
    write_html(path, "Weight sharing: a convolution is a constrained dense layer", sections, intro)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def add_parser(subparsers):
    p = subparsers.add_parser(
        "weight-sharing", help="a convolution as a tied sparse dense matrix; conv vs locally connected vs dense",
        description="Build the fully connected equivalent of a convolution, check it, and train conv, locally "
                    "connected and dense models on the same data. Writes weight_sharing.json/.html and PNGs.")
    p.add_argument("--out", default=tool_out("weight-sharing"), help=f"output folder (default ./{tool_out('weight-sharing')})")
    p.add_argument("--dataset", help="mnist, fashion-mnist, cifar10, shapes or a folder (default: MNIST when on "
                   "disk, else shapes)")
    p.add_argument("--data-dir", help="where the dataset's files are")
    p.add_argument("--n-train", type=int, default=3000, help="training examples (default 3000)")
    p.add_argument("--n-test", type=int, default=1000, help="test examples (default 1000)")
    p.add_argument("--epochs", type=int, default=12, help="at most this many epochs for each model; each stops "
                   "earlier when its training loss stops falling (default 12)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 0.002)")
    p.add_argument("--filters", type=int, default=8, help="filters of the conv / locally connected layer (default 8)")
    p.add_argument("--kernel-size", type=int, default=5, help="kernel size (default 5)")
    p.add_argument("--hidden", type=int, help="hidden units of the dense model (default: match the conv's parameters)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", action="store_true", help="only the matrix part, no training")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args):
    r = explain_weight_sharing(out=args.out, dataset=args.dataset, data_dir=args.data_dir, n_train=args.n_train,
                               n_test=args.n_test, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               filters=args.filters, kernel_size=args.kernel_size, hidden=args.hidden,
                               seed=args.seed, train=not args.no_train)
    print(f"dense equivalent: max |conv - dense| = {r['max_abs_difference']:.2e}")
    for k in MODEL_KEYS:
        a = r["accuracy"][k] if r["accuracy"] else None
        print(f"  {k:18s} {r['parameters'][k]:>9,} parameters" + (f"   test accuracy {a:.1%}" if a is not None else ""))
    for k, v in r["files"].items():
        print(f"  {k:12s} {v}")
    return 0
