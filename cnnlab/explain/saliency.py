r"""``cnnlab explain saliency``: which pixels a prediction depends on, drawn over the image, one page.

The four maps -- gradient saliency (Simonyan et al. 2014), SmoothGrad (Smilkov et al. 2017),
occlusion sensitivity (Zeiler & Fergus 2014) and Grad-CAM (Selvaraju et al. 2017) -- are computed
by :mod:`cnnlab.analysis.attribution`, whose docstring gives their formulas; this module draws each
over the image with one sentence on what it shows, and writes ``saliency.html`` and ``saliency.json``.
Grad-CAM defaults to the last convolution's own output, before its activation (``--layer`` chooses
another layer).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import images
from ..analysis.attribution import (check_class, grad_cam, gradient_saliency, map_stats, occlusion_sensitivity,
                                    smoothgrad, top_pixels)
from . import common
from .result import ExplainResult
from .subject import (add_common_arguments, model_argument, pick_input, resolve_subject, shape_text, softmax1,
                      stderr_log)


# ---------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------
def _gray(x):
    x = np.asarray(x, np.float64)
    return x[..., 0] if x.shape[-1] == 1 else x


def _overlay(fig, ax, x, m, title, cmap="inferno", vmin=None, vmax=None, label="saliency"):
    common.show_image(ax, _gray(x), cmap="gray", vmin=0, vmax=1)
    im = ax.imshow(m, cmap=cmap, alpha=0.6, vmin=vmin, vmax=vmax, interpolation="bilinear"
                   if m.shape != tuple(x.shape[:2]) else "nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    common.colorbar(fig, im, ax, label)
    return im


def _method_figure(x, m, title, cmap, vmin, vmax, label, caption):
    """Three panels: the image, the map alone, the map over the image; colour bars on both maps."""
    fig = common.new_figure(10.5, 3.5)
    fig.set_layout_engine("constrained")
    ax0, ax1, ax2 = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    common.show_image(ax0, _gray(x), cmap="gray", vmin=0, vmax=1)
    ax0.set_title("image", fontsize=9)
    ax0.set_xticks([])
    ax0.set_yticks([])
    im = ax1.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax1.set_title(caption, fontsize=9)
    ax1.set_xlabel("column")
    ax1.set_ylabel("row")
    common.colorbar(fig, im, ax1, label)
    _overlay(fig, ax2, x, m, "over the image", cmap, vmin, vmax, label)
    fig.suptitle(title, fontsize=10)
    return fig


def explain_saliency(out, model=None, image=None, index=0, class_index=None, dataset=None, data_dir=None,
                     patch=None, stride=1, fill=0.0, layer=None, invert="auto", center="auto", seed=0, log=None,
                     smooth_samples=32, smooth_sigma=0.15) -> dict:
    """Gradient saliency, occlusion sensitivity and Grad-CAM for one image and one class.

    Args:
        out: output folder (created).
        model: ``Sequential``, run directory or ``.safetensors`` file; ``None`` trains the demo model (the zoo's ``tiny_cnn``) now.
        image: path of a picture; default test image ``index`` of the model's dataset.
        class_index: the class to explain (default: the predicted class).
        patch, stride, fill: occlusion patch side (default a fifth of the image), grid stride, value
            (a number or ``"mean"``).
        layer: Grad-CAM layer name (default: the last convolution).
        smooth_samples, smooth_sigma: SmoothGrad's noisy copies and noise (relative to the image's range).

    Writes ``saliency_gradient.png``, ``saliency_smoothgrad.png``, ``saliency_occlusion.png``, ``saliency_gradcam.png``,
    ``saliency.png`` (all three), ``saliency.json`` and ``saliency.html``; returns the JSON content.
    """
    out = common.out_dir(out)
    subject = resolve_subject(model, dataset, data_dir, seed=seed, log=log)
    net = subject.model
    x, label, source = pick_input(subject, image, index, invert, center)
    x = x.astype(np.float32)
    logits = net.logits(x[None])[0]
    probs = softmax1(logits)
    pred = int(np.argmax(probs))
    k = pred if class_index is None else check_class(net, class_index)
    cname = subject.class_name(k)

    grad = gradient_saliency(net, x, k)
    smooth = smoothgrad(net, x, k, samples=smooth_samples, sigma=smooth_sigma, seed=seed)
    occ = occlusion_sensitivity(net, x, k, patch=patch, stride=stride, fill=fill)
    occ_img = np.repeat(np.repeat(occ["map"], occ["stride"], 0), occ["stride"], 1)[:x.shape[0], :x.shape[1]]
    cam = grad_cam(net, x, k, layer)
    cam_max = float(cam["map"].max())
    cam_norm = cam["map"] / cam_max if cam_max > 0 else cam["map"]

    what = f"class {cname}" + (" (predicted)" if k == pred else f" (predicted: {subject.class_name(pred)})")
    files, imgs = [], {}
    figs = {
        "gradient": _method_figure(x, grad, f"gradient saliency |dS/dx| for {what}", "inferno", 0,
                                   float(grad.max()) or 1.0, "|d score / d pixel|", "|dS_k/dx| per pixel"),
        "smoothgrad": _method_figure(x, smooth, f"SmoothGrad: |dS/dx| averaged over {smooth_samples} noisy copies "
                                     f"(noise {smooth_sigma:g}) for {what}", "inferno", 0, float(smooth.max()) or 1.0,
                                     "|mean d score / d pixel|", "averaged over noisy copies"),
        "occlusion": _method_figure(x, occ_img, f"occlusion: drop of p({cname}) when a {occ['patch']}\u00d7"
                                    f"{occ['patch']} patch (value {occ['fill']:.2g}) is centred here",
                                    common.SIGNED_CMAP, *common.symmetric_limits(occ_img), "probability drop",
                                    "drop of the class probability"),
        "gradcam": _method_figure(x, cam_norm, f"Grad-CAM at layer {cam['layer']} "
                                  f"({cam['cam'].shape[0]}\u00d7{cam['cam'].shape[1]} upsampled) for {what}",
                                  "inferno", 0, 1, "relative importance", "ReLU(sum_c alpha_c A_c) / max"),
    }
    for key, fig in figs.items():
        name = f"saliency_{key}.png"
        imgs[key] = common.save_figure(fig, out / name)
        files.append(name)

    # all three side by side
    fig = common.new_figure(17, 3.6)
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot(1, 5, 1)
    common.show_image(ax, _gray(x), cmap="gray", vmin=0, vmax=1)
    truth = f"true {subject.class_name(label)}, " if label is not None else ""
    ax.set_title(f"{truth}predicted {subject.class_name(pred)} ({probs[pred]:.1%})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    _overlay(fig, fig.add_subplot(1, 5, 2), x, grad, "gradient |dS/dx|", "inferno", 0, float(grad.max()) or 1.0,
             "|dS/dx|")
    _overlay(fig, fig.add_subplot(1, 5, 3), x, smooth, "SmoothGrad", "inferno", 0, float(smooth.max()) or 1.0,
             "|mean dS/dx|")
    _overlay(fig, fig.add_subplot(1, 5, 4), x, occ_img, f"occlusion ({occ['patch']}px patch)", common.SIGNED_CMAP,
             *common.symmetric_limits(occ_img), "drop of p")
    _overlay(fig, fig.add_subplot(1, 5, 5), x, cam_norm, f"Grad-CAM ({cam['layer']})", "inferno", 0, 1,
             "relative")
    fig.suptitle(f"where the network looks for {what}, p = {probs[k]:.3f}", fontsize=10)
    summary_png = common.save_figure(fig, out / "saliency.png")
    files.append("saliency.png")

    order = np.argsort(probs)[::-1]
    result = {
        "model": subject.description, "image": {"source": source, "label": label,
                                                "label_name": subject.class_name(label) if label is not None else None},
        "class": k, "class_name": cname, "probability": float(probs[k]), "logit": float(logits[k]),
        "predicted": pred, "predicted_name": subject.class_name(pred),
        "probabilities": [float(p) for p in probs],
        "gradient": {**map_stats(grad), "top_pixels": top_pixels(grad), "map": grad},
        "smoothgrad": {**map_stats(smooth), "samples": int(smooth_samples), "sigma": float(smooth_sigma),
                       "top_pixels": top_pixels(smooth), "map": smooth},
        "occlusion": {**map_stats(occ["map"]), "patch": occ["patch"], "stride": occ["stride"], "fill": occ["fill"],
                      "top_pixels": top_pixels(occ["map"]), "map": occ["map"],
                      "note": "map[i][j]: p(class) of the image minus p(class) with the patch centred on pixel "
                              "(i*stride, j*stride) covered"},
        "grad_cam": {"layer": cam["layer"], "feature_map_shape": list(cam["activations"].shape),
                     "weights": cam["weights"], "cam": cam["cam"], **map_stats(cam["map"]),
                     "top_pixels": top_pixels(cam["map"]), "map": cam["map"]},
        "files": files + ["saliency.json", "saliency.html"],
    }
    common.save_json(out / "saliency.json", result)

    esc = common.esc
    top = common.table_html(["class", "probability"], [(subject.class_name(int(i)), f"{probs[i]:.4f}")
                                                       for i in order[:5]])
    intro = (f"<p>Where does <b>{esc(subject.description)}</b> look when it scores {esc(source)} as "
             f"<b>{esc(cname)}</b> (probability {probs[k]:.3f})? Four answers, each a map over the "
             "image drawn on top of it.</p>")
    sections = [
        ("Summary", common.img_tag(summary_png, "all three maps") + top),
        ("Gradient saliency", common.img_tag(imgs["gradient"], "gradient saliency") +
         "<p class='note'>|dS<sub>k</sub>/dx|, one backward pass from the class score to the pixels: a bright "
         "pixel is one whose tiny change would move the score most. That slope is exact but local, and with ReLUs "
         "it jumps from pixel to pixel, so the map is speckled and its brightest pixels can sit beside the "
         "stroke rather than on it.</p>"),
        ("SmoothGrad", common.img_tag(imgs["smoothgrad"], "SmoothGrad") +
         f"<p class='note'>The same gradient, averaged over {smooth_samples} copies of the image with noise of "
         f"standard deviation {smooth_sigma:g} added (Smilkov et al. 2017): the pixel-to-pixel jumps partly "
         "average out, so what stays bright is where the score depends on the image over a small neighbourhood, "
         "not at one exact point.</p>"),
        ("Occlusion sensitivity", common.img_tag(imgs["occlusion"], "occlusion sensitivity") +
         f"<p class='note'>A {occ['patch']}\u00d7{occ['patch']} patch of value {occ['fill']:.3g} is centred on "
         f"every {'pixel' if occ['stride'] == 1 else str(occ['stride']) + 'th pixel'}; the colour is how much the "
         "class probability falls. Red: the patch hid evidence for the class; blue: it hid evidence against it. "
         f"{len(occ['centres'])} occluded copies, one forward pass each: slow, but honest, since it measures what "
         "the model does when that part of the image is really gone.</p>"),
        ("Grad-CAM", common.img_tag(imgs["gradcam"], "Grad-CAM") +
         f"<p class='note'>Feature maps of <code>{esc(cam['layer'])}</code> "
         f"({shape_text(cam['activations'].shape)}) weighted by the mean gradient of the score "
         "over each map, summed, rectified and upsampled. Its cells are coarse because it is computed at that "
         f"layer's resolution ({cam['cam'].shape[0]}\u00d7{cam['cam'].shape[1]}), not the image's: it shows "
         "which regions carry the class evidence, not which pixels.</p>"),
    ]
    common.write_html(out / "saliency.html", f"Saliency: why {cname}?", sections, intro=intro)
    return ExplainResult(result, f"Saliency: why {cname}?", out, ["saliency.png"])


def _fill_arg(text):
    if text == "mean":
        return "mean"
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--fill must be a number or 'mean', received {text!r}") from None


def _cli(args):
    result = explain_saliency(args.out, model=model_argument(args), image=args.image, index=args.index,
                              class_index=args.class_index, dataset=args.dataset, data_dir=args.data_dir,
                              patch=args.patch, stride=args.stride, fill=_fill_arg(args.fill), layer=args.layer,
                              **images.options_from(args), seed=args.seed, log=stderr_log)
    print(f"class {result['class_name']} (p = {result['probability']:.3f}); "
          f"wrote {Path(args.out) / 'saliency.html'}")
    return 0


def add_parser(subparsers):
    """``cnnlab explain saliency``."""
    p = subparsers.add_parser(
        "saliency", help="gradient saliency, occlusion sensitivity and Grad-CAM for one image",
        description="Show which pixels a prediction depends on: the gradient of the class score, the drop in "
                    "probability when patches are hidden, SmoothGrad and Grad-CAM. Writes PNGs, saliency.json and a "
                    "self-contained saliency.html.")
    add_common_arguments(p, "saliency")
    p.add_argument("--class", dest="class_index", type=int, metavar="K",
                   help="class to explain (default: the predicted class)")
    p.add_argument("--patch", type=int, help="occlusion patch side in pixels (default: a fifth of the image)")
    p.add_argument("--stride", type=int, default=1, help="occlusion grid stride (default 1: every pixel)")
    p.add_argument("--fill", default="0", help="occlusion value: a number or 'mean' (default 0)")
    p.add_argument("--layer", help="Grad-CAM layer (default: the last convolution)")
    p.set_defaults(func=_cli)
    return p
