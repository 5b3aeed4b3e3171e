"""The numbers behind the lesson's "why edges" step for the default subject, and its figure.

    python benchmarks/lesson_numbers.py [--dataset shapes|mnist] [--data-dir DIR] [--seed 0] [--figure PNG]

Trains the default subject (one seed) and its first-layer-frozen twin (cnnlab.analysis.untrained), then
prints: oriented filters (spectral and stimulus tuning), the equivariance error of the first convolution,
how much each kind of sub-sampling changes per pixel of shift, trained against frozen accuracy, and the
sentences cnnlab.analysis.texts chooses from them. ``--figure`` draws the learned filters and their
tuning curves beside the principal components of the data's 5x5 patches (matplotlib, here only).
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np

from cnnlab.analysis import equivariance as shifts, filters, subject, texts, untrained
from cnnlab.explain.subject import load_data


def figure(path, kernel, initial, comps, ratio, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    o = filters.oriented(kernel, initial)
    pcs = comps[..., :8]
    f = kernel.shape[3]
    fig, axes = plt.subplots(4, f, figsize=(1.6 * f, 6.8))
    ang = filters.ANGLES
    for j in range(f):
        k = kernel[:, :, 0, j]
        lim = np.abs(k).max()
        axes[0, j].imshow(k, cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[0, j].set_title(f"filter {j}\n{'oriented' if o['oriented'][j] else 'not oriented'}", fontsize=8)
        c = o["curves"][j] / o["curves"][j].max()
        axes[1, j].plot(ang, c, "k.-", ms=3)
        axes[1, j].set_ylim(0, 1.05)
        axes[1, j].set_xticks([0, 90, 180])
        axes[1, j].set_title(f"OSI {o['selectivity'][j]:.2f} (init {o['initial_selectivity'][j]:.2f})", fontsize=7)
        p = pcs[:, :, 0, j]
        lim = np.abs(p).max()
        axes[2, j].imshow(p, cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[2, j].set_title(f"PC {j + 1}: {100 * ratio[j]:.0f}% var.", fontsize=8)
        c = filters.fourier_tuning(pcs[..., j:j + 1])[0]
        axes[3, j].plot(ang, c / c.max(), "b.-", ms=3)
        axes[3, j].set_ylim(0, 1.05)
        axes[3, j].set_xticks([0, 90, 180])
        axes[3, j].set_title(f"OSI {filters.selectivity(c):.2f}", fontsize=7)
    for a in axes[[0, 2]].ravel():
        a.set_xticks([])
        a.set_yticks([])
    axes[1, 0].set_ylabel("tuning\n(spectral)", fontsize=8)
    axes[3, 0].set_ylabel("tuning\n(spectral)", fontsize=8)
    fig.suptitle(f"{title}\nrows: learned filters, their orientation tuning (0-180 deg), the data's 5x5 patch "
                 f"principal components, their tuning; threshold OSI {o['threshold']:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure")
    a = p.parse_args()
    recipe = subject.default_subject_recipe(a.dataset, a.data_dir, a.seed)
    (xtr, _), (xte, _), _ = load_data(a.dataset, a.data_dir, n_train=5000, n_test=200)
    with tempfile.TemporaryDirectory() as tmp:
        acc = untrained.random_filters_experiment(recipe, tmp)
        from cnnlab.model import load
        model = load(Path(tmp) / "trained")
        k0 = subject.initial_kernel(Path(tmp) / "trained")
    kernel = subject.first_conv(model).params["kernel"]
    o = filters.oriented(kernel, k0)
    o_stim = filters.oriented(kernel, k0, tuning="stimulus")
    print(f"{a.dataset} seed {a.seed}: oriented {o['count']}/8 (spectral), {o_stim['count']}/8 (stimulus)")
    print(texts.filters_sentence(o["count"], o["filters"], threshold=o["threshold"]))
    conv = subject.first_conv(model)
    for dy, dx in [(0, 1), (2, 3), (-4, 0)]:
        e = shifts.equivariance_error(conv.forward, xte[:100], dy, dx, border=shifts.conv_border(conv, xte.shape[1:3]))
        print(f"equivariance, shift ({dy}, {dx}): max |difference| {e['max_abs']:.2e} ({e['relative']:.2e} of the largest value)")
    fn = shifts.layer_maps(model, shifts.first_feature_layer(model))
    change = shifts.pooling_shift_change(fn, xte[:200], pool=2, shifts=(0, 1, 2, 3, 4))
    for kind, v in change.items():
        print(f"pooled by {kind:8s}: relative change at shifts 0..4 px: {' '.join(f'{c:.2f}' for c in v)}")
    print(texts.pooling_sentence(len(shifts.pooling_layers(model)), change))
    print(f"test accuracy: trained {acc['trained']:.3f}, first layer frozen at random init {acc['frozen']:.3f}")
    print(texts.random_filters_sentence(acc["trained"], acc["frozen"], acc["chance"]))
    comps, ratio = filters.patch_components(xtr, 5, 5)
    pc_osi = filters.selectivity(filters.fourier_tuning(comps[..., :8]))
    print("patch PCs 1-8: variance share", " ".join(f"{r:.3f}" for r in ratio[:8]), "| OSI",
          " ".join(f"{v:.2f}" for v in pc_osi))
    if a.figure:
        figure(a.figure, kernel, k0, comps, ratio, f"default subject, {a.dataset}, seed {a.seed}")
        print("figure:", a.figure)


if __name__ == "__main__":
    main()
