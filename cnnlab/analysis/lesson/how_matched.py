r"""Step 7: matched filtering. ``response = <k, p> = |k| |p| cos(k, p)`` (Cauchy-Schwarz).

On the current input: the filter answering ``ctx.x`` most (the answer to "which filter answers this
stroke?") and its best patch, the three factors multiplied back. On the model's own images
(:func:`cnnlab.analysis.patches.responses_and_cosines`, :func:`~cnnlab.analysis.patches.top_patches`): the
patches ranked by response and by cosine (among patches of at least ``EQUAL_CONTRAST`` of the largest
contrast), random ones for comparison, and how much of the ranking is contrast and how much shape:
Spearman's rank correlation of the response with ``|p|`` and with ``cos(k, p)`` over the patches the filter
answers (response > 0, at most ``SAMPLE`` of them per filter). Over all patches the cosine would win by its
sign alone (a negative response has a negative cosine, and no norm is negative), so only positive responses
count; their logarithm is ``log |k| + log |p| + log cos`` exactly, and the ranking splits into those two factors. Per-model work is cached (:func:`.how_common.cached`).
"""
from __future__ import annotations

import numpy as np

from .. import texts
from ..patches import responses_and_cosines, top_patches
from ..units import conv_unit
from .how_common import cached, first_layer, first_layer_inputs, kernel_picture, own_images

TOP = 6                 # patches shown per ranking
EQUAL_CONTRAST = 0.5    # ranked by cosine: patches with at least this fraction of the largest |p|
SAMPLE = 5000           # non-empty patches per filter in the rank correlations
CHOICES = 6             # filters offered in the prediction


def _ranks(v) -> np.ndarray:
    r = np.empty(len(v))
    r[np.argsort(v, kind="stable")] = np.arange(len(v))
    return r


def spearman(a, b) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (ties broken by order)."""
    ra, rb = _ranks(np.asarray(a)), _ranks(np.asarray(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    d = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / d) if d > 0 else 0.0


def rankings(layer, images) -> dict:
    """Per filter: rank correlations of the response with contrast and with cosine, the top positions by
    cosine among patches of equal contrast, ``top_patches``' records; and random non-empty positions."""
    rc = responses_and_cosines(layer, images)
    resp, norm, cos = rc["response"], rc["norm"], rc["cosine"]
    rng = np.random.default_rng(0)
    filled = np.flatnonzero(norm.reshape(-1) > 0)
    strong = norm >= EQUAL_CONTRAST * norm.max()
    tops = top_patches(layer, images, k=TOP, per_image=1, random_patches=200)
    per = []
    for f in range(resp.shape[3]):
        r, c = resp[..., f].reshape(-1), cos[..., f].reshape(-1)
        answered = np.flatnonzero(r > 0)
        sample = rng.choice(answered, min(SAMPLE, len(answered)), replace=False)
        masked = np.where(strong, cos[..., f], -np.inf).reshape(len(images), -1)
        best = masked.max(axis=1)                          # one patch per image, as top_patches does
        by_cos = [(int(n), *divmod(int(np.argmax(masked[n])), resp.shape[2]))
                  for n in np.argsort(-best, kind="stable")[:TOP] if np.isfinite(best[n])]
        per.append({"rho_norm": spearman(r[sample], norm.reshape(-1)[sample]) if len(sample) > 2 else 0.0,
                    "rho_cosine": spearman(r[sample], c[sample]) if len(sample) > 2 else 0.0,
                    "answered": len(answered), "by_cosine": by_cos, "top": tops[f]})
    rand = [(int(n), int(i), int(j)) for n, i, j in
            zip(*np.unravel_index(rng.choice(filled, min(TOP, len(filled)), replace=False), norm.shape))]
    return {"filters": per, "random": rand, "patches": len(filled), "kernel_norm": rc["kernel_norm"]}


def _item(layer, images, f, n, i, j, kn):
    """A patch of ``images[n]`` at output ``(i, j)`` for filter ``f``, labelled with its response, norm, cosine."""
    d = conv_unit(layer, images[n], f, i, j)
    p = np.linalg.norm(d["patch"])
    cos = d["sum"] / (kn * p) if p > 0 else 0.0
    return {"label": f"{d['sum']:.2f} = {kn:.2f} \u00d7 {p:.2f} \u00d7 {cos:.2f}", "map": kernel_picture(d["patch"])}, \
        (d["sum"], p, cos)


def matched(ctx) -> dict:
    """Step 7: response = |k| |p| cos on this input's best patch, and contrast against shape on the model's data."""
    got = first_layer(ctx)
    if isinstance(got, dict):
        return got
    d, layer, f, y, x = got.detail(ctx), got.layer, got.f, got.y, got.x
    kn, pn = float(np.linalg.norm(d["kernel"])), float(np.linalg.norm(d["patch"]))
    cosine = d["sum"] / (kn * pn) if kn * pn > 0 else 0.0
    peaks = got.out.reshape(-1, got.out.shape[2]).max(axis=0)
    numbers = {"filter": f, "y": y, "x": x, "response": d["sum"], "bias": d["bias"], "kernel_norm": kn,
               "patch_norm": pn, "cosine": cosine}
    figures = [{"kind": "bars", "labels": [f"filter {k}" for k in range(len(peaks))], "values": peaks,
                "alt": f"Each filter's largest output on this input; filter {f} answers most ({peaks[f]:.3f})."},
               {"kind": "maps", "signed": True, "shared": False, "items": [
                   {"label": f"kernel {f}: |k| = {kn:.2f}", "map": kernel_picture(d["kernel"])},
                   {"label": f"best patch: |p| = {pn:.2f}, cos = {cosine:.2f}", "map": kernel_picture(d["patch"])}],
                "alt": f"Filter {f}'s kernel and this input's patch at row {y}, column {x}: "
                       f"{kn:.3f} times {pn:.3f} times {cosine:.3f} = {d['sum']:.3f}."}]
    paragraphs = [texts.lesson_matched(f, d["sum"], kn, pn, cosine, d["bias"])]
    mine = own_images(ctx)
    if isinstance(mine, str):
        paragraphs.append(mine)
    else:
        images, source = mine
        try:
            data = first_layer_inputs(ctx, layer, images)
            r = cached(ctx.model, "matched", [*layer.params.values(), images], lambda: rankings(layer, data))
        except ValueError as e:                    # a grouped convolution: no cosine with one kernel
            paragraphs.append(str(e))
        else:
            paragraphs.extend(_data_part(layer, data, f, r, source, numbers, figures))
    order = np.argsort(-peaks, kind="stable")[:CHOICES]
    offered = sorted(int(k) for k in order)
    predict = {"question": "Which filter answers this drawing most strongly?",
               "choices": [f"filter {k}" for k in offered], "answer": offered.index(f),
               "reveal": texts.lesson_which_filter(f, float(peaks[f]), y, x)}
    return {"paragraphs": paragraphs, "numbers": numbers, "figures": figures, "predict": predict,
            "link": got.link}


def _data_part(layer, data, f, r, source, numbers, figures) -> list:
    """The rankings of filter ``f`` on the model's images: numbers, three figures, the paragraph."""
    per = r["filters"][f]
    kn = float(r["kernel_norm"][f])
    rows = {"by response": [(p["image"], p["row"], p["col"]) for p in per["top"]["top_patches"]],
            "by cosine": per["by_cosine"], "random": r["random"]}
    titles = {"by response": "the patches it answers most", "by cosine": "the patches most like the kernel "
              f"(|p| at least {EQUAL_CONTRAST:.0%} of the largest)", "random": "random patches"}
    for name, where in rows.items():
        made = [_item(layer, data, f, n, i, j, kn) for n, i, j in where]
        key = name.replace("by ", "").replace(" ", "_")
        numbers[f"{key}_mean_cosine"] = float(np.mean([m[1][2] for m in made])) if made else 0.0
        numbers[f"{key}_mean_norm"] = float(np.mean([m[1][1] for m in made])) if made else 0.0
        figures.append({"kind": "maps", "signed": True, "shared": False, "size": 42, "title": titles[name],
                        "items": [m[0] for m in made],
                        "alt": f"{titles[name].capitalize()} ({len(made)}, from the {source} images): mean cosine "
                               f"{numbers[f'{key}_mean_cosine']:.2f}, mean |p| {numbers[f'{key}_mean_norm']:.2f}."})
    numbers.update(rho_norm=per["rho_norm"], rho_cosine=per["rho_cosine"], images=len(data), patches=r["patches"],
                   answered=per["answered"],
                   rho_norm_all=float(np.mean([p["rho_norm"] for p in r["filters"]])),
                   rho_cosine_all=float(np.mean([p["rho_cosine"] for p in r["filters"]])),
                   random_cosine_mean=per["top"]["random_cosine_mean"],
                   random_cosine_std=per["top"]["random_cosine_std"])
    return texts.lesson_contrast_or_shape(f, len(data), source, per["rho_norm"], per["rho_cosine"],
                                          numbers["rho_norm_all"], numbers["rho_cosine_all"],
                                          numbers["response_mean_cosine"], numbers["random_cosine_mean"],
                                          numbers["random_cosine_std"])
