"""Data augmentation speed: the current cnnlab.augment against an earlier version, side by side.

    python benchmarks/bench_augment.py [--repeats 200] [--rounds 4] [--baseline REV]

Times ``Augmenter.from_spec(preset)(x, rng)`` on the batches the training loop
feeds it: 64 MNIST-shaped images (64, 28, 28, 1) for ``mnist``,
``mnist,elastic`` and ``translate=2``, and 128 CIFAR-shaped images
(128, 32, 32, 3) for ``cifar``, all float32. The earlier version is read with
``git show REV:cnnlab/augment.py`` into a temporary module; the default
revision is the last one before the float32 rewrite.

Every (version, preset) pair is timed in a fresh process, so that neither
version inherits the other's warm caches or allocator state, with BLAS on one
thread. The repeats are split into rounds that alternate between the versions
to spread the noise of a shared machine; each call is timed on its own after a
warm-up, and the table gives the median and the minimum milliseconds per
batch. It also prints the largest difference between the two versions' outputs
for the same seed (0 where the result is a copy of pixels).
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "ca4035bcd4795da46ce3a699642194ba813b314a"  # cnnlab/augment.py before the float32 rewrite

CASES = [  # preset, batch shape, target in ms
    ("mnist", (64, 28, 28, 1), 2.5),
    ("mnist,elastic", (64, 28, 28, 1), 5.0),
    ("translate=2", (64, 28, 28, 1), 1.0),
    ("cifar", (128, 32, 32, 3), 2.0),
]

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def load_module(path):
    """Import cnnlab.augment from ``path`` (None: the working tree) as a fresh module."""
    if path is None:
        sys.path.insert(0, str(ROOT))
        import cnnlab.augment as module
        return module
    spec = importlib.util.spec_from_file_location("augment_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def batch(shape):
    import numpy as np
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def worker(path, spec, shape, repeats, warmup):
    """Time one version on one preset in this process; print the times (ms) as JSON."""
    import numpy as np
    module = load_module(path)
    augmenter = module.Augmenter.from_spec(spec)
    x = batch(shape)
    rng = np.random.default_rng(1)
    for _ in range(warmup):
        augmenter(x, rng)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        augmenter(x, rng)
        times.append((time.perf_counter() - start) * 1e3)
    print(json.dumps(times))


def run_worker(path, spec, shape, repeats, warmup):
    env = dict(os.environ, **{name: "1" for name in THREAD_VARIABLES})
    command = [sys.executable, __file__, "--worker", path or "-", spec, ",".join(map(str, shape)),
               str(repeats), str(warmup)]
    result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.splitlines()[-1])


def max_difference(old, new, spec, shape):
    """Largest |old - new| over one batch, both seeded alike."""
    import numpy as np
    x = batch(shape)
    a = old.Augmenter.from_spec(spec)(x, np.random.default_rng(3))
    b = new.Augmenter.from_spec(spec)(x, np.random.default_rng(3))
    return float(np.abs(a.astype(np.float64) - b).max())


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, path, spec, shape, repeats, warmup = sys.argv
        shape = tuple(int(v) for v in shape.split(","))
        worker(None if path == "-" else path, spec, shape, int(repeats), int(warmup))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per version and preset")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds the repeats are split into")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls first, in every process")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the earlier version")
    args = parser.parse_args()
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"

    source = subprocess.run(["git", "show", f"{args.baseline}:cnnlab/augment.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        old_path = str(Path(tmp) / "augment_baseline.py")
        Path(old_path).write_text(source)
        per_round = max(1, args.repeats // args.rounds)
        times = {(spec, version): [] for spec, _, _ in CASES for version in ("before", "after")}
        for _ in range(args.rounds):
            for spec, shape, _ in CASES:
                for version, path in (("before", old_path), ("after", None)):
                    times[spec, version] += run_worker(path, spec, shape, per_round, args.warmup)
        old, new = load_module(old_path), load_module(None)
        differences = {spec: max_difference(old, new, spec, shape) for spec, shape, _ in CASES}

    import numpy as np
    print(f"baseline {args.baseline[:12]}, {per_round * args.rounds} timed calls per cell, "
          f"ms per batch, single-threaded BLAS")
    header = (f"{'preset':<15}{'batch':<18}{'before median':>14}{'before min':>12}"
              f"{'after median':>14}{'after min':>11}{'speed-up':>10}{'target':>8}{'max |diff|':>12}")
    print(header)
    print("-" * len(header))
    for spec, shape, target in CASES:
        before, after = np.array(times[spec, "before"]), np.array(times[spec, "after"])
        speedup = np.median(before) / np.median(after)
        print(f"{spec:<15}{str(shape):<18}{np.median(before):>14.3f}{before.min():>12.3f}"
              f"{np.median(after):>14.3f}{after.min():>11.3f}{speedup:>9.1f}x{target:>8.1f}"
              f"{differences[spec]:>12.1e}")


if __name__ == "__main__":
    main()
