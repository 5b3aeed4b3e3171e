"""The default subject's recipe over 5 seeds: how many first-layer filters are oriented, accuracy, time.

    python benchmarks/lesson_subject.py [--dataset shapes|mnist] [--data-dir DIR] [--seeds 5] [--set key=json ...]

Each seed trains :func:`cnnlab.analysis.subject.train_default_subject` once into a temporary run directory (one
process, one core) and counts the oriented filters of the first layer (:func:`cnnlab.analysis.filters.oriented`,
against the filter's own kernel at step 0). ``--set`` overrides entries of the recipe (a training
configuration), to try other recipes. ``--save FILE.npz`` keeps the kernels. Results: benchmarks/README.md.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from cnnlab.analysis import filters, subject


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--data-dir")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON")
    p.add_argument("--save", metavar="FILE.npz")
    a = p.parse_args()
    kept, counts, stim = {}, [], []
    for seed in range(a.seeds):
        recipe = subject.default_subject_recipe(a.dataset, a.data_dir, seed)
        for kv in a.set:
            k, v = kv.split("=", 1)
            try:
                recipe[k] = json.loads(v)
            except json.JSONDecodeError:
                recipe[k] = v
        if seed == 0:
            print(a.dataset, recipe, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = subject.train_default_subject(Path(tmp) / "run", recipe=recipe)
            sec = time.perf_counter() - t0
            k0 = subject.initial_kernel(Path(tmp) / "run")
        model = summary["model"]
        o = subject.oriented_filters(model, k0)
        by_stimulus = filters.oriented(subject.first_conv(model).params["kernel"], k0, tuning="stimulus")["count"]
        stim.append(by_stimulus)
        acc = (summary.get("test") or {}).get("accuracy", float("nan"))
        counts.append(o["count"])
        kept[f"kernel{seed}"], kept[f"initial{seed}"] = subject.first_conv(model).params["kernel"], k0
        print(f"seed {seed}: {o['count']}/{o['filters']} oriented  selectivity {np.round(o['selectivity'], 2)} "
              f"at init {np.round(o['initial_selectivity'], 2)}  threshold {o['threshold']:.3f}  "
              f"(by stimulus tuning: {by_stimulus})  test accuracy {acc:.3f}  {sec:.1f} s", flush=True)
    for name, c in (("spectral tuning", counts), ("stimulus tuning", stim)):
        print(f"{name}: counts {c}, seeds with >= 6 of 8 oriented: {sum(v >= 6 for v in c)}/{a.seeds}")
    if a.save:
        np.savez(a.save, **kept)


if __name__ == "__main__":
    main()
