"""``cnnlab export`` and ``cnnlab import``: ONNX files out of and into run directories.

    cnnlab export runs/mnist-lenet5-... --out lenet5.onnx            # NCHW input, as PyTorch models take
    cnnlab import model.onnx --dataset shapes --out runs/imported    # a run directory: evaluate, explain, resume
"""
from __future__ import annotations

from pathlib import Path

from .._io import CnnlabFileError


def cmd_export(args) -> int:
    from .exporter import DEFAULT_OPSET, export
    out = Path(args.out)
    if out.exists():
        raise ValueError(f"{out} exists already; choose another --out (cnnlab does not overwrite files)")
    source = Path(args.model)
    if not source.exists():
        raise CnnlabFileError(f"{source} does not exist (expected a run directory or a .safetensors model)")
    export(source, out, channels_last=args.channels_last, opset=args.opset or DEFAULT_OPSET)
    layout = "(batch, H, W, C)" if args.channels_last else "(batch, C, H, W)"
    print(f"wrote {out}: input 'input' {layout} float32 -> output 'probabilities' (batch, classes)")
    return 0


def cmd_import(args) -> int:
    from ..datasets import load_dataset
    from .importer import load_with_class_names
    out = Path(args.out)
    model, stored_names = load_with_class_names(args.model)
    _, _, info = load_dataset(args.dataset, data_dir=args.data_dir)
    if tuple(model.input_shape) != tuple(info["input_shape"]):
        raise ValueError(f"{args.model} takes images {tuple(model.input_shape)} (H, W, C) but {args.dataset}'s are "
                         f"{tuple(info['input_shape'])}")
    if model.num_classes != len(info["class_names"]):
        raise ValueError(f"{args.model} has {model.num_classes} classes but {args.dataset} has "
                         f"{len(info['class_names'])}")
    config = _config(args, out, info)
    write_run(model, out, config)
    if stored_names is not None and stored_names != list(info["class_names"]):
        print(f"note: the file names its classes {stored_names}; the run uses {args.dataset}'s {info['class_names']}")
    print(f"imported {args.model}: {len(model.layers)} layers, {model.num_params:,} parameters, input "
          f"{tuple(model.input_shape)}")
    print(f"run directory: {out}\nnext: cnnlab evaluate {out}\n      cnnlab explain features --model {out}\n"
          f"      cnnlab train --resume {out} --epochs 1")
    return 0


def _config(args, out, info):
    from .. import runs
    from ..datasets import DATASETS
    from ..runs import files
    config = runs.make_config(dataset=args.dataset, data_dir=args.data_dir, model=str((out / files.ARCHITECTURE_FILE)
                              .resolve()), epochs=1, seed=0, workers=1)
    if args.dataset.lower().replace("_", "-") not in DATASETS and Path(args.dataset).exists():
        config["dataset"] = str(Path(args.dataset).resolve())
    config["data"] = {"name": info["name"], "class_names": list(info["class_names"]),
                      "input_shape": list(info["input_shape"])}
    config["imported_from"] = str(Path(args.model).resolve())
    config["cnnlab_version"] = files.cnnlab_version()
    return config


def write_run(model, out_dir, config):
    """A run directory at epoch 0 holding ``model``: config, architecture, model, checkpoint and state,
    written by the same recorder as a training run's start, so that ``train --resume`` continues it;
    under the run directory's lock, as training writes it (``cnnlab.runs.lock``)."""
    from .. import runs
    from ..runs import files
    from ..training import Trainer
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory")
    with runs.RunLock(out):                                 # one writer per run directory: a writer holding it is named
        files.require_no_run(out, "choose another --out")
        files.write_config(out, config)
        files.write_architecture(out, model)
        trainer = Trainer(model, optimizer=runs.make_optimizer(config), batch_size=config["batch_size"], verbose=0,
                          workers=config["workers"])
        runs.RunRecorder(out, runs.split_seed_for(config["seed"]), plot=False).on_train_begin(trainer)
    return out


def register(sub, common):
    """Add ``export`` and ``import`` to the ``cnnlab`` command's subparsers."""
    e = sub.add_parser("export", parents=[common], help="write a model as ONNX",
                       description="Write a model as an ONNX file: float32 input named 'input', (batch, C, H, W) "
                                   "as PyTorch models take (--channels-last: (batch, H, W, C)), class probabilities "
                                   "named 'probabilities', any batch size; a run's class names go into the metadata. "
                                   'Needs pip install "cnnlab[onnx]".')
    e.add_argument("model", metavar="RUN_OR_MODEL", help="a run directory or a .safetensors model")
    e.add_argument("--out", required=True, metavar="MODEL.onnx", help="the ONNX file to write (must not exist)")
    e.add_argument("--channels-last", action="store_true", help="take (batch, H, W, C) images, as cnnlab does")
    e.add_argument("--opset", type=int, metavar="N", help="ONNX opset version (default 17)")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("import", parents=[common], help="make a run directory from an ONNX model",
                       description="Read an ONNX classification CNN (from PyTorch, Keras or cnnlab) into a run "
                                   "directory for the given dataset, at epoch 0: evaluate, predict, explain, report "
                                   "and train --resume work on it. Needs pip install \"cnnlab[onnx]\".")
    i.add_argument("model", metavar="MODEL.onnx", help="the ONNX file")
    i.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory to create")
    i.add_argument("--dataset", required=True, metavar="NAME|PATH",
                   help="the data the model is for (mnist, fashion-mnist, cifar10, shapes or a folder): "
                        "evaluate, explain and train --resume use it")
    i.add_argument("--data-dir", metavar="DIR", help="where the named datasets are stored")
    i.set_defaults(func=cmd_import)
