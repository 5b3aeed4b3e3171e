"""``cnnlab explain`` (or ``cnnlab explain all``): every tool on one model, and a page that leads through them.

The index page goes from *how* a convolutional network computes (the
convolution step, feature maps) to *why* it works (weight sharing, matched
filtering, invariance) to *what* a trained model looks at (saliency): one short
paragraph per step with its pictures and numbers, each linking to the tool's
full page. Every tool runs on the same subject (one model, trained once unless
``--model`` is given, and its data); the page names both.
"""
from __future__ import annotations

from pathlib import Path

from . import common
from .conv import explain_conv
from .features import explain_features
from .invariance import invariance_experiment
from .matched_filter import explain_matched_filter
from .saliency import explain_saliency
from .subject import DEFAULT_OUT, add_common_arguments, data_noun, log_to, resolve_subject, stderr_log
from .weight_sharing import explain_weight_sharing

TOOLS = ("conv", "features", "weight-sharing", "matched-filter", "invariance", "saliency")


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


def _pct(v):
    return f"{100 * v:.1f}%"


def _pic(path, alt, width="48%"):
    return common.img_tag(Path(path).read_bytes(), alt, width=width)


def _link(tool, page):
    return f'<p><a href="{tool}/{page}">The full {tool} page &rarr;</a></p>'


def write_index(path, subject, r):
    """The index page: one paragraph, pictures and a link per tool, in the order how -> why -> what."""
    out = Path(path).parent
    esc = common.esc
    noun = data_noun(subject.dataset)
    f, ws, mf, inv, sal, cv = (r["features"], r["weight-sharing"], r["matched-filter"], r["invariance"],
                               r["saliency"], r["conv"])
    first = next((s for s in f["layers"] if s["type"] == "Conv2D"), f["layers"][0])
    acc, params = ws["accuracy"] or {}, ws["parameters"]
    cos = [x["mean_top_cosine"] for x in mf["filters"]]
    last = inv["shifts"][-1]
    ch = {n: v[-1] for n, v in inv["feature_change"].items()}
    edges = cv["edges"]
    fired = " and ".join(f"{_pct(k['on_border'])} of the strong responses of the kernel for {k['name']}"
                         for k in edges["kernels"])
    intro = (f"<p>One model, <b>{esc(subject.description)}</b>, on <b>{esc(subject.data_name)}</b>, seen six ways. "
             "Read from top to bottom: first <i>how</i> a convolutional network computes, then <i>why</i> that "
             "works, then <i>what</i> this model looks at. Each step links to its tool's full page.</p>")
    sections = [
        ("1. How: the convolution step",
         _pic(out / "conv" / "conv_output.png", "convolution result", "70%") +
         f"<p>A small kernel ({cv['kernel_shape'][0]}\u00d7{cv['kernel_shape'][1]}) slides over the image; at each "
         "position the pixels under it are multiplied by its weights and summed, plus a bias. Every output cell is "
         f"that one sum: here a {cv['input_shape'][0]}\u00d7{cv['input_shape'][1]} input gives a "
         f"{cv['output_shape'][0]}\u00d7{cv['output_shape'][1]} output.</p>" +
         _pic(out / "conv" / "edge_detector.png", "edge kernels on a real picture", "90%") +
         f"<p>Why that is useful: two hand-made edge kernels slid over {esc(edges['description'])} light up where "
         f"its ink meets the background: {fired} lie on the ink's border, which covers "
         f"{_pct(edges['kernels'][0]['border_share'])} of the picture.</p>" + _link("conv", "conv.html")),
        ("2. How: feature maps",
         _pic(out / "features" / f["layers"][first["index"]]["png"], "first layer's feature maps") +
         _pic(out / "features" / "filters.png", "learned filters") +
         f"<p>The model's first convolution ({esc(first['name'])}) has {first['output_shape'][-1]} filters, so "
         f"it turns {esc(f['image']['source'])} into {first['output_shape'][-1]} feature maps, each bright where "
         "its filter's pattern occurs (right: the filters themselves, red adds the pixel, blue subtracts it). "
         "Later layers combine these maps; the last one gives the class scores: here "
         f"<b>{esc(f['prediction']['class_name'])}</b> ({f['prediction']['probability']:.0%}).</p>"
         + _link("features", "features.html")),
        ("3. Why: weight sharing",
         _pic(out / "weight-sharing" / "weight_sharing_matrix.png", "weight matrices") +
         (_pic(out / "weight-sharing" / "weight_sharing_results.png", "accuracy and parameters") if acc else "") +
         "<p>A convolution is a fully connected layer whose matrix is mostly zeros, with the same few weights "
         "repeated along its diagonals: one small neuron copied over every patch. "
         + (f"This step trains its own three small models, each until its training loss stops falling, on the "
            f"same {ws['training']['n_train']:,} {esc(ws['training']['dataset'])} images: the "
            f"convolution ({params['conv']:,} parameters) reaches {_pct(acc['conv'])}, the locally connected layer "
            f"(the same sparsity, untied, {params['locally_connected']:,}) {_pct(acc['locally_connected'])} and a "
            f"dense network of about the convolution's size {_pct(acc['dense'])}." if acc else "")
         + "</p>" + _link("weight-sharing", "weight_sharing.html")),
        ("4. Why: matched filtering",
         _pic(out / "matched-filter" / "matched_filter_response.png", "template matching", "70%") +
         "<p>The output of a convolution at a position is the dot product of its kernel with the patch there: "
         "largest where the patch looks like the kernel. So a kernel is a template and its feature map says where "
         f"the template matches. The model's first-layer filters, each compared with the {noun} patches that "
         f"excite it most, have mean cosine similarities between {min(cos):.2f} and {max(cos):.2f} with them.</p>"
         + _link("matched-filter", "matched_filter.html")),
        ("5. Why: invariance",
         _pic(out / "invariance" / "invariance_shift.png", "accuracy against shift") +
         _pic(out / "invariance" / "invariance_features.png", "feature change against shift") +
         "<p>Move the input and the feature maps move with it (equivariance); averaging a map over the whole image "
         f"throws the position away (invariance). Shifted by {last} px, the {noun}s are still recognized "
         f"{_pct(inv['accuracy']['cnn'][-1])} of the time by this CNN and {_pct(inv['accuracy']['cnn_gap'][-1])} "
         f"by one with global average pooling, against {_pct(inv['accuracy']['mlp'][-1])} for an MLP of about the "
         f"same size. The classifier's features change by {ch['cnn_gap']:.2f} (relative) with global average "
         f"pooling, {ch['cnn']:.2f} with max pooling, {ch['mlp']:.2f} in the MLP.</p>"
         + _link("invariance", "invariance.html")),
        ("6. What the model looks at: saliency",
         _pic(out / "saliency" / "saliency.png", "saliency maps", "90%") +
         f"<p>For {esc(sal['image']['source'])} and the class <b>{esc(sal['class_name'])}</b> "
         f"(p = {sal['probability']:.2f}): which pixels a tiny change would move the score most (gradient; "
         "speckled, because that slope jumps from pixel to pixel), the same averaged over noisy copies "
         "(SmoothGrad), which regions hurt the prediction most when hidden (occlusion), and which regions of the "
         "last convolution's coarser maps carry the evidence (Grad-CAM).</p>" + _link("saliency", "saliency.html")),
    ]
    common.write_html(path, "Why convolution works: a walk through one model", sections, intro=intro)
    return path


def _cli(args):
    explain_all(args.out, model=args.model, dataset=args.dataset, data_dir=args.data_dir, image=args.image,
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
