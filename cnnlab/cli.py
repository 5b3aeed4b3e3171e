"""The ``cnnlab`` command: train, evaluate, predict, summary, demo, export and import.

    cnnlab train --dataset mnist --model lenet5 --epochs 5
    cnnlab train --resume runs/mnist-lenet5-20240101-120000 --epochs 10
    cnnlab evaluate runs/mnist-lenet5-20240101-120000
    cnnlab predict runs/mnist-lenet5-20240101-120000 digit.png --invert
    cnnlab summary mnist_fast
    cnnlab demo

Every failure reaches the user as one message on stderr and a non-zero exit
status (2 for bad input or files, 1 when training diverges, 130 on Ctrl-C);
``--debug`` adds the traceback. The explain tools and the explorer add their
subcommands with ``cnnlab.explain.cli.register(subparsers)`` and
``cnnlab.serve.cli.register(subparsers)``; every subcommand sets ``func``
and is dispatched as ``args.func(args)``.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from . import distributed, images, optim, runs
from . import models as zoo
from ._extras import MissingExtra
from ._io import CnnlabFileError, read_json
from .augment import SPEC_HELP
from .explain import cli as explain_cli
from .onnx import cli as onnx_cli
from .serve import cli as serve_cli
from .training import TrainingDiverged

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


def _err(message: str) -> None:
    print(f"cnnlab: error: {message}", file=sys.stderr, flush=True)


def _int_at_least(minimum, what):
    """An argparse type: an integer >= ``minimum``; the error quotes the text received."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, received {text!r}")
        return v
    return parse


_positive_int = _int_at_least(1, "positive")
_nonneg_int = _int_at_least(0, "non-negative")


def _float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, received {text!r}") from None
    if not np.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, received {text!r}")
    return v


def _shape(text):
    try:
        shape = tuple(int(t) for t in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"expected a shape such as 28,28,1, received {text!r}")
    return shape


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _unique_dir(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(2, 1000):
        candidate = path.with_name(f"{path.name}-{i}")
        if not candidate.exists():
            return candidate
    raise ValueError(f"{path} and its numbered variants exist already; choose --out")


def _slug(text: str) -> str:
    p = Path(text)
    name = p.stem if p.suffix.lower() == ".json" else p.name or str(text)
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "run"


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------
TRAIN_OPTIONS = ("dataset", "model", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                 "augment", "seed", "out", "val_split", "early_stopping", "label_smoothing", "loss",
                 "snapshot_filters", "limit", "workers")


def cmd_train(args) -> int:
    verbose = 0 if args.quiet else 1
    if args.resume is not None:
        fixed = [f"--{k.replace('_', '-')}" for k in TRAIN_OPTIONS if getattr(args, k) is not None]
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot be changed when resuming: the run keeps its settings in "
                             f"{Path(args.resume) / runs.CONFIG_FILE} (only --epochs, --data-dir and --quiet apply)")
        result = runs.resume_training(args.resume, epochs=args.epochs, verbose=verbose, data_dir=args.data_dir)
    else:
        config = runs.make_config(
            dataset=args.dataset, data_dir=args.data_dir, model=args.model, epochs=args.epochs,
            batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
            weight_decay=args.weight_decay, schedule=args.schedule, augment=args.augment, seed=args.seed,
            val_split=args.val_split, early_stopping=args.early_stopping, label_smoothing=args.label_smoothing,
            loss=args.loss, snapshot_filters=args.snapshot_filters, limit=args.limit, workers=args.workers)
        out = Path(args.out) if args.out else _unique_dir(
            Path("runs") / f"{_slug(config['dataset'])}-{_slug(config['model'])}-{_timestamp()}")
        result = runs.run_training(config, out, verbose=verbose)
    if distributed.is_root():
        _print_result(result)
    return 0


def _print_result(result):
    if result["stop_reason"]:
        print(f"stopped early after epoch {result['epochs']}: {result['stop_reason']}")
    if result["best_val_accuracy"] is not None:
        print(f"best validation accuracy: {100 * result['best_val_accuracy']:.2f}% (epoch {result['best_epoch']}; "
              f"saved as {runs.MODEL_FILE})")
    ev = result["evaluation"]
    if ev is not None:
        print(f"test accuracy: {100 * ev['accuracy']:.2f}% on {ev['num_images']:,} images (loss {ev['loss']:.4f})")
    print(f"run directory: {result['run_dir']}")


# ---------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------
def _load_model(path):
    from .model import load
    p = Path(path)
    if not p.exists():
        raise CnnlabFileError(f"{p} does not exist (expected a .safetensors model or a run directory)")
    return load(p)


def cmd_evaluate(args) -> int:
    from .datasets import load_dataset
    comm = distributed.world()                          # under mpiexec the ranks share the images
    model = distributed.agreed_call(comm, _load_model, args.model)
    run_dir = runs.find_run_dir(args.model)
    config = runs.read_config(run_dir) if run_dir is not None else None
    dataset = args.dataset or (config["dataset"] if config else None)
    if dataset is None:
        raise ValueError(f"{args.model} is not in a run directory, so its dataset is unknown: give --dataset")
    options = config["dataset_options"] if config and dataset == config["dataset"] else {}
    data_dir = args.data_dir or (config["data_dir"] if config else None)
    _, (xt, yt), info = distributed.agreed_call(comm, load_dataset, dataset, data_dir=data_dir, **options)
    if args.limit:
        xt, yt = xt[:args.limit], yt[:args.limit]
    if tuple(model.input_shape) != tuple(xt.shape[1:]):
        raise ValueError(f"the model takes inputs {tuple(model.input_shape)} but {dataset}'s images are "
                         f"{tuple(xt.shape[1:])}")
    class_names = list(info["class_names"])
    if len(class_names) != model.num_classes:
        raise ValueError(f"the model has {model.num_classes} classes but {dataset} has {len(class_names)}")
    evaluation = runs.evaluate_model(model, xt, yt, class_names, comm=comm)
    if comm is not None and not comm.is_root:
        return 0                                        # rank 0 writes and prints
    evaluation.update(dataset=info["name"], split="test", model=str(args.model))
    p = Path(args.model)
    out = Path(args.out) if args.out else (run_dir or (p if p.is_dir() else p.parent))
    json_path, png_path = runs.write_evaluation(out, evaluation)
    print(f"{info['name']} test set: accuracy {100 * evaluation['accuracy']:.2f}% on "
          f"{evaluation['num_images']:,} images (loss {evaluation['loss']:.4f})")
    print(_class_table(evaluation))
    print(f"wrote {json_path} and {png_path}")
    return 0


def _class_table(ev) -> str:
    width = max([len("class")] + [len(str(n)) for n in ev["class_names"]])
    lines = [f"  {'class'.ljust(width)}  accuracy  images"]
    for name, acc, count in zip(ev["class_names"], ev["per_class_accuracy"], ev["class_counts"]):
        acc_text = "     -" if acc is None else f"{100 * acc:6.2f}%"
        lines.append(f"  {str(name).ljust(width)}  {acc_text:>8}  {count:6d}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
PREDICT_CHUNK = 256                                     # images read and classified at a time


def image_paths(items) -> list[Path]:
    """Image files named, and those in the directory trees named (by suffix, sorted), in order."""
    paths = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise CnnlabFileError(f"directory {item} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise CnnlabFileError(f"image {item} does not exist")
    return paths


def _classify(model, paths, options, dataset=None, progress=None, workers=None, log=None) -> np.ndarray:
    """Class probabilities, one row per image, read in chunks by :func:`cnnlab.images.prepare_input`.

    ``options`` are its ``invert`` and ``center``; the notes saying what was done go to ``log``.
    """
    shape = tuple(model.input_shape)
    rows = [np.zeros((0, model.num_classes), np.float32)]
    for i in range(0, len(paths), PREDICT_CHUNK):
        prepared = [images.prepare_input(p, shape, dataset=dataset, **options) for p in paths[i:i + PREDICT_CHUNK]]
        for _, notes in prepared:
            for note in notes if log is not None else ():
                log(f"note: {note}")
        rows.append(model.predict(np.stack([x for x, _ in prepared]), workers=workers).astype(np.float32))
        if progress is not None:
            progress.update(len(prepared))
    return np.concatenate(rows)


def cmd_predict(args) -> int:
    # Under mpiexec every rank classifies its contiguous part of the images; rank 0 writes and prints.
    comm = distributed.world()
    model = distributed.agreed_call(comm, _load_model, args.model)
    shape = tuple(model.input_shape)
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise ValueError(f"predict works with image models taking (H, W, 1) or (H, W, 3) inputs; this one takes {shape}")
    run_dir = runs.find_run_dir(args.model)
    class_names, dataset = None, None
    if run_dir is not None:
        config = runs.read_config(run_dir)
        class_names = (config.get("data") or {}).get("class_names")
        dataset = (config.get("data") or {}).get("name", config["dataset"])
    if not class_names or len(class_names) != model.num_classes:
        class_names = [str(i) for i in range(model.num_classes)]
    options = images.options_from(args)
    paths = distributed.agreed_call(comm, image_paths, args.images)
    mine, _ = distributed.rank_part(paths, comm)
    root = comm is None or comm.is_root
    progress = None
    if root and args.out and sys.stderr.isatty():
        from tqdm import tqdm
        progress = tqdm(total=len(mine), unit="image", desc="predict" + (f" (rank 0 of {comm.size})" if comm else ""),
                        leave=False, file=sys.stderr)
    note = (lambda text: print(text, file=sys.stderr)) if root else None   # under mpiexec: rank 0's images' notes
    rows = distributed.agreed_call(comm, _classify, model, mine, options, dataset, progress,
                                   workers=1 if comm else None, log=note)  # one rank per core: no worker processes
    if progress is not None:
        progress.close()
    if comm is not None:
        rows = comm.gather_rows(rows, len(paths))
        if not root:
            return 0
    probs = rows
    k = min(args.top_k, model.num_classes)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    if args.out:
        _write_predictions(Path(args.out), paths, probs, top, class_names)
        print(f"wrote predictions for {len(paths):,} images to {args.out}")
        return 0
    width = max(len(str(n)) for n in class_names)
    for path, p, best in zip(paths, probs, top):
        print(path)
        for rank, i in enumerate(best, 1):
            print(f"  {rank}. {str(class_names[i]).ljust(width)}  {100 * p[i]:6.2f}%")
    return 0


def _write_predictions(out: Path, paths, probs, top, class_names):
    """CSV: ``path, class_1, probability_1, ..., class_k, probability_k`` (best first), written atomically."""
    import csv
    import io
    from ._io import atomic_write
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give the CSV file to write")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path"] + [f"{c}_{r}" for r in range(1, top.shape[1] + 1) for c in ("class", "probability")])
    for path, p, best in zip(paths, probs, top):
        w.writerow([str(path)] + [v for i in best for v in (class_names[i], f"{p[i]:.6f}")])
    atomic_write(out, buf.getvalue())


# ---------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------
def cmd_summary(args) -> int:
    from .model import Sequential
    p = Path(args.model)
    if p.is_dir() or p.suffix.lower() in (".safetensors", ".onnx"):
        model = _load_model(p)
    elif p.suffix.lower() == ".json" or p.is_file():
        arch = read_json(p, "architecture file")
        if isinstance(arch, dict) and arch.get("input_shape") is None and args.input_shape is not None:
            arch = {**arch, "input_shape": list(args.input_shape)}
        elif isinstance(arch, dict) and args.input_shape is not None:
            arch = {**arch, "input_shape": list(args.input_shape)}
        model = Sequential.from_config(arch, source=f"architecture file {p}")
        if not model.built:
            raise ValueError(f"architecture file {p} has no input_shape; give one with --input-shape H,W,C")
    else:
        fn = zoo.get(args.model)
        kw = {}
        if args.input_shape is not None:
            kw["input_shape"] = args.input_shape
        if args.num_classes is not None:
            kw["num_classes"] = args.num_classes
        model = fn(**kw)
    model.summary()
    return 0


# ---------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------
DEMO = {"dataset": "shapes", "dataset_options": {"n_train": 4000, "n_test": 1000}, "model": "lenet5",
        "epochs": 6, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "schedule": "onecycle", "val_split": 0.1,
        "snapshot_filters": 25, "seed": 0}


def cmd_demo(args) -> int:
    options = dict(DEMO)
    if args.epochs is not None:
        options["epochs"] = args.epochs
    config = runs.make_config(**options)
    out = Path(args.out) if args.out else _unique_dir(Path("runs") / f"demo-{_timestamp()}")
    n_train, n_test = options["dataset_options"]["n_train"], options["dataset_options"]["n_test"]
    print(f"cnnlab demo: LeNet-5 learns the built-in 'shapes' images (lines, corners, crosses, squares, circles;\n"
          f"{n_train:,} generated for training, 10% of them held out for validation, {n_test:,} for testing),\n"
          f"{config['epochs']} epochs of SGD with momentum under a one-cycle learning-rate schedule, on the CPU.\n")
    result = runs.run_training(config, out, verbose=0 if args.quiet else 1)
    ev = result["evaluation"]
    print()
    print(f"test accuracy: {100 * ev['accuracy']:.2f}% on {ev['num_images']:,} images")
    print(_class_table(ev))
    files = [
        (runs.MODEL_FILE, f"the trained model (best validation accuracy, epoch {result['best_epoch']})"),
        (runs.LAST_FILE, "the model after the last epoch"),
        (runs.CHECKPOINT_FILE, "weights and optimizer state to resume from, with state.json"),
        (runs.CONFIG_FILE, "the training settings"),
        (runs.ARCHITECTURE_FILE, "the layers"),
        (runs.HISTORY_PNG, f"loss and accuracy per epoch (also {runs.HISTORY_CSV}, {runs.HISTORY_JSON})"),
        (runs.FILTERS_FILE, f"the first layer's filters every {config['snapshot_filters']} steps"),
        (runs.EVALUATION_FILE, "test accuracy, per class, and the confusion matrix"),
        (runs.CONFUSION_PNG, "the confusion matrix as a picture"),
    ]
    print(f"\nfiles in {out}:")
    width = max(len(f) for f, _ in files)
    for name, what in files:
        if (out / name).exists():
            print(f"  {name.ljust(width)}  {what}")
    print(f"\nnext: cnnlab evaluate {out}\n      cnnlab summary {out}\n"
          f"      cnnlab train --resume {out} --epochs {config['epochs'] + 2}")
    return 0


# ---------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback when something fails")
    parser = argparse.ArgumentParser(
        prog="cnnlab", description="Convolutional neural networks from first principles, on NumPy.",
        epilog="Run 'cnnlab COMMAND --help' for the options of a command; 'cnnlab demo' to see it all in a minute.")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the full traceback when something fails")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fmt = argparse.RawDescriptionHelpFormatter
    d = runs.DEFAULTS
    t = sub.add_parser("train", parents=[common], formatter_class=fmt, help="train a model, writing a run directory",
                       description="Train a model and write a run directory (model, checkpoint, history, plots).\n"
                                   "Ctrl-C keeps the last completed epoch; continue with --resume RUN_DIR.",
                       epilog=SPEC_HELP + f"\n\nDefaults: --dataset {d['dataset']} --model {d['model']} --epochs "
                              f"{d['epochs']} --batch-size {d['batch_size']}\n  --optimizer sgd --lr "
                              f"{runs.DEFAULT_LR['sgd']} --momentum {d['optimizer']['momentum']} --schedule "
                              f"{d['schedule']} --augment none.")
    t.add_argument("--dataset", metavar="NAME|PATH", help="mnist, fashion-mnist, cifar10, shapes, or the path of a dataset folder")
    t.add_argument("--data-dir", metavar="DIR", help="where the named datasets are stored (downloaded if absent)")
    t.add_argument("--model", metavar="NAME|ARCH.json", help=f"a zoo model ({', '.join(zoo.ZOO)}) or an architecture .json file")
    t.add_argument("--epochs", type=_positive_int, metavar="N", help="epochs in total (with --resume: to train up to)")
    t.add_argument("--batch-size", type=_positive_int, metavar="B", help="images per optimizer step")
    t.add_argument("--optimizer", choices=sorted(optim.OPTIMIZERS))
    t.add_argument("--lr", type=_float, help="base learning rate (default 0.05 for sgd, 0.001 for adam/adamw)")
    t.add_argument("--momentum", type=_float, metavar="M", help="SGD momentum")
    t.add_argument("--weight-decay", type=_float, metavar="WD", help="L2 weight decay (decoupled for adamw)")
    t.add_argument("--schedule", choices=list(optim.SCHEDULES), help="learning-rate schedule")
    t.add_argument("--augment", metavar="SPEC", help="augmentation spec, see below (default none)")
    t.add_argument("--seed", type=_nonneg_int, metavar="S", help="seed of initialization, shuffling, augmentation, split")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/DATASET-MODEL-TIMESTAMP)")
    t.add_argument("--val-split", type=_float, metavar="F",
                   help="hold out this fraction of the training images for validation; the best model by "
                        "validation accuracy becomes model.safetensors (default 0, or 0.1 with --early-stopping)")
    t.add_argument("--early-stopping", type=_positive_int, metavar="PATIENCE",
                   help="stop when validation accuracy has not improved for PATIENCE epochs")
    t.add_argument("--label-smoothing", type=_float, metavar="E", help="label smoothing of the softmax loss")
    t.add_argument("--loss", choices=["softmax", "svm"], help="classifier loss (default softmax)")
    t.add_argument("--snapshot-filters", type=_positive_int, metavar="N",
                   help=f"save the first convolution's filters every N steps to {runs.FILTERS_FILE}")
    t.add_argument("--limit", type=_positive_int, metavar="N", help="use only the first N training images")
    t.add_argument("--workers", type=_positive_int, metavar="N",
                   help="processes that share each batch (default one per core, at most 4; recorded for --resume)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (with --epochs N in total)")
    t.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", parents=[common], help="test accuracy, per-class accuracy and confusion matrix",
                       description=f"Evaluate a model on a test set; writes {runs.EVALUATION_FILE} and "
                                   f"{runs.CONFUSION_PNG} into the run directory (or --out).")
    e.add_argument("model", metavar="MODEL_OR_RUN", help="a run directory or a .safetensors model")
    e.add_argument("--dataset", metavar="NAME|PATH", help="dataset name or folder (default: the run's)")
    e.add_argument("--data-dir", metavar="DIR", help="where the named datasets are stored")
    e.add_argument("--out", metavar="DIR", help="where to write the results (default: the run directory)")
    e.add_argument("--limit", type=_positive_int, metavar="N", help="evaluate only the first N test images")
    e.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", parents=[common], help="classify image files or directory trees of images",
                       description="Classify image files: each is converted to the model's input (grayscale or "
                                   "RGB, resized, scaled to [0, 1]) and the top classes are printed.")
    p.add_argument("model", metavar="MODEL_OR_RUN", help="a run directory or a .safetensors model")
    p.add_argument("images", metavar="IMAGE_OR_DIR", nargs="+",
                   help="image files (PNG, JPEG, ...) or directories (every image file in the tree)")
    p.add_argument("--out", metavar="CSV", help="write the top classes of every image to this CSV file instead of "
                                                 "printing them (under mpiexec the ranks share the images)")
    p.add_argument("--top-k", type=_positive_int, default=3, metavar="K", help="classes to show (default 3)")
    images.add_arguments(p)
    p.set_defaults(func=cmd_predict)

    s = sub.add_parser("summary", parents=[common], help="layers, shapes, parameters and multiply-adds of a model",
                       description="Print a model's layers, output shapes, parameters and multiply-adds.")
    s.add_argument("model", metavar="MODEL_OR_ARCH",
                   help=f"a .safetensors model, a run directory, an architecture .json or a zoo name "
                        f"({', '.join(zoo.ZOO)})")
    s.add_argument("--input-shape", type=_shape, metavar="H,W,C", help="input shape for a zoo name or a .json")
    s.add_argument("--num-classes", type=_positive_int, metavar="K", help="classes for a zoo name")
    s.set_defaults(func=cmd_summary)

    m = sub.add_parser("demo", parents=[common], help="train and evaluate a small CNN on built-in data, in seconds",
                       description="Train LeNet-5 on the built-in 'shapes' images (no download), evaluate it, and "
                                   "write a complete run directory.")
    m.add_argument("--out", metavar="DIR", help="run directory (default runs/demo-TIMESTAMP)")
    m.add_argument("--epochs", type=_positive_int, help=f"epochs (default {DEMO['epochs']})")
    m.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    m.set_defaults(func=cmd_demo)

    explain_cli.register(sub)
    onnx_cli.register(sub, common)
    serve_cli.register(sub)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:           # --help, or a usage error argparse has already reported
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = getattr(args, "debug", False)

    def fail(code, message):
        if debug:
            traceback.print_exc()
        distributed.end_job(sys.exc_info()[1], message, code)   # under mpiexec: ends every rank, here
        _err(message)
        return code

    try:
        return int(args.func(args) or 0)
    except runs.TrainingInterrupted as e:
        if e.epoch == 0:
            where = f"no epoch was completed; {e.run_dir} holds the untrained starting point"
        else:
            where = f"{e.run_dir} keeps the checkpoint of epoch {e.epoch} of {e.epochs}"
        return fail(EXIT_INTERRUPTED, f"interrupted (Ctrl-C): {where}.\nContinue with:  {e.resume_command}")
    except KeyboardInterrupt:
        return fail(EXIT_INTERRUPTED, "interrupted (Ctrl-C)")
    except TrainingDiverged as e:
        return fail(EXIT_FAILED, f"training diverged: {e}")
    except MissingExtra as e:
        return fail(EXIT_FAILED, str(e))
    except (CnnlabFileError, ValueError, FileNotFoundError) as e:
        return fail(EXIT_USAGE, str(e))
    except OSError as e:
        return fail(EXIT_FAILED, f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
    except Exception as e:
        if not distributed.launched_size()[0] > 1:
            raise
        traceback.print_exc()                      # an unexpected error on one rank must not leave the others waiting
        return fail(EXIT_FAILED, f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    sys.exit(main())
