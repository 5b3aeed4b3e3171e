"""What every explain tool starts from: the data, the model to explain, the input image, the shared options.

* **Data.** :func:`default_data` picks the default subject's dataset: MNIST
  when its files are at hand (``--data-dir``, ``$CNNLAB_DATA``, the cache
  ``~/.cache/cnnlab``, then ``./data``; never downloaded here), otherwise the
  built-in generated ``shapes``. :func:`load_data` is the one loader, with one
  rule for which examples it takes: **the first** ``n_train`` **training and
  the first** ``n_test`` **test examples, in the order of the files** (for
  ``shapes``: exactly that many are generated from ``seed``). Anyone can
  rebuild the same subset.
* **Model.** :func:`resolve_subject` loads a run directory or a
  ``.safetensors`` file, or trains the demo model (the zoo's ``tiny_cnn``,
  :func:`demo_model`) in seconds on the default data, recording its
  first-layer filters as it learns. On the command line, no ``--model``
  means the default subject (:class:`DefaultSubject`): the run ``cnnlab
  serve`` shows without a model (:func:`cnnlab.analysis.subject.default_subject_run`),
  trained once under ``--runs`` when first needed and reused by both. The :class:`Subject` it returns knows the
  dataset and its class names, so every page can name the data it used.
* **Input.** :func:`pick_input` returns the user's picture
  (:func:`prepare_image`) or a test image of the subject's dataset.
* **Options.** :func:`add_common_arguments` declares ``--model --dataset
  --data-dir --image --index --invert --seed`` once for every tool;
  :func:`tool_out` is the one output folder rule: ``./explain/<tool>``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import images
from ..analysis.baselines import fit_until, mlp_hidden_units  # noqa: F401  (the explain tools import them from here)
from ..analysis.layers import first_conv
from ..callbacks import FilterSnapshots
from ..runs import files
from ..runs.files import read_filter_snapshots  # noqa: F401  (the explain tools read snapshots from here)
from . import common

DEFAULT_TRAIN = 5000      # training images for the demo model trained on the spot
DEFAULT_EPOCHS = 2
DEFAULT_OUT = "explain"   # every tool writes to ./explain/<tool> unless --out says otherwise
LOCAL_DATA_DIR = "data"   # the working directory's ./data, searched last for MNIST


def log_to(log, msg):
    """Send ``msg`` to ``log`` (a callable such as :func:`stderr_log`) when there is one."""
    if log is not None:
        log(msg)


def stderr_log(msg):
    print(msg, file=sys.stderr, flush=True)


def tool_out(tool: str) -> str:
    """The default output folder of a tool: ``explain/<tool>`` (tools never share a folder)."""
    return str(Path(DEFAULT_OUT) / tool)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def mnist_available(data_dir=None) -> bool:
    """True when MNIST is on disk (``data_dir``, ``$CNNLAB_DATA`` or the cache), without downloading."""
    from ..datasets import DatasetNotFoundError
    from ..datasets.official import find_idx_files, search_dirs
    if data_dir is not None and not Path(data_dir).is_dir():
        return False
    try:
        return any(find_idx_files(d) for d in search_dirs("mnist", data_dir))
    except (DatasetNotFoundError, OSError):
        return False


def default_data(data_dir=None):
    """``("mnist", folder)`` when MNIST is on disk, else ``("shapes", data_dir)`` (generated; never downloads).

    Looks in ``data_dir``, ``$CNNLAB_DATA`` and the cache; without a
    ``data_dir``, also in ``./data``.
    """
    for d in ([data_dir] if data_dir is not None else [None, LOCAL_DATA_DIR]):
        if mnist_available(d):
            return "mnist", d
    return "shapes", data_dir


OFFICIAL = ("mnist", "fashion-mnist", "cifar10")


def load_data(dataset=None, data_dir=None, n_train=None, n_test=None, seed=0, options=None, image_size=None):
    """``((x_train, y_train), (x_test, y_test), info)``: the first ``n_train`` / ``n_test`` examples of each split.

    ``dataset=None`` picks :func:`default_data`. ``None`` for a count takes
    the whole split. ``shapes`` generates exactly the requested counts
    (6000 and 1000 by default) of side ``image_size`` (default 28), seeded by
    ``seed``; a run's ``dataset_options`` (``options``, passed to
    :func:`cnnlab.datasets.load_dataset`) take precedence, so a run's own data
    is rebuilt. Named datasets are read from disk, never downloaded here.
    ``info`` is the loader's ``{"name", "class_names", "input_shape"}``.
    """
    from ..datasets import load_dataset
    name = dataset
    if name is None:
        name, data_dir = default_data(data_dir)
    key = str(name).lower().replace("_", "-")
    kw = {}
    if key == "shapes":
        kw = {"n_train": int(n_train or 6000), "n_test": int(n_test or 1000), "seed": seed,
              "image_size": int(image_size or 28)}
    kw.update(options or {})
    if key in OFFICIAL:
        kw["download"] = False
    (xtr, ytr), (xte, yte), info = load_dataset(key if key in OFFICIAL or key == "shapes" else name, data_dir, **kw)
    if n_train is not None:
        xtr, ytr = xtr[:n_train], ytr[:n_train]
    if n_test is not None:
        xte, yte = xte[:n_test], yte[:n_test]
    return (xtr, ytr), (xte, yte), info


def data_noun(dataset) -> str:
    """What one example of ``dataset`` is called in a sentence: ``digit`` for MNIST, ``image`` otherwise."""
    key = str(dataset or "").lower().replace("_", "-")
    return {"mnist": "digit", "shapes": "shape", "fashion-mnist": "garment"}.get(key, "image")


# ---------------------------------------------------------------------------
# The demo model
# ---------------------------------------------------------------------------
def demo_model(input_shape, num_classes, seed=0):
    """The model trained on the spot: the zoo's ``tiny_cnn`` (conv 8@5x5, pool, conv 16@3x3, pool, dense)."""
    from ..models import tiny_cnn
    return tiny_cnn(input_shape=tuple(input_shape), num_classes=num_classes, seed=seed)


def snapshot_steps(total, frames):
    """About ``frames`` steps in ``[0, total]``, spaced evenly on a square-root scale.

    The frames crowd at the start (0, 1, 4, 9, ... times a constant), where a
    learner first looks for the random filters to take shape, and thin out later.
    """
    t = np.linspace(0.0, 1.0, max(int(frames), 2)) ** 2
    return sorted({int(round(v)) for v in t * total})


def train_demo_model(train, input_shape, num_classes, epochs=DEFAULT_EPOCHS, seed=0, frames=16, batch_size=64):
    """Train :func:`demo_model` on ``train = (x, y)`` with Adam; return ``(model, snapshots)``.

    ``snapshots`` maps optimizer steps to first-layer kernels, about ``frames``
    of them, denser in the early steps (:func:`snapshot_steps`).
    """
    from ..optim import Adam
    x, y = train
    model = demo_model(input_shape, num_classes, seed=seed)
    steps = epochs * -(-len(x) // batch_size)
    snap = FilterSnapshots(layer=first_conv(model), steps=snapshot_steps(steps, frames))
    model.fit(x, y, epochs=epochs, batch_size=batch_size, optimizer=Adam(lr=2e-3), verbose=0, callbacks=[snap])
    return model, dict(sorted(snap.snapshots.items()))


# ---------------------------------------------------------------------------
# The subject: a model and its data
# ---------------------------------------------------------------------------
@dataclass
class Subject:
    """A model to explain, where it came from, and the data that goes with it."""
    model: object
    description: str
    dataset: str | None = None
    data_dir: str | None = None
    run_dir: Path | None = None
    class_names: list = field(default_factory=list)
    snapshots: dict | None = None          # {step: first-layer kernel}
    test: tuple | None = None               # (x_test, y_test) when loaded
    n_test: int | None = None
    options: dict | None = None             # a run's dataset_options

    def test_split(self, limit=None):
        """The first ``limit`` test images of the subject's dataset (or all), loaded once."""
        have_all = self.test is not None and self.n_test is None
        if not have_all and (self.test is None or limit is None or limit > self.n_test):
            if self.dataset is None:
                raise ValueError(f"no dataset is known for {self.description}: pass --image PATH or --dataset NAME")
            _, (xte, yte), info = load_data(self.dataset, self.data_dir, n_train=1, n_test=limit,
                                            options=self.options)
            check_compatible(self.model, info, self.dataset)
            self.test, self.n_test = (xte, yte), limit
            if len(self.class_names) != self.model.num_classes or self.class_names == default_names(self.model):
                self.class_names = fit_class_names(info.get("class_names"), self.model.num_classes)
        x, y = self.test
        return (x, y) if limit is None else (x[:limit], y[:limit])

    def class_name(self, k) -> str:
        return self.class_names[k] if 0 <= k < len(self.class_names) else str(k)

    @property
    def data_name(self) -> str:
        """The dataset's name for a sentence (``"unknown data"`` when none is known)."""
        return str(self.dataset) if self.dataset else "unknown data"


def default_names(model):
    return [str(i) for i in range(model.num_classes)]


def fit_class_names(names, k):
    names = list(names or [])
    return names if len(names) == k else [str(i) for i in range(k)]


def check_compatible(model, info, dataset):
    """Raise a clear error when a dataset's images or classes do not fit the model."""
    shape = tuple(info["input_shape"])
    if shape != tuple(model.input_shape):
        raise ValueError(f"dataset {dataset!r} has images of shape {shape}, but the model expects "
                         f"{tuple(model.input_shape)}; pass --dataset with the data the model was trained on")
    if len(info.get("class_names") or []) > model.num_classes:
        raise ValueError(f"dataset {dataset!r} has {len(info['class_names'])} classes, the model only "
                         f"{model.num_classes}")


def run_config(path) -> dict:
    """The checked configuration of a run directory (``{}`` for a plain model file or a run without one)."""
    p = Path(path)
    return (files.read_config(p, missing_ok=True) or {}) if p.is_dir() else {}


def run_data(path, dataset=None, data_dir=None):
    """``(dataset, data_dir, options)`` of a run directory: its ``config.json`` unless ``dataset`` is given."""
    cfg = run_config(path)
    ds = dataset or cfg.get("dataset")
    dd = data_dir if data_dir is not None else cfg.get("data_dir")
    options = cfg.get("dataset_options") if not dataset and isinstance(cfg.get("dataset_options"), dict) else None
    return ds, dd, options


@dataclass(frozen=True)
class DefaultSubject:
    """No ``--model`` on the command line: the default subject, the run under ``runs`` that ``cnnlab serve`` shows
    without a model (:func:`cnnlab.analysis.subject.default_subject_run`), trained once when a tool first needs it."""
    runs: str = "runs"

    @staticmethod
    def covers(dataset) -> bool:
        """Whether the default subject is the model for ``dataset``: it is trained on mnist or shapes only."""
        return dataset is None or str(dataset).lower() in ("mnist", "shapes")

    def run_dir(self, dataset=None, data_dir=None, log=None) -> Path:
        from ..analysis.subject import default_subject_run
        return default_subject_run(Path(self.runs), data_dir, log=lambda msg: log_to(log, f"cnnlab explain: {msg}"),
                                   dataset=dataset)


def model_argument(args):
    """``--model``, or without one the :class:`DefaultSubject` under ``--runs``."""
    return args.model if args.model is not None else DefaultSubject(args.runs)


def resolve_subject(model=None, dataset=None, data_dir=None, n_train=DEFAULT_TRAIN, epochs=DEFAULT_EPOCHS,
                    seed=0, log=None) -> Subject:
    """The model to explain: a :class:`Subject`, a model, a run directory, a ``.safetensors`` or ``.onnx`` file,
    a :class:`DefaultSubject`, or ``None``.

    With ``None`` the demo model (:func:`demo_model`) is trained now on the
    first ``n_train`` images of ``dataset`` (default: :func:`default_data`),
    recording its first-layer filters as it learns. For a run directory the
    dataset comes from its ``config.json`` unless ``dataset`` is given; for a
    bare model file of 28x28x1 images it defaults as above.
    """
    from ..runs.resolve import resolve_model
    if isinstance(model, Subject):          # resolved once, shared by several tools (``cnnlab explain all``)
        return model
    if isinstance(model, DefaultSubject):   # the default subject is trained on mnist or shapes; other data: train now
        model = model.run_dir(dataset, data_dir, log if log is not None else stderr_log) if model.covers(dataset) else None
    if model is not None:
        resolved = resolve_model(model, untrained=False)        # a model object, a run directory or a model file
        loaded, run_dir = resolved.model, resolved.run_dir
        ds, dd, options = run_data(run_dir, dataset, data_dir) if run_dir is not None else (dataset, data_dir, None)
        if ds is None and tuple(loaded.input_shape) == (28, 28, 1):
            ds, dd = default_data(dd)
        snaps = None
        if run_dir is not None and files.has_filter_snapshots(run_dir):
            snaps = read_filter_snapshots(run_dir)
        return Subject(loaded, resolved.source, ds, dd, run_dir, default_names(loaded), snaps, options=options)
    ds = dataset
    if ds is None:
        ds, data_dir = default_data(data_dir)
    log_to(log, f"no model given: training the demo model (tiny_cnn) on {n_train} {ds} images for {epochs} epochs ...")
    (xtr, ytr), (xte, yte), info = load_data(ds, data_dir, n_train=n_train, seed=seed)
    k = max(len(info["class_names"]), int(ytr.max()) + 1)
    net, snaps = train_demo_model((xtr, ytr), info["input_shape"], k, epochs=epochs, seed=seed)
    acc = net.evaluate(xte[:1000], yte[:1000])["accuracy"]
    log_to(log, f"  test accuracy on the first {min(1000, len(xte))} test images: {acc:.3f}")
    return Subject(net, f"{net.name} trained now on {len(xtr)} {info['name']} images for {epochs} epochs "
                        f"(test accuracy {acc:.3f} on {min(1000, len(xte))} images)",
                   ds, data_dir, None, fit_class_names(info["class_names"], k), snaps, (xte, yte), None)


# ---------------------------------------------------------------------------
# The input
# ---------------------------------------------------------------------------
def prepare_image(path, input_shape, invert="auto", center="auto", dataset=None, log=stderr_log) -> np.ndarray:
    """Read a user's picture as one model input (H, W, C) in [0, 1], by the rules of :mod:`cnnlab.images`.

    ``invert`` and ``center`` are ``"auto"``, ``"yes"`` or ``"no"`` (see
    :func:`cnnlab.images.prepare_input`); what was done is said through ``log``.
    """
    x, notes = images.prepare_input(path, input_shape, invert=invert, center=center, dataset=dataset)
    for note in notes:
        log_to(log, f"note: {note}")
    return x


def pick_input(subject, image=None, index=0, invert="auto", center="auto"):
    """``(x, label, description)``: the user's image, else test image ``index`` of the subject's dataset."""
    if image is not None:
        return prepare_image(image, subject.model.input_shape, invert, center, subject.dataset), None, f"image {image}"
    x, y = subject.test_split(None if subject.test is not None else max(index + 1, 100))
    if not 0 <= index < len(x):
        raise ValueError(f"--index must lie in [0, {len(x) - 1}], received {index}")
    return x[index], int(y[index]), f"test image #{index} of {subject.dataset}"


def softmax1(z):
    """Softmax of one score vector."""
    z = np.asarray(z, np.float64).ravel()
    e = np.exp(z - z.max())
    return e / e.sum()


def shape_text(shape):
    return "\u00d7".join(map(str, shape))


# ---------------------------------------------------------------------------
# Options every tool shares
# ---------------------------------------------------------------------------
def add_common_arguments(p, tool, image=True, model=True, data=True):
    """``--out`` (default ``explain/<tool>``), ``--seed`` and, as asked, the subject's and the input's options.

    ``model``: ``--model --runs`` (:func:`add_model_arguments`); ``data``: ``--dataset --data-dir``; ``image``:
    ``--image --index --invert --keep-background --no-center``.
    """
    if model:
        add_model_arguments(p)
    if data:
        p.add_argument("--dataset", help="dataset name (mnist, fashion-mnist, cifar10, shapes) or folder; default: "
                       "the run's dataset, else MNIST if found on disk, else the generated shapes")
        p.add_argument("--data-dir", metavar="DIR", help="folder holding the dataset files (e.g. DIR/mnist/)")
    if image:
        p.add_argument("--image", metavar="PATH", help="a picture to explain (PNG, JPEG, ...); resized to the "
                       "model's input (default: a test image)")
        p.add_argument("--index", type=int, default=0, help="which test image when --image is not given (default 0)")
        p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                       help="invert the picture's gray levels; auto: when its border is light (default)")
        images.add_arguments(p, invert_flag=False)          # --keep-background, --no-center
    p.add_argument("--seed", type=int, default=0, help="seed for data and training (default 0)")
    p.add_argument("--out", default=tool_out(tool), metavar="DIR",
                   help=f"output folder (default ./{tool_out(tool)})")


def add_model_arguments(p):
    """``--model`` and ``--runs``: the model to explain, by default the default subject (:func:`model_argument`)."""
    p.add_argument("--model", metavar="RUN_OR_FILE", help="a run directory, .safetensors or .onnx model file (default: "
                   "the default subject, the model cnnlab serve shows without one: tiny_cnn on MNIST when at hand, "
                   "else on the built-in shapes, trained once into RUNS/<dataset>-default-subject and reused; with "
                   "--dataset naming other data, tiny_cnn trained on it now)")
    p.add_argument("--runs", default="runs", metavar="RUNS", help="where the default subject's run is kept, as for "
                   "cnnlab serve (default runs)")
