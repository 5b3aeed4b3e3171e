"""Training recipes on a validation split, one after another, as a table: the way recipes are chosen.

    python benchmarks/recipe_study.py --out /tmp/recipe-runs RECIPE [RECIPE ...]
    python benchmarks/recipe_study.py --out /tmp/recipe-runs --table      # the table of the runs already there

A RECIPE is ``NAME=ARGS``: a name for the run directory and the ``cnnlab train`` arguments, e.g.
``"m-base=--dataset mnist --model mnist_accurate --epochs 16 --augment mnist"``. Each recipe trains
with ``--val-split 0.1 --seed 0`` (the same 6,000 held-out training images for every recipe of a
dataset; ``--test`` trains on the whole training set instead, for the measurement after the choice,
with the seed given in ARGS),
as a fresh process, at ``nice 10``, with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` unset (as
users run). Never two at once: the table is of one machine's cores.

Per run the table gives the best validation accuracy (the epoch ``cnnlab train`` keeps as the model),
the last epoch's, the training time (the sum of the epochs), the slowest and fastest epoch, the CPU
time of the process and its workers (user + system) and the load average before and after. On a
shared machine the wall times grow with the other work; the CPU time moves much less. The test
accuracy is shown only for ``--test`` runs: a recipe is chosen without looking at it.
"""
import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORD = "study.json"                 # what the run directory does not hold: the command, CPU time, load


def clean_env():
    return {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}


def train(out, name, args, test, data_dir):
    run_dir = Path(out) / name
    cmd = (["nice", "-n", "10", sys.executable, "-m", "cnnlab", "train", *shlex.split(args), "--out", str(run_dir),
            "--quiet"] + ([] if test else ["--val-split", "0.1", "--seed", "0"])
           + (["--data-dir", str(data_dir)] if data_dir and "--data-dir" not in args else []))
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)     # the process and its workers, once waited for
    if proc.returncode != 0:
        sys.exit(f"{name} failed (exit status {proc.returncode}):\n{proc.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    record = {"name": name, "args": args, "test_run": test, "cpu_s": cpu,
              "load_before": load_before[0], "load_after": os.getloadavg()[0]}
    (run_dir / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return record


def row(run_dir):
    """One markdown table row of a run made by this script."""
    record = json.loads((run_dir / RECORD).read_text())
    hist = json.loads((run_dir / "history.json").read_text())
    seconds, val = hist["seconds"], hist["val_accuracy"]
    if record["test_run"]:
        acc = f"test **{100 * json.loads((run_dir / 'evaluation.json').read_text())['accuracy']:.2f}%**"
    else:
        acc = f"val **{100 * max(val):.2f}%** (last {100 * val[-1]:.2f}%, best at epoch {val.index(max(val)) + 1})"
    return (f"| {record['name']} | `{record['args']}` | {acc} | {len(seconds)} | {sum(seconds):.0f} s "
            f"({min(seconds):.0f}-{max(seconds):.0f} s an epoch) | {record['cpu_s']:.0f} s | "
            f"{record['load_before']:.1f} / {record['load_after']:.1f} |")


def table(out):
    runs = [p.parent for p in Path(out).glob(f"*/{RECORD}")]
    lines = ["| run | arguments | accuracy | epochs | training time | CPU time | load before / after |",
             "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    return "\n".join(lines + [row(r) for r in sorted(runs, key=lambda r: r.stat().st_mtime)])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipes", nargs="*", help="NAME=ARGS")
    p.add_argument("--out", required=True, help="where the run directories go (not the repository)")
    p.add_argument("--data-dir", default=None, help="passed to cnnlab train (default: ../shared/data when there)")
    p.add_argument("--test", action="store_true", help="train on the whole training set; report test accuracy")
    p.add_argument("--table", action="store_true", help="only print the table of the runs in --out")
    a = p.parse_args()
    sys.path.insert(0, str(HERE))
    from common import data_dir
    machine = subprocess.run([sys.executable, "-c", "from common import machine; print(machine())"],
                             cwd=HERE, env=clean_env(), capture_output=True, text=True).stdout.strip()
    print(f"machine: {machine}")
    for recipe in ([] if a.table else a.recipes):
        name, sep, args = recipe.partition("=")
        if not sep or not name or "/" in name:
            sys.exit(f"recipe {recipe!r}: expected NAME=ARGS, e.g. \"m1=--dataset mnist --epochs 16\"")
        train(a.out, name, args, a.test, a.data_dir or data_dir())
        print(row(Path(a.out) / name), flush=True)
    print(table(a.out))


if __name__ == "__main__":
    main()
