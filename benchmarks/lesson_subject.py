"""The default subject's recipe over 5 seeds: how many first-layer filters are oriented, accuracy, time.

    python benchmarks/lesson_subject.py [--dataset shapes|mnist] [--data-dir DIR] [--seeds 5] [--set key=value ...]

Each seed trains :func:`cnnlab.analysis.subject.train_default_subject` once (one process, one core) and counts
the oriented filters of the first layer (:func:`cnnlab.analysis.filters.oriented`, against the filter's own
initial kernel). ``--set`` overrides recipe entries, to try other recipes. Results go to benchmarks/README.md.
"""
import argparse
import json
import time

import numpy as np

from cnnlab.analysis import subject
from cnnlab.explain.subject import load_data


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--data-dir")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    a = p.parse_args()
    recipe = subject.default_subject_recipe(a.dataset)
    for kv in a.set:
        k, v = kv.split("=", 1)
        recipe[k] = v if k in ("architecture", "optimizer") else json.loads(v)
    print(a.dataset, recipe, flush=True)
    (xtr, ytr), (xte, yte), info = load_data(a.dataset, a.data_dir, n_train=recipe["n_train"], n_test=1000)
    counts = []
    for seed in range(a.seeds):
        t0 = time.perf_counter()
        model, k0 = subject.train_default_subject((xtr, ytr), info["input_shape"], len(info["class_names"]),
                                                  seed=seed, recipe=recipe)
        sec = time.perf_counter() - t0
        o = subject.oriented_count(model, k0)
        acc = model.evaluate(xte, yte)["accuracy"]
        counts.append(o["count"])
        print(f"seed {seed}: {o['count']}/{o['filters']} oriented  osi {np.round(o['selectivity'], 2)} "
              f"init {np.round(o['initial_selectivity'], 2)} thr {o['threshold']:.3f}  acc {acc:.3f}  {sec:.1f} s",
              flush=True)
    print(f"counts {counts}: seeds with >= 6 oriented: {sum(c >= 6 for c in counts)}/{a.seeds}")


if __name__ == "__main__":
    main()
