r"""Translation equivariance of convolution, invariance from pooling, measured on trained models.

A convolution applies the same filter at every position, so shifting the
input shifts its feature maps by the same amount: with ``T_s`` a shift by
``s`` pixels, ``F(T_s x) = T_s F(x)`` (*equivariance*; exact away from the
borders). A layer that shrinks the maps by a factor ``r`` (stride or pooling)
turns an input shift of ``s`` into a map shift of ``s / r``, exact when ``r``
divides ``s``. Pooling over a window, and above all averaging each map over
the whole image (global average pooling), then makes the features the
classifier sees change little when the input moves (*invariance*). A
multilayer perceptron has neither property: each weight belongs to one pixel,
so a digit moved to pixels it never saw during training meets untrained weights.

``invariance_experiment`` measures all of this with models trained on the same
data (a CNN with max pooling, the same CNN with stride-2 convolutions instead
of pooling, a CNN ending in global average pooling, and an MLP with about as
many parameters as the CNN):

* accuracy on the test images shifted by 0..k pixels (the mean over the four
  directions right, left, down, up; the shift is exact, zero-filled, as
  ``cnnlab.augment.affine(x, shift_x=s)``) and rotated by small angles;
* how much the *penultimate features* (the input of the last dense layer)
  change under a shift: ``mean_n ||phi(T x_n) - phi(x_n)|| / ||phi(x_n)||``;
* the equivariance error of every spatial layer of the CNN:
  ``||F(T_s x) - T_{s/r} F(x)|| / ||F(T_s x)||`` over the test images, where the
  strip that enters the shifted map is filled with the layer's response to a
  blank image (what the blank strip entering the shifted input produces), next
  to the same error without shifting the map back, ``||F(T_s x) - F(x)|| / ||F(T_s x)||``;
* the *canvas* experiment: images pasted in the top-left corner of a larger
  canvas for training, tested in the bottom-right corner (and on a grid of
  positions), for a CNN with global average pooling and an MLP.

All numbers come from the models, on the first ``n_test`` images of the test
split; the trained models are saved next to the results so every value can be
recomputed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import images
from ..augment import affine
from ..layers import Conv2D, Dense, Flatten, GlobalAvgPool2D, ReLU
from ..analysis import texts
from ..analysis.baselines import cnn_gap, mlp_like
from ..analysis.layers import capture_batches
from ..analysis.shifts import place_on_canvas, shift_images
from ..model import Sequential
from . import common
from .result import ExplainResult
from .subject import (add_common_arguments, check_compatible, data_noun, default_data, demo_model, fit_class_names,
                      fit_until, load_data, log_to, model_argument, prepare_image, resolve_subject,
                      run_data, stderr_log, DefaultSubject, Subject)

MLP_MAX_EPOCHS_FACTOR = 8    # the MLP baseline may train this many times the CNN's epochs to match its accuracy
DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
MODEL_LABELS = {
    "cnn": "CNN (conv + max-pool, dense on top)",
    "mlp": "MLP (one hidden layer, similar parameter count)",
    "cnn_strided": "CNN without pooling (stride-2 convs)",
    "cnn_gap": "CNN with global average pooling",
}
STYLES = {"cnn": dict(color="#c0392b", lw=2.4, marker="o"), "mlp": dict(color="#2c6fbb", lw=2.4, marker="s"),
          "cnn_strided": dict(color="#e67e22", lw=1.4, ls="--", marker="^", ms=4),
          "cnn_gap": dict(color="#27ae60", lw=1.4, ls="--", marker="D", ms=4)}


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
def cnn_strided(input_shape, num_classes, seed=0):
    """The demo CNN (the zoo's ``tiny_cnn``) with each conv + max-pool replaced by one stride-2 convolution."""
    return Sequential([Conv2D(8, 5, strides=2, padding="same"), ReLU(),
                       Conv2D(16, 3, strides=2, padding="same"), ReLU(),
                       Flatten(), Dense(num_classes, kernel_initializer="glorot_uniform")],
                      input_shape=tuple(input_shape), seed=seed, name="cnn_strided")


def canvas_mlp(input_shape, num_classes, seed=0):
    """The MLP of the canvas experiment: one hidden layer of 32 units (more weights than the CNN it faces)."""
    return mlp_like(input_shape, num_classes, hidden=32, seed=seed)


canvas_mlp.label = "MLP (one hidden layer of 32)"
cnn_gap.label = MODEL_LABELS["cnn_gap"]


def train(model, x, y, epochs, seed=0, lr=None, batch_size=64):
    """Adam, mini-batches of 64; global-average-pooling models learn faster with a larger step."""
    from ..optim import Adam
    if lr is None:
        lr = 3e-3 if any(isinstance(layer, GlobalAvgPool2D) for layer in model.layers) else 2e-3
    model.fit(x, y, epochs=epochs, batch_size=batch_size, optimizer=Adam(lr=lr), verbose=0)
    return model


def train_to_match(model, x, y, val, target, min_epochs, max_epochs, tolerance=0.02):
    """Train epoch by epoch (:func:`fit_until`) until accuracy on ``val = (x_val, y_val)`` reaches ``target - tolerance``.

    At least ``min_epochs``, at most ``max_epochs``. Returns ``(model, epochs, validation accuracy)``.
    """
    history, _ = fit_until(model, x, y, max_epochs, lambda h: h["val_accuracy"][-1] >= target - tolerance,
                           min_epochs=min_epochs, validation_data=val)
    return model, len(history["loss"]), history["val_accuracy"][-1]


def penultimate_index(model):
    """Index of the layer whose output feeds the last layer with weights (the classifier's features)."""
    with_params = [i for i, layer in enumerate(model.layers) if layer.params]
    if not with_params or with_params[-1] == 0:
        raise ValueError(f"{model.name}: no layer before the last weighted layer, so no penultimate features")
    return with_params[-1] - 1


def forward_capture(model, x, capture=(), batch_size=250):
    """Logits and the outputs of the layers with the indices in ``capture`` (``analysis.capture_batches``)."""
    names = {i: model.layers[i].name for i in capture}
    logits, caught = capture_batches(model, x, list(names.values()), batch_size)
    return logits, {i: caught[n] for i, n in names.items()}


def spatial_layers(model):
    """``[(index, layer, stride)]`` for the layers before the first flat output; ``stride`` = input size / map size."""
    h = model.input_shape[0]
    out = []
    for i, layer in enumerate(model.layers):
        if len(layer.output_shape) != 3:
            break
        ho = layer.output_shape[0]
        if h % ho == 0 and model.input_shape[1] % layer.output_shape[1] == 0 \
                and h // ho == model.input_shape[1] // layer.output_shape[1]:
            out.append((i, layer, h // ho))
    return out


# ---------------------------------------------------------------------------
# The measurements
# ---------------------------------------------------------------------------
def accuracy(logits, y) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == y))


def shift_curves(models, x, y, shifts, equivariance_model=None):
    """Accuracy, penultimate-feature change and (for one model) equivariance errors against shift.

    Returns ``(acc, acc_by_dir, change, equi)``: ``acc[name][i]`` is the mean
    accuracy over the four directions at ``shifts[i]``; ``change[name][i]``
    the mean relative change of the penultimate features; ``equi`` a list of
    per-layer results for ``equivariance_model`` (a key of ``models``).
    """
    pen = {name: penultimate_index(m) for name, m in models.items()}
    eq_layers = spatial_layers(models[equivariance_model]) if equivariance_model else []
    acc = {name: [] for name in models}
    by_dir = {name: {d: [] for d in DIRECTIONS} for name in models}
    change = {name: [] for name in models}
    base_feat, base_maps, blank_maps = {}, {}, {}
    if eq_layers:
        em = models[equivariance_model]
        _, blank = forward_capture(em, np.zeros((1,) + tuple(em.input_shape), np.float32), [i for i, _, _ in eq_layers])
        blank_maps = {i: v[0] for i, v in blank.items()}
    sums = {i: {"num": {}, "den": {}, "raw": {}} for i, _, _ in eq_layers}
    for s in shifts:
        for name, model in models.items():
            dir_acc, dir_change = [], []
            for d, (uy, ux) in DIRECTIONS.items():
                if s == 0 and dir_acc:                 # no shift: the four directions are the same images
                    dir_acc.append(dir_acc[0])
                    dir_change.append(dir_change[0])
                    by_dir[name][d].append(dir_acc[0])
                    continue
                xs = shift_images(x, uy * s, ux * s)
                want = {pen[name]} | ({i for i, _, _ in eq_layers} if name == equivariance_model else set())
                logits, caught = forward_capture(model, xs, want)
                a = accuracy(logits, y)
                dir_acc.append(a)
                by_dir[name][d].append(a)
                f = caught[pen[name]].reshape(len(x), -1).astype(np.float64)
                if s == 0:
                    base_feat[name] = f
                    if name == equivariance_model:
                        base_maps.update(caught)
                b = base_feat[name]
                dir_change.append(float(np.mean(np.linalg.norm(f - b, axis=1) /
                                                 np.maximum(np.linalg.norm(b, axis=1), 1e-12))))
                if name == equivariance_model:
                    for i, _, r in eq_layers:
                        if s % r:
                            continue
                        fx = caught[i].astype(np.float64)
                        moved = shift_images(base_maps[i], uy * s // r, ux * s // r, blank_maps[i]).astype(np.float64)
                        acc_ = sums[i]
                        acc_["num"].setdefault(s, 0.0)
                        acc_["num"][s] += float(np.sum((fx - moved) ** 2))
                        acc_["den"][s] = acc_["den"].get(s, 0.0) + float(np.sum(fx ** 2))
                        acc_["raw"][s] = acc_["raw"].get(s, 0.0) + float(np.sum((fx - base_maps[i]) ** 2))
            acc[name].append(float(np.mean(dir_acc)))
            change[name].append(float(np.mean(dir_change)))
    equi = []
    for i, layer, r in eq_layers:
        sm = sums[i]
        ks = sorted(sm["num"])
        equi.append({"index": i, "name": layer.name, "type": type(layer).__name__, "stride": r,
                     "map_shape": list(layer.output_shape), "shifts": ks,
                     "error": [float(np.sqrt(sm["num"][s] / max(sm["den"][s], 1e-30))) for s in ks],
                     "unshifted_error": [float(np.sqrt(sm["raw"][s] / max(sm["den"][s], 1e-30))) for s in ks]})
    return acc, by_dir, change, equi


def rotation_curves(models, x, y, degrees):
    """Accuracy of each model on the images rotated by each angle (bilinear, zero fill)."""
    out = {name: [] for name in models}
    for deg in degrees:
        xr = x if deg == 0 else affine(x, degrees=float(deg))
        for name, model in models.items():
            out[name].append(accuracy(model.logits(xr), y))
    return out


def canvas_experiment(train_xy, test_xy, size, models, epochs, seed=0, step=4, log=None):
    """Train each model on images at the top-left of a ``size`` canvas; test on a grid of positions.

    ``models`` maps names to constructors ``f(input_shape, num_classes, seed)``.
    Returns ``(results, trained)``: per model the accuracy at the training
    position, at the bottom-right corner, and on every grid position.
    """
    (xtr, ytr), (xte, yte) = train_xy, test_xy
    h, w, c = xtr.shape[1:]
    k = int(max(ytr.max(), yte.max())) + 1
    far = size - h
    positions = sorted(set(list(range(0, far + 1, step)) + [far]))
    results, trained = {}, {}
    xtrain = place_on_canvas(xtr, size, 0, 0)
    for name, make in models.items():
        model = make((size, size, c), k, seed)
        log_to(log, f"  canvas: training {name} ({model.num_params:,} parameters) on {len(xtr)} images at the "
                  f"top-left of a {size}x{size} canvas ...")
        train(model, xtrain, ytr, epochs, seed)
        grid = [[accuracy(model.logits(place_on_canvas(xte, size, t, l)), yte) for l in positions] for t in positions]
        results[name] = {"label": getattr(make, "label", name), "params": model.num_params,
                         "train_position": grid[0][0],
                         "test_position": grid[-1][-1], "grid": grid}
        trained[name] = model
    return {"size": size, "image_size": [h, w], "train_position": [0, 0], "test_position": [far, far],
            "positions": positions, "models": results}, trained


# ---------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------
def plot_curves(xs, curves, xlabel, ylabel, title, params=None, ylim=None, chance=None):
    fig = common.new_figure(7, 4.3)
    ax = fig.add_subplot(1, 1, 1)
    for name, ys in curves.items():
        label = MODEL_LABELS.get(name, name) + (f", {params[name]:,} params" if params and name in params else "")
        ax.plot(xs, ys, label=label, **STYLES.get(name, {}))
    if chance is not None:
        ax.axhline(chance, color="gray", lw=0.8, ls=":", label=f"chance ({chance:.2f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_equivariance_error(equi):
    fig = common.new_figure(7, 4.3)
    ax = fig.add_subplot(1, 1, 1)
    colours = ["#c0392b", "#8e44ad", "#2c6fbb", "#16a085", "#d35400", "#7f8c8d", "#2c3e50", "#27ae60"]
    for j, e in enumerate(equi):
        col = colours[j % len(colours)]
        ax.plot(e["shifts"], e["error"], color=col, marker="o", ms=4,
                label=f"{e['name']} ({e['type']}, map size /{e['stride']})")
        ax.plot(e["shifts"], e["unshifted_error"], color=col, ls=":", lw=1)
    ax.set_xlabel("input shift (pixels)")
    ax.set_ylabel("relative error")
    ax.set_title("equivariance: the feature maps move with the input\nsolid: ||F(Tx) - T F(x)|| / ||F(Tx)|| "
                 "(map shifted too);  dotted: ||F(Tx) - F(x)|| / ||F(Tx)|| (map not shifted)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return fig


def plot_equivariance_picture(model, x, s, layers):
    """For one image: input, shifted input, and per layer F(x), F(Tx), T F(x) and the difference."""
    x1 = x[None].astype(np.float32)
    xs = shift_images(x1, s, s)
    idx = [i for i, _, _ in layers]
    _, base = forward_capture(model, x1, idx)
    _, moved = forward_capture(model, xs, idx)
    _, blank = forward_capture(model, np.zeros_like(x1), idx)
    fig = common.new_figure(15, 2.6 * len(layers) + 0.6)
    fig.set_layout_engine("constrained")
    cols = 6
    for row, (i, layer, r) in enumerate(layers):
        f0, f1 = base[i][0], moved[i][0]
        c = int(np.argmax(np.abs(f0).mean(axis=(0, 1))))
        tf = shift_images(base[i], s // r, s // r, blank[i][0])[0]
        err = np.linalg.norm(f1 - tf) / max(np.linalg.norm(f1), 1e-12)
        lo, hi = float(min(f0[..., c].min(), f1[..., c].min())), float(max(f0[..., c].max(), f1[..., c].max()))
        cmap = common.SIGNED_CMAP if lo < 0 else common.HEAT_CMAP
        if lo < 0:
            lo, hi = common.symmetric_limits(np.stack([f0[..., c], f1[..., c]]))
        panels = [(x[..., 0] if x.shape[-1] == 1 else x, "the image", "gray", 0, 1),
                  (xs[0, ..., 0] if x.shape[-1] == 1 else xs[0], f"the image moved\n{s} px right, {s} px down", "gray", 0, 1),
                  (f0[..., c], f"map of the image\n({layer.name}, channel {c})", cmap, lo, hi),
                  (f1[..., c], "map of the\nmoved image", cmap, lo, hi),
                  (tf[..., c], f"map of the image,\nmoved {s // r} px (= {s} / {r})", cmap, lo, hi),
                  (np.abs(f1[..., c] - tf[..., c]), f"difference of the two\nbefore it ({err:.0%} of the map)", "magma",
                   0, max(hi - lo, 1e-12) / 2)]
        for j, (img, title, cm, vmin, vmax) in enumerate(panels):
            ax = fig.add_subplot(len(layers), cols, row * cols + j + 1)
            if img.ndim == 3:
                im = common.show_image(ax, img)
            else:
                im = ax.imshow(img, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= 2 and j in (4, 5):
                common.colorbar(fig, im, ax)
            if j == 0:
                ax.set_ylabel(layer.name + (f"\n(map {r}x smaller)" if r > 1 else ""), fontsize=9)
    fig.suptitle("Move the image and its feature maps move with it: the 4th and 5th columns agree, so their "
                 "difference (last column) is small", fontsize=11)
    return fig


def plot_canvas(canvas, examples):
    """Example canvases at the two positions, and accuracy by position for each model."""
    names = list(canvas["models"])
    fig = common.new_figure(4.2 * (len(names) + 1) + 1, 4.3)
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot(1, len(names) + 1, 1)
    ex = np.concatenate([examples[0], np.ones((examples[0].shape[0], 2)), examples[1]], axis=1)
    ax.imshow(ex, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title("training position (left) and\ntest position (right)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    pos = canvas["positions"]
    for j, name in enumerate(names):
        r = canvas["models"][name]
        ax = fig.add_subplot(1, len(names) + 1, j + 2)
        im = ax.imshow(np.array(r["grid"]), cmap=common.HEAT_CMAP, vmin=0, vmax=1, interpolation="nearest")
        for a in range(len(pos)):
            for b in range(len(pos)):
                v = r["grid"][a][b]
                ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color=common.text_colour(v, 0, 1, common.HEAT_CMAP))
        ax.set_xticks(range(len(pos)))
        ax.set_xticklabels(pos)
        ax.set_yticks(range(len(pos)))
        ax.set_yticklabels(pos)
        ax.set_xlabel("image's left edge on the canvas (px)")
        ax.set_ylabel("image's top edge (px)")
        ax.set_title(f"{r['label']}\n{r['params']:,} params; trained at (0, 0) only", fontsize=9)
        common.colorbar(fig, im, ax, "test accuracy")
    fig.suptitle(f"train in the top-left corner of a {canvas['size']}x{canvas['size']} canvas, test everywhere",
                 fontsize=10)
    return fig


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------
def _resolve(model, dataset, data_dir, options):
    """``(model or None, description, dataset, data_dir, options)`` for a CNN/MLP argument."""
    if model is None:
        return None, None, dataset, data_dir, options
    if isinstance(model, DefaultSubject):        # other data than the default subject's: the CNN is trained here
        if not model.covers(dataset):
            return None, None, dataset, data_dir, options
        model = resolve_subject(model, dataset, data_dir, log=stderr_log)
    if isinstance(model, Sequential):
        return model, f"model {model.name!r}", dataset, data_dir, options
    if isinstance(model, Subject):
        return (model.model, model.description, dataset or model.dataset,
                data_dir if data_dir is not None else model.data_dir, options if dataset else model.options)
    loaded = common.load_model(model)
    if dataset is None:
        dataset, data_dir, options = run_data(model, None, data_dir)
    return loaded, str(model), dataset, data_dir, options


def invariance_experiment(out, model=None, mlp=None, dataset=None, data_dir=None, image=None, index=0,
                          max_shift=8, max_degrees=30, degree_step=10, n_train=5000, n_test=500, epochs=3,
                          canvas=True, canvas_size=None, canvas_step=4, invert="auto", center="auto", seed=0, log=None) -> dict:
    """Shift and rotation robustness, equivariance and pooling invariance, and the canvas experiment.

    Args:
        out: output folder (created).
        model: the CNN (``Sequential``, ``Subject``, ``DefaultSubject``, run directory or model file); default:
            trained now.
        mlp: the MLP to compare (same forms); default: trained now with about as many parameters.
        dataset, data_dir: the data (default: the model's run dataset, else MNIST if on disk, else shapes).
        image: a picture for the equivariance figure (default test image ``index``).
        max_shift: shifts 0..max_shift pixels; max_degrees, degree_step: rotation angles.
        n_train, n_test: the first images of each split used for training and testing.
        epochs: training epochs for every model trained here.
        canvas: run the canvas experiment (canvas side ``canvas_size``, default image side + 12).

    Writes ``invariance.json``, ``invariance.html``, PNGs and ``models/*.safetensors``; returns the JSON content.
    """
    out = common.out_dir(out)
    if max_shift < 0 or n_test < 1 or n_train < 1:
        raise ValueError("max_shift must be >= 0 and n_train, n_test >= 1")
    cnn, cnn_desc, dataset, data_dir, options = _resolve(model, dataset, data_dir, None)
    given_mlp, mlp_desc, dataset, data_dir, options = _resolve(mlp, dataset, data_dir, options)
    if dataset is None:
        dataset, data_dir = default_data(data_dir)
    n_val = max(50, min(500, n_train // 10))       # the images after the training ones: the MLP's stopping check
    (xtr, ytr), (xte, yte), info = load_data(dataset, data_dir, n_train=n_train + n_val, n_test=n_test, seed=seed,
                                             options=options)
    (xtr, ytr), val = (xtr[:n_train], ytr[:n_train]), (xtr[n_train:], ytr[n_train:])
    k = max(len(info["class_names"]), int(ytr.max()) + 1)
    shape = tuple(info["input_shape"])
    # The user's picture is read first, so that a bad file fails before any training.
    x_user = prepare_image(image, shape, invert, center, info["name"], log) if image is not None else None
    log_to(log, f"data: {len(xtr)} training and {len(xte)} test images of {info['name']} {shape}")
    for m in (cnn, given_mlp):
        if m is not None:
            check_compatible(m, info, dataset)

    def fit(make, name):
        net = make()
        log_to(log, f"training {name} ({net.num_params:,} parameters, {epochs} epochs) ...")
        return train(net, xtr, ytr, epochs, seed)

    models = {"cnn": cnn if cnn is not None else fit(lambda: demo_model(shape, k, seed), "cnn")}
    cnn_val = float(models["cnn"].evaluate(*val)["accuracy"])
    mlp_training = None
    if given_mlp is not None:
        models["mlp"] = given_mlp
    else:
        mlp = mlp_like(shape, k, params=models["cnn"].num_params, seed=seed)
        log_to(log, f"training mlp ({mlp.num_params:,} parameters) until it matches the CNN's {cnn_val:.3f} on "
                    f"{len(val[0])} held-out training images (at most {MLP_MAX_EPOCHS_FACTOR * epochs} epochs) ...")
        models["mlp"], mlp_epochs, mlp_val = train_to_match(mlp, xtr, ytr, val, cnn_val, epochs,
                                                            MLP_MAX_EPOCHS_FACTOR * epochs)
        mlp_training = {"epochs": mlp_epochs, "validation_accuracy": mlp_val, "cnn_validation_accuracy": cnn_val,
                        "validation_images": int(len(val[0])), "max_epochs": MLP_MAX_EPOCHS_FACTOR * epochs,
                        "matched": bool(mlp_val >= cnn_val - 0.02)}
    models["cnn_strided"] = fit(lambda: cnn_strided(shape, k, seed), "cnn_strided")
    models["cnn_gap"] = fit(lambda: cnn_gap(shape, k, seed), "cnn_gap")
    descriptions = {name: (cnn_desc if name == "cnn" and cnn_desc else mlp_desc if name == "mlp" and mlp_desc
                           else f"{MODEL_LABELS[name]}, trained here for "
                                f"{mlp_training['epochs'] if name == 'mlp' else epochs} epochs on {len(xtr)} images")
                    for name in models}
    mdir = out / "models"
    models_json = {}
    for name, m in models.items():
        m.save(mdir / f"{name}.safetensors")
        models_json[name] = {"description": descriptions[name], "label": MODEL_LABELS[name],
                             "params": m.num_params, "file": f"models/{name}.safetensors",
                             "layers": [f"{l.name} ({type(l).__name__})" for l in m.layers]}

    shifts = list(range(int(max_shift) + 1))
    eq_model = "cnn" if spatial_layers(models["cnn"]) else None
    log_to(log, f"shifting {len(xte)} test images by 0..{max_shift} pixels in 4 directions ...")
    acc, by_dir, change, equi = shift_curves(models, xte, yte, shifts, eq_model)
    step = max(int(degree_step), 1)
    degrees = list(range(-int(max_degrees), int(max_degrees) + 1, step)) if max_degrees > 0 else [0]
    if 0 not in degrees:
        degrees = sorted(degrees + [0])
    log_to(log, f"rotating by {degrees[0]}..{degrees[-1]} degrees ...")
    rot = rotation_curves(models, xte, yte, degrees)

    files = []
    params = {n: m.num_params for n, m in models.items()}
    chance = float(np.max(np.bincount(yte)) / len(yte))
    pngs = {}

    def save(fig, name):
        pngs[name] = common.save_figure(fig, out / name)
        files.append(name)

    save(plot_curves(shifts, acc, "shift (pixels; mean over right, left, down, up)", "test accuracy",
                     f"accuracy of shifted {info['name']} test images ({len(xte)})", params, (0, 1.02), chance),
         "invariance_shift.png")
    save(plot_curves(degrees, rot, "rotation (degrees, counter-clockwise)", "test accuracy",
                     f"accuracy of rotated {info['name']} test images ({len(xte)})", params, (0, 1.02), chance),
         "invariance_rotation.png")
    save(plot_curves(shifts, change, "shift (pixels)", "relative change ||phi(Tx) - phi(x)|| / ||phi(x)||",
                     "how much the classifier's input features change when the image moves", params),
         "invariance_features.png")

    # the example image
    if image is not None:
        x_ex, ex_label, ex_source = x_user, None, f"image {image}"
    else:
        if not 0 <= index < len(xte):
            raise ValueError(f"--index must lie in [0, {len(xte) - 1}], received {index}")
        x_ex, ex_label, ex_source = xte[index], int(yte[index]), f"test image #{index} of {info['name']}"
    per_image = {}
    for name in ("cnn", "mlp"):
        batch = np.concatenate([shift_images(x_ex[None], 0, s) for s in shifts])
        p = models[name].predict(batch)
        per_image[name] = {"predicted": [int(v) for v in p.argmax(1)],
                           "probability": [float(p[i, j]) for i, j in enumerate(p.argmax(1))]}
    equi_json = None
    if eq_model:
        save(plot_equivariance_error(equi), "equivariance_error.png")
        layers = spatial_layers(models["cnn"])
        lcm = int(np.lcm.reduce([r for _, _, r in layers]))
        s_pic = lcm if lcm <= shifts[-1] else shifts[-1]      # the smallest shift every map size divides
        usable = [l for l in layers if s_pic % l[2] == 0]
        chosen = [usable[0]] + [l for l in usable[1:] if type(l[1]).__name__ in ("MaxPool2D", "AvgPool2D")]
        if usable[-1] not in chosen:
            chosen.append(usable[-1])
        save(plot_equivariance_picture(models["cnn"], x_ex, s_pic, chosen[:4]), "equivariance.png")
        equi_json = {"model": "cnn", "picture_shift": s_pic, "layers": equi}

    canvas_json = None
    if canvas:
        size = int(canvas_size) if canvas_size else shape[0] + 12
        if size < max(shape[:2]):
            raise ValueError(f"canvas_size must be at least the image size {shape[:2]}, received {size}")
        canvas_json, canvas_models = canvas_experiment(
            (xtr, ytr), (xte, yte), size,
            {"cnn_gap": cnn_gap, "mlp": canvas_mlp},
            epochs, seed, step=canvas_step, log=log)
        for name, m in canvas_models.items():
            m.save(mdir / f"canvas_{name}.safetensors")
            canvas_json["models"][name]["file"] = f"models/canvas_{name}.safetensors"
        ex = xte[:1]
        far = canvas_json["test_position"][0]
        examples = [place_on_canvas(ex, size, 0, 0)[0], place_on_canvas(ex, size, far, far)[0]]
        examples = [e[..., 0] if e.shape[-1] == 1 else e.mean(-1) for e in examples]
        save(plot_canvas(canvas_json, examples), "canvas.png")

    result = {
        "dataset": info["name"], "n_train": len(xtr), "n_test": len(xte), "seed": seed, "epochs": epochs,
        "test_subset": f"the first {len(xte)} images of the {info['name']} test split",
        "directions": list(DIRECTIONS), "shifts": shifts,
        "accuracy": acc, "accuracy_by_direction": by_dir,
        "feature_change": change,
        "rotation": {"degrees": degrees, "accuracy": rot},
        "equivariance": equi_json, "canvas": canvas_json, "models": models_json,
        "example": {"source": ex_source, "label": ex_label, "shifts_right": shifts, **per_image},
        "chance": chance, "mlp_training": mlp_training, "noun": data_noun(info["name"]),
        "class_names": fit_class_names(info.get("class_names"), k),
        "files": files + ["invariance.json", "invariance.html"] + [f"models/{n}.safetensors" for n in models],
    }
    common.save_json(out / "invariance.json", result)
    _write_page(out, result, pngs)
    return ExplainResult(result, "Invariance: shifted and rotated inputs", out, [f for f in files if f.endswith(".png")])


def _pct(v):
    return f"{100 * v:.1f}%"


def _write_page(out, r, pngs):
    esc = common.esc
    names = list(r["accuracy"])
    head = ["shift (px)"] + [MODEL_LABELS.get(n, n) for n in names]
    shift_rows = [[s] + [_pct(r["accuracy"][n][i]) for n in names] for i, s in enumerate(r["shifts"])]
    rot_rows = [[d] + [_pct(r["rotation"]["accuracy"][n][i]) for n in names]
                for i, d in enumerate(r["rotation"]["degrees"])]
    change_rows = [[s] + [f"{r['feature_change'][n][i]:.3f}" for n in names] for i, s in enumerate(r["shifts"])]
    last = r["shifts"][-1]
    noun, names_k = r["noun"], r["class_names"]
    mlp_note = texts.mlp_training(r["mlp_training"])
    ch = {n: r["feature_change"][n][-1] for n in names}
    change_text = ", ".join(f"{MODEL_LABELS.get(n, n)}: {ch[n]:.2f}" for n in sorted(names, key=ch.get))
    verdict = texts.invariance_verdict(ch, MODEL_LABELS)
    cnn, mlp = r["accuracy"]["cnn"], r["accuracy"]["mlp"]
    intro = (f"<p>Models trained on {r['n_train']} {esc(r['dataset'])} images, tested on {esc(r['test_subset'])}. "
             "A convolution applies one filter at every position, so when the input moves its feature maps move "
             "with it (<b>equivariance</b>); pooling, and most of all averaging each map over the image, makes "
             "the classifier's input change little (<b>invariance</b>). An MLP has one weight per pixel and "
             "neither property.</p>")
    sections = [
        ("Accuracy against shift", common.img_tag(pngs["invariance_shift.png"], "accuracy against shift") +
         f"<p>{esc(texts.shift_accuracy(last, (cnn[0], cnn[-1]), (mlp[0], mlp[-1])))} Each value is the mean over "
         f"shifts right, left, down and up; pixels that enter are black. {esc(mlp_note)}</p>" +
         common.table_html(head, shift_rows)),
        ("Accuracy against rotation", common.img_tag(pngs["invariance_rotation.png"], "accuracy against rotation") +
         "<p class='note'>Convolution is not built to be rotation-equivariant: small rotations are tolerated "
         f"because the filters are small and the {noun}s varied, large ones are not.</p>" +
         common.table_html(["degrees"] + head[1:], rot_rows)),
        ("Invariance of the classifier's features", common.img_tag(pngs["invariance_features.png"], "feature change") +
         "<p>The mean relative change of the penultimate features (the input of the last dense layer) when the "
         f"{noun} moves. At {last} px: {esc(change_text)}. {esc(verdict)}</p>" +
         common.table_html(["shift (px)"] + head[1:], change_rows)),
    ]
    eq = r["equivariance"]
    if eq:
        all_shifts = sorted({s for e in eq["layers"] for s in e["shifts"] if s})
        rows = []
        for e in eq["layers"]:
            cells = {s: f"{err:.3f} ({raw:.2f})" for s, err, raw in zip(e["shifts"], e["error"], e["unshifted_error"])}
            rows.append([e["name"], e["type"], f"/{e['stride']}"] + [cells.get(s, "\u2013") for s in all_shifts])
        sections.append(("Equivariance: feature maps move with the input",
                         common.img_tag(pngs["equivariance.png"], "equivariance picture") +
                         common.img_tag(pngs["equivariance_error.png"], "equivariance error") +
                         "<p>For each spatial layer F of the CNN and each input shift s that its map size divides, "
                         "the relative error between F(shifted image) and the feature map of the original image "
                         "shifted by s/stride (the strip that enters filled with the layer's response to a blank "
                         "image); in brackets, the error if the map had not moved at all. The small remainder comes "
                         "from the image edges: strokes pushed out of the picture, and zero padding that differs "
                         "from the blank background once biases and ReLUs have acted. It grows with the shift "
                         "and with depth, as receptive fields reach the border sooner.</p>" + common.table_html(
                             ["layer", "type", "map size"] + [f"shift {s} px" for s in all_shifts], rows)))
    c = r["canvas"]
    if c:
        m = c["models"]
        rows = [[v["label"], f"{v['params']:,}", _pct(v["train_position"]), _pct(v["test_position"])]
                for n, v in m.items()]
        sections.append((f"Train in one corner, test in another ({c['size']}\u00d7{c['size']} canvas)",
                         common.img_tag(pngs["canvas.png"], "canvas experiment") +
                         "<p>" + esc(texts.canvas_result(noun, c["size"], c["test_position"][0],
                                                         m["cnn_gap"]["test_position"], m["mlp"]["test_position"],
                                                         r["chance"])) + "</p>" + common.table_html(
                             ["model", "parameters", "accuracy at the training position",
                              "accuracy in the bottom-right corner"], rows)))
    ex = r["example"]
    def cname(k):
        return names_k[k] if 0 <= k < len(names_k) else str(k)
    ex_rows = [[s, f"{cname(ex['cnn']['predicted'][i])} ({ex['cnn']['probability'][i]:.2f})",
                f"{cname(ex['mlp']['predicted'][i])} ({ex['mlp']['probability'][i]:.2f})"]
               for i, s in enumerate(ex["shifts_right"])]
    truth = f" (true class: {cname(ex['label'])})" if ex["label"] is not None else ""
    sections.append((f"One image, shifted right: {ex['source']}{truth}", common.table_html(
        ["shift (px)", "CNN: class (probability)", "MLP: class (probability)"], ex_rows)))
    mrows = [[n, v["label"], f"{v['params']:,}", ", ".join(v["layers"]), v["file"]] for n, v in r["models"].items()]
    sections.append(("Models", common.table_html(["key", "model", "parameters", "layers", "file"], mrows)))
    common.write_html(out / "invariance.html", "Shift equivariance and invariance", sections, intro=intro)


def _cli(args):
    r = invariance_experiment(args.out, model=model_argument(args), mlp=args.mlp, dataset=args.dataset, data_dir=args.data_dir,
                              image=args.image, index=args.index, max_shift=args.max_shift,
                              max_degrees=args.max_degrees, degree_step=args.degree_step, n_train=args.n_train,
                              n_test=args.n_test, epochs=args.epochs, canvas=not args.no_canvas,
                              canvas_size=args.canvas_size, **images.options_from(args), seed=args.seed, log=stderr_log)
    print("shift  " + "  ".join(f"{n:>11}" for n in r["accuracy"]))
    for i, s in enumerate(r["shifts"]):
        print(f"{s:>5}  " + "  ".join(f"{r['accuracy'][n][i]:>11.3f}" for n in r["accuracy"]))
    if r["canvas"]:
        for n, v in r["canvas"]["models"].items():
            print(f"canvas {n}: {v['train_position']:.3f} at the training position, "
                  f"{v['test_position']:.3f} in the opposite corner")
    print(f"wrote {Path(args.out) / 'invariance.html'}")
    return 0


def add_parser(subparsers):
    """``cnnlab explain invariance``."""
    p = subparsers.add_parser(
        "invariance", help="shift/rotation robustness of a CNN vs an MLP, equivariance, pooling, canvas experiment",
        description="Measure how accuracy falls as test images are shifted or rotated for a CNN and an MLP of "
                    "similar size, show that feature maps move with the input while pooled features barely change, "
                    "and train images in one corner of a larger canvas to test them in another. Writes PNGs, "
                    "invariance.json and a self-contained invariance.html.")
    add_common_arguments(p, "invariance")  # --model (the CNN to test), --dataset, --data-dir, --image, ... --out
    p.add_argument("--mlp", metavar="RUN_OR_FILE", help="the MLP to compare (default: train one now, of similar size)")
    p.add_argument("--max-shift", type=int, default=8, help="largest shift in pixels (default 8)")
    p.add_argument("--max-degrees", type=int, default=30, help="largest rotation in degrees (default 30)")
    p.add_argument("--degree-step", type=int, default=10, help="rotation step in degrees (default 10)")
    p.add_argument("--n-train", type=int, default=5000, help="training images for the models trained here (default 5000)")
    p.add_argument("--n-test", type=int, default=500, help="test images (the first of the test split; default 500)")
    p.add_argument("--epochs", type=int, default=3, help="epochs for the models trained here (default 3)")
    p.add_argument("--no-canvas", action="store_true", help="skip the train-in-one-corner canvas experiment")
    p.add_argument("--canvas-size", type=int, help="canvas side (default: image side + 12, 40 for 28x28)")
    p.set_defaults(func=_cli)
    return p
