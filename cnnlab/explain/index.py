"""``cnnlab explain`` (or ``cnnlab explain all``): every tool on one model, and a page that leads through them.

The index page tells the lesson's story (``cnnlab.analysis.lesson``, the
explorer's Lesson tab) in the lesson's order: each tool's page belongs to one
lesson step (:data:`LESSON_STEP`) and appears under that step's number, title
and questions, from *how* a convolutional network computes (the convolution
step, feature maps) to *why* it works (weight sharing, matched filtering,
invariance) to *what* a trained model looks at (saliency): one short paragraph
per step with its pictures and numbers, each linking to the tool's full page.
Every tool runs on the same subject (one model, by default the default subject
that ``cnnlab serve`` shows, and its data); the page names both.
"""
from __future__ import annotations

from pathlib import Path

from ..analysis import texts
from ..analysis.lesson import outline
from . import common
from .conv import explain_conv
from .features import explain_features
from .invariance import invariance_experiment
from .matched_filter import explain_matched_filter
from .saliency import explain_saliency
from .subject import (DEFAULT_OUT, add_common_arguments, data_noun, log_to, model_argument, resolve_subject,
                      stderr_log)
from .weight_sharing import explain_weight_sharing

TOOLS = ("conv", "features", "weight-sharing", "matched-filter", "invariance", "saliency")
LESSON_STEP = {"conv": "convolution", "features": "maps", "weight-sharing": "sharing", "matched-filter": "matched",
               "invariance": "invariance", "saliency": "looks"}     # each tool's page: the lesson step it belongs to


def lesson_order() -> list:
    """``[(tool, lesson step)]`` in the lesson's order (``lesson.outline()``'s entries)."""
    steps = {s["id"]: s for s in outline()}
    return sorted(((t, steps[LESSON_STEP[t]]) for t in TOOLS), key=lambda ts: ts[1]["step"])


def explain_all(out=DEFAULT_OUT, model=None, dataset=None, data_dir=None, image=None, index=0, invert="auto",
                seed=0, log=None, options=None) -> dict:
    """Run every tool on one subject into ``out/<tool>`` and write ``out/index.html``; return their results.

    ``model``: a run directory, ``.safetensors`` file or ``Sequential``
    (default: the demo model trained once, now). ``weight-sharing`` trains its
    own three models on the same data (it compares kinds of layers), and
    ``invariance`` trains its comparison models beside the subject's CNN.
    ``options`` maps a tool (``"subject"`` for the model trained here) to more
    keyword arguments for its function, e.g. ``{"invariance": {"n_train": 500}}``.
    """
    out = common.out_dir(out)
    opt = {t: dict((options or {}).get(t, {})) for t in ("subject",) + TOOLS}
    subject = resolve_subject(model, dataset, data_dir, seed=seed, log=log, **opt["subject"])
    ds, dd = subject.dataset, subject.data_dir
    r = {}
    log_to(log, "conv: the convolution step ...")
    r["conv"] = explain_conv(out=out / "conv", seed=seed, dataset=ds, data_dir=dd, index=index, **opt["conv"])
    log_to(log, "features: every layer's maps ...")
    r["features"] = explain_features(out / "features", model=subject, image=image, index=index, invert=invert,
                                     seed=seed, **opt["features"])
    log_to(log, "weight-sharing: conv vs locally connected vs dense ...")
    r["weight-sharing"] = explain_weight_sharing(out=out / "weight-sharing", dataset=ds, data_dir=dd, seed=seed,
                                                 **opt["weight-sharing"])
    log_to(log, "matched-filter: filters as templates ...")
    r["matched-filter"] = explain_matched_filter(out=out / "matched-filter", model=subject, seed=seed,
                                                 **opt["matched-filter"])
    log_to(log, "invariance: shifts, rotations, pooling ...")
    r["invariance"] = invariance_experiment(out / "invariance", model=subject, image=image, index=index,
                                            invert=invert, seed=seed, log=log, **opt["invariance"])
    log_to(log, "saliency: where the model looks ...")
    r["saliency"] = explain_saliency(out / "saliency", model=subject, image=image, index=index, invert=invert,
                                     seed=seed, **opt["saliency"])
    write_index(out / "index.html", subject, r)
    return r


def _pic(path, alt, width="48%"):
    return common.img_tag(Path(path).read_bytes(), alt, width=width)


def _link(tool, page):
    return f'<p><a href="{tool}/{page}">The full {tool} page &rarr;</a></p>'


def write_index(path, subject, r):
    """The index page: one paragraph, pictures and a link per tool, under its lesson step, in the lesson's order."""
    out = Path(path).parent
    esc = common.esc
    noun = data_noun(subject.dataset)
    f, ws, mf, inv, sal, cv = (r["features"], r["weight-sharing"], r["matched-filter"], r["invariance"],
                               r["saliency"], r["conv"])
    first = next((s for s in f["layers"] if s["type"] == "Conv2D"), f["layers"][0])
    acc = ws["accuracy"] or {}
    edges = cv["edges"]

    def para(text):
        return f"<p>{esc(text)}</p>"

    order = lesson_order()
    intro = (f"<p>One model, <b>{esc(subject.description)}</b>, on <b>{esc(subject.data_name)}</b>, seen six ways. "
             "Read from top to bottom: first <i>how</i> a convolutional network computes, then <i>why</i> that "
             "works, then <i>what</i> this model looks at. Each step links to its tool's full page.</p>"
             + para(texts.lesson_order(outline(), {step["step"] for _, step in order})))
    body = {
        "conv":
         _pic(out / "conv" / "conv_output.png", "convolution result", "70%") +
         para(texts.conv_step(cv["kernel_shape"], cv["input_shape"], cv["output_shape"])) +
         _pic(out / "conv" / "edge_detector.png", "edge kernels on a real picture", "90%") +
         para(texts.edge_summary(edges["description"], edges["kernels"])) + _link("conv", "conv.html"),
        "features":
         _pic(out / "features" / f["layers"][first["index"]]["png"], "first layer's feature maps") +
         _pic(out / "features" / "filters.png", "learned filters") +
         para(texts.feature_maps_summary(first["name"], first["output_shape"][-1], f["image"]["source"],
                                         f["prediction"]["class_name"], f["prediction"]["probability"]))
         + _link("features", "features.html"),
        "weight-sharing":
         _pic(out / "weight-sharing" / "weight_sharing_matrix.png", "weight matrices") +
         (_pic(out / "weight-sharing" / "weight_sharing_results.png", "accuracy and parameters") if acc else "") +
         para(texts.weight_sharing_summary(ws["training"]["n_train"], ws["training"]["dataset"], ws["parameters"],
                                           acc))
         + _link("weight-sharing", "weight_sharing.html"),
        "matched-filter":
         _pic(out / "matched-filter" / "matched_filter_response.png", "template matching", "70%") +
         para(texts.matched_filter_summary(noun, [x["mean_top_cosine"] for x in mf["filters"]]))
         + _link("matched-filter", "matched_filter.html"),
        "invariance":
         _pic(out / "invariance" / "invariance_shift.png", "accuracy against shift") +
         _pic(out / "invariance" / "invariance_features.png", "feature change against shift") +
         para(texts.invariance_summary(noun, inv["shifts"][-1], {n: v[-1] for n, v in inv["accuracy"].items()},
                                       {n: v[-1] for n, v in inv["feature_change"].items()}))
         + _link("invariance", "invariance.html"),
        "saliency":
         _pic(out / "saliency" / "saliency.png", "saliency maps", "90%") +
         para(texts.saliency_summary(sal["image"]["source"], sal["class_name"], sal["probability"]))
         + _link("saliency", "saliency.html"),
    }
    sections = [(texts.lesson_heading(step), body[tool]) for tool, step in order]
    common.write_html(path, "Why convolution works: a walk through one model", sections, intro=intro)
    return path


def _cli(args):
    explain_all(args.out, model=model_argument(args), dataset=args.dataset, data_dir=args.data_dir, image=args.image,
                index=args.index, invert=args.invert, seed=args.seed, log=stderr_log)
    print(f"wrote {Path(args.out) / 'index.html'} and one folder per tool")
    return 0


def add_parser(subparsers):
    """``cnnlab explain all`` (also what ``cnnlab explain`` alone runs)."""
    p = subparsers.add_parser(
        "all", help="every tool on one model, and an index page leading from how to why to what",
        description="Run every explain tool on one model (trained once now unless --model is given) and write "
                    "index.html, which leads from how a CNN computes (the convolution step, feature maps) to why "
                    "it works (weight sharing, matched filtering, invariance) to what the model looks at "
                    "(saliency), with each tool's full page in its own folder.")
    add_common_arguments(p, "")
    p.set_defaults(func=_cli)
    return p
