"""The learned numbers the tests put a threshold on, over seeds, both engines and OpenBLAS's kernels.

A test that asserts a learned accuracy or loss must not pass or fail on the order in which one CPU
adds its sums. This script measures each such number the way its test computes it, for 5 seeds (the
test's own among them), in a fresh process per configuration:

* the compiled loops on and off (``CNNLAB_COMPILED=1`` / ``0``),
* OpenBLAS's kernels as it picks them for the CPU (``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` unset)
  and forced to ``Haswell`` (AVX2) and ``Sandybridge`` (AVX): other kernels sum in another order, as
  another CPU would.

Each test's threshold is the lowest value seen here minus a margin; its comment quotes both. The
broken models (learning rate 1e-30: SGD refuses 0, and the weights do not move) are measured too, to
show the threshold tells them apart.

    python benchmarks/measure_thresholds.py                 # every quantity, every configuration
    python benchmarks/measure_thresholds.py --only lenet5_shapes invariance
    python benchmarks/measure_thresholds.py --one           # this process's configuration only (JSON lines)
    python benchmarks/measure_thresholds.py --table         # the table of the rows measured so far

Rows are appended to ``--rows`` (``./thresholds.jsonl``) as they come, so a long run stopped early keeps them.

The last table measured is in benchmarks/README.md ("Learned numbers the tests assert").
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
SEEDS = {"lenet5_shapes": [1, 0, 2, 3, 4], "lenet5_mnist": [0, 1, 2, 3, 4], "features": [0, 1, 2, 3, 4],
         "invariance": [0, 1, 2, 3, 4], "onnx_import": [1, 0, 2, 3, 4]}       # the test's seed first
CONFIGS = [{"CNNLAB_COMPILED": c, "OPENBLAS_CORETYPE": t} for t in (None, "Haswell", "Sandybridge") for c in ("1", "0")]


def lenet5_shapes(seed, loss, lr=0.05):
    """tests/test_model.py::test_training_end_to_end_learns: test accuracy before and after 3 epochs."""
    import cnnlab
    from cnnlab.datasets import load_shapes
    (x, y), (xt, yt) = load_shapes(n_train=4000, n_test=400, seed=0)
    model = cnnlab.models.lenet5(seed=seed)
    before = model.evaluate(xt, yt)["accuracy"]
    history = model.fit(x, y, epochs=3, batch_size=64, optimizer=cnnlab.optim.SGD(lr=lr, momentum=0.9), loss=loss,
                        validation_data=(xt, yt), verbose=0)
    return {"before": before, "accuracy": model.evaluate(xt, yt)["accuracy"],
            "loss_last_over_first": history["loss"][-1] / history["loss"][0]}


def lenet5_mnist(seed, lr=0.05):
    """tests/test_model.py::test_lenet5_learns_real_mnist_when_present: accuracy on 2000 test digits."""
    import cnnlab
    from cnnlab.datasets import load_mnist
    (x, y), (xt, yt) = load_mnist(MNIST)
    model = cnnlab.models.lenet5(seed=seed)
    model.fit(x[:12000], y[:12000], epochs=2, batch_size=64, optimizer=cnnlab.optim.SGD(lr=lr, momentum=0.9), verbose=0)
    return {"accuracy": model.evaluate(xt[:2000], yt[:2000])["accuracy"]}


def features(seed):
    """tests/test_explain_features.py: how far the demo model's first-layer filters moved in training.

    ``explain_features`` with no model trains the demo model by :func:`resolve_subject` and reports the
    last value of :func:`filter_change`; the same two calls here, without the pictures.
    """
    from cnnlab.explain.features import filter_change
    from cnnlab.explain.subject import resolve_subject
    subject = resolve_subject(dataset="shapes", seed=seed)
    return {"relative_change": float(filter_change(subject.snapshots)["total"][-1])}


def invariance(seed):
    """tests/test_invariance.py: pooling's feature change against the strided CNN's, and equivariance errors."""
    from cnnlab.explain import invariance as I
    small = dict(dataset="shapes", n_train=400, n_test=60, epochs=1, max_shift=3, max_degrees=10, degree_step=10,
                 canvas_size=32)
    with tempfile.TemporaryDirectory() as d:
        r = I.invariance_experiment(Path(d) / "out", seed=seed, **small)
    fc = r["feature_change"]
    errors = [err / raw for layer in r["equivariance"]["layers"]
              for s, err, raw in zip(layer["shifts"], layer["error"], layer["unshifted_error"]) if s]
    return {"gap_over_strided_change": fc["cnn_gap"][3] / fc["cnn_strided"][3], "max_error_over_raw": max(errors)}


def onnx_import(seed, lr=0.05, epochs=3):
    """tests/test_onnx_import.py: the imported VGG-like network's loss after training over its loss before."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    import cnnlab
    from cnnlab.onnx import load
    from test_onnx_import import VGGish, torch_export
    net = VGGish()                                  # seeds torch with 1, the test's network
    if seed != 1:
        torch.manual_seed(seed)
        for m in net.modules():
            if hasattr(m, "reset_parameters") and not isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.reset_parameters()
    with tempfile.TemporaryDirectory() as d:
        model = load(torch_export(net, Path(d) / "vgg.onnx", (3, 16, 16), preserve=True))
    rng = np.random.default_rng(0 if seed == 1 else 10 + seed)       # the test draws its images with seed 0
    x = rng.random((48, 16, 16, 3), dtype=np.float32)
    y = (x[:, :8].mean(axis=(1, 2, 3)) > x[:, 8:].mean(axis=(1, 2, 3))).astype(np.int64)
    before = model.evaluate(x, y, workers=1)["loss"]
    model.fit(x, y, epochs=epochs, batch_size=16, optimizer=cnnlab.optim.SGD(lr=lr, momentum=0.9), verbose=0, workers=1)
    return {"loss_after_over_before": model.evaluate(x, y, workers=1)["loss"] / before}


def measure(names):
    """This process's configuration: one JSON line per quantity and seed."""
    runs = {"lenet5_shapes": lambda s: {**{f"softmax_{k}": v for k, v in lenet5_shapes(s, "softmax").items()},
                                        **{f"svm_{k}": v for k, v in lenet5_shapes(s, "svm").items()}},
            "lenet5_mnist": lenet5_mnist, "features": features, "invariance": invariance, "onnx_import": onnx_import}
    broken = {"lenet5_shapes": lambda: {f"{loss}_accuracy": lenet5_shapes(1, loss, lr=1e-30)["accuracy"]
                                        for loss in ("softmax", "svm")},
              "lenet5_mnist": lambda: lenet5_mnist(0, lr=1e-30),
              "onnx_import": lambda: onnx_import(1, lr=1e-30)}
    for name in names:
        if name == "lenet5_mnist" and not (MNIST / "train-images-idx3-ubyte.gz").is_file():
            continue
        for seed in SEEDS[name]:
            print(json.dumps({"name": name, "seed": seed, "values": runs[name](seed)}), flush=True)
        if name in broken:
            print(json.dumps({"name": name, "seed": "lr~0", "values": broken[name]()}), flush=True)


def run_configs(names, rows_file, parallel=2):
    """Measure in a fresh process per configuration, ``parallel`` at a time; append every row to ``rows_file``."""
    pending = list(CONFIGS)
    with open(rows_file, "a") as sink:
        while pending:
            batch, pending = pending[:parallel], pending[parallel:]
            procs = []
            for cfg in batch:
                env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
                env.update({k: v for k, v in cfg.items() if v is not None})
                label = f"compiled={cfg['CNNLAB_COMPILED']} coretype={cfg['OPENBLAS_CORETYPE'] or 'unset'}"
                procs.append((label, subprocess.Popen([sys.executable, __file__, "--one", "--only", *names], env=env,
                                                      stdout=subprocess.PIPE, text=True)))
            for label, proc in procs:
                for line in proc.stdout:
                    sink.write(json.dumps({"config": label, **json.loads(line)}) + "\n")
                    sink.flush()
                if proc.wait():
                    raise SystemExit(f"{label}: exit status {proc.returncode}")
                print(f"measured {label}", file=sys.stderr, flush=True)


def print_table(rows_file):
    """One line per measured number: lowest and highest over seeds and configurations, per configuration, lr ~ 0."""
    table = {}                                      # (name, key) -> {"seeds"/"broken": {config: [values]}}
    for line in Path(rows_file).read_text().splitlines():
        row = json.loads(line)
        kind = "broken" if row["seed"] == "lr~0" else "seeds"
        for key, value in row["values"].items():
            table.setdefault((row["name"], key), {}).setdefault(kind, {}).setdefault(row["config"], []).append(value)
    print("| quantity | lowest | highest | per configuration (min-max over seeds) | lr ~ 0 |")
    print("| --- | --- | --- | --- | --- |")
    for (name, key), kinds in sorted(table.items()):
        seen = [v for vs in kinds["seeds"].values() for v in vs]
        per = "; ".join(f"{c}: {min(v):.4g}-{max(v):.4g} ({len(v)})" for c, v in sorted(kinds["seeds"].items()))
        bad = sorted({round(v, 4) for vs in kinds.get("broken", {}).values() for v in vs})
        print(f"| {name}.{key} | {min(seen):.4g} | {max(seen):.4g} | {per} | {bad or ''} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=sorted(SEEDS), default=sorted(SEEDS))
    p.add_argument("--one", action="store_true", help="measure in this process's configuration only")
    p.add_argument("--rows", default="thresholds.jsonl", help="file the measured rows are appended to")
    p.add_argument("--table", action="store_true", help="only print the table of the rows already measured")
    args = p.parse_args()
    if args.one:
        return measure(args.only)
    if not args.table:
        run_configs(args.only, args.rows)
    print_table(args.rows)


if __name__ == "__main__":
    main()
