"""The explorer's web application: Starlette routes over :mod:`.compute` and :mod:`.jobs`.

Routes (all answers JSON except the page, the static files and the event stream)::

    GET  /                                  the page (static/index.html)
    GET  /static/...                        the page's scripts and styles (package data only)
    GET  /api/model[?run=NAME]              input_shape, class_names, layers [{name, class, kind, output_shape, ...}]
    POST /api/predict[?activations=1|base64][&run=NAME]      body: PNG/JPEG bytes -> probabilities, softmax,
                                            notes (what was done to the picture), novelty (far from the training data?)
    POST /api/unit?layer=L&channel=C&y=Y&x=X[&run=NAME]      body: image -> the numbers behind one unit
    POST /api/unit/optimum?layer=L&channel=C[&y=Y&x=X]       body: image -> an input of its norm optimised to
                                            excite that unit, and the unit on it, on the image, on noise
    GET  /api/examples?source=model|shapes&n=N              test images of the model's data (else shapes, and a note)
    GET  /api/filters[?run=NAME]            the first convolution's kernels (live training view; empty before a save)
    GET  /api/choices                       datasets found on disk, zoo models, augmentation presets (training form)
    GET  /api/filters/added?run=NAME        that kernel minus its first snapshot: what training added
    GET  /api/why/filters[?run=NAME]        first-layer filters with their most activating patches
    POST /api/why/saliency[?class=K]        body: image -> gradient saliency and Grad-CAM
    POST /api/why/shift?dy=DY&dx=DX         body: image -> shifted image, conv maps, pooled features
    GET  /api/lesson[?run=NAME]             the lesson's steps: number, id, title, questions; companions:
                                            {name: {status, message, progress}} (starts their training)
    POST /api/lesson/try?kernel=edge|blur|sharpen|custom|trained:K&size=&stride=&padding=&dilation=&pool=&values=
                                            body: image -> that kernel's output and its size, then max pooling
                                            (``cnnlab.analysis.lesson.tryit``: the project's own layers)
    POST /api/lesson/N[?run=NAME]           body: image -> step N computed for the model and that input
                                            (``cnnlab.analysis.lesson``: paragraphs, numbers, figures)
    GET  /api/runs                          run directories under the runs folder, and jobs
    POST /api/runs                          JSON training options -> a job in its own process (409 if busy)
    GET  /api/runs/NAME                     a run's config, state and history
    GET  /api/runs/NAME/events              server-sent events: batch, epoch, end (Last-Event-ID resumes);
                                            shutdown when the server stops
    POST /api/runs/NAME/stop                stop a job (it keeps its last completed epoch)

Every route that reads an image takes ``invert=auto|no``, ``center=auto|no`` (how the picture is
prepared) and ``input=drawing|upload|example`` (what the notes call it).

Safety (:class:`.guard.Guard`): requests whose ``Host`` is not one of the served names get 403 (DNS
rebinding); a request that may change state (POST) gets 403 unless it comes from the served
page (its ``Origin``) with the server's secret (a ``SameSite=Strict`` cookie set by ``GET /``);
JSON routes take ``application/json`` only (415); a job's dataset is a built-in name or a
folder inside ``--data-dir`` or ``--runs`` (400); bodies over ``max_upload`` bytes get 413; decompression bombs get
413 before they are decoded (``cnnlab.images``, the project's one image reader);
a body that is not an image, or malformed JSON, gets 400 naming the problem;
every error is ``{"error": message}``. Pictures are prepared as ``cnnlab predict``
prepares them (the background rule, MNIST's normalization), and predictions
carry ``notes`` saying what was done.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import json
import secrets
import threading
import weakref
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import images, runs
from .._io import CnnlabFileError
from . import compute
from .guard import Guard, token_cookie
from .jobs import JobError, JobManager, run_events

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD = 4 * 1024 * 1024            # bytes of an uploaded image
MAX_JSON = 64 * 1024                    # bytes of a JSON request


N_FIT, N_HELD_OUT = 1000, 500          # images of the model's data fitting the novelty measure, calibrating it
NOVELTY_MEASURE = ("the largest Mahalanobis distance, relative to its median on held-out images, of the "
                   "input's pixel statistics and of each layer's per-channel mean and spread from those of "
                   "the training images")


class ApiError(Exception):
    def __init__(self, status, message, **extra):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def _error(status, message, **extra):
    return JSONResponse({"error": message, **extra}, status_code=status)


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------
async def read_body(request, limit) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {int(declared):,} bytes; the limit is {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_body(request):
    """The request's JSON body; 415 unless it is declared ``application/json`` (see :class:`Guard`)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, f"the body must be JSON sent as Content-Type: application/json, not {media or 'undeclared'}")
    data = await read_body(request, MAX_JSON)
    try:
        return json.loads(data.decode("utf-8")) if data.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON: {e}") from None


# The words of the notes for a browser: who the picture is, and how the page turns each rule off.
SUBJECTS = {"drawing": "your drawing", "upload": "your picture", "example": "the example"}
UNDO = {"invert": "untick \u201cinvert a light background\u201d to keep it", "center": "untick \u201ccentre as MNIST\u201d to skip this"}


def decode_image(data: bytes, shape, dataset=None, invert="auto", center="auto", subject=None) -> tuple[np.ndarray, list]:
    """The bytes of an image file -> (float32 (H, W, C) in [0, 1] for a model taking ``shape``, notes).

    Read and prepared by cnnlab's one image reader, as ``cnnlab predict`` and ``cnnlab explain``
    do (:func:`cnnlab.images.prepare_input`): the header's size checked before any pixel is
    decoded (decompression bombs: 413), alpha on white, the light-background rule (``invert``:
    auto, yes or no), MNIST's size normalization for MNIST-style models (``center``: auto, yes or
    no). ``dataset`` is the model's training configuration when known; the notes say in a plain
    sentence each what was done to ``subject`` (``drawing``, ``upload`` or ``example``) and which
    option of the page undoes it.
    """
    if not data:
        raise ApiError(400, "the body is empty: send the bytes of a PNG or JPEG image")
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise ApiError(400, f"this model takes inputs of shape {tuple(shape)}, not (H, W, 1) or (H, W, 3) images")
    name = dataset.get("dataset") if isinstance(dataset, dict) else None
    try:
        return images.prepare_input(data, tuple(shape), invert=invert, center=center, dataset=name,
                                    name=SUBJECTS.get(subject, "the picture"), undo=UNDO)
    except images.ImageTooLarge as e:
        raise ApiError(413, str(e)) from None
    except CnnlabFileError as e:
        raise ApiError(400, str(e)) from None


def _choice(request, key, choices, default):
    value = request.query_params.get(key, default) or default
    value = {"1": "yes", "true": "yes", "0": "no", "false": "no"}.get(value, value)
    if value not in choices:
        raise ApiError(400, f"query parameter {key!r} must be one of {', '.join(choices)}, received {value!r}")
    return value


def _int(request, key, default=None, lo=None):
    raw = request.query_params.get(key)
    if raw is None:
        if default is None:
            raise ApiError(400, f"missing query parameter {key!r}")
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {key!r} must be an integer, received {raw!r}") from None
    if lo is not None and v < lo:
        raise ApiError(400, f"query parameter {key!r} must be at least {lo}, received {v}")
    return v


def png_base64(img) -> str:
    """A float (H, W, C) image in [0, 1] as base64 PNG (:func:`cnnlab.images.encode_png`)."""
    return base64.b64encode(images.encode_png(img)).decode("ascii")


# ---------------------------------------------------------------------------
# The served model, run models and examples
# ---------------------------------------------------------------------------
class Explorer:
    """What the routes share: the served model, models of served runs, examples, jobs, one compute lock.

    Layers keep what their forward pass needs for backward, so one computation runs at a time.
    """

    def __init__(self, model, class_names=None, runs_root="runs", dataset=None, max_jobs=1,
                 max_upload=MAX_UPLOAD, data_dir=None, run_dir=None):
        self.model, self.dataset, self.data_dir, self.run_dir = model, dataset, data_dir, run_dir
        self.class_names = compute.describe(model, class_names)["class_names"]
        self.jobs = JobManager(runs_root, max_jobs=max_jobs, data_dir=data_dir)
        self.closing = threading.Event()         # set when the server is asked to stop: event streams end
        self.max_upload = int(max_upload)
        self.lock = threading.Lock()
        self._run_models: dict[str, tuple] = {}
        self._data: dict[tuple, tuple | LookupError] = {}
        self._shapes: dict[tuple, tuple] = {}
        self._novelty = weakref.WeakKeyDictionary()      # model -> {"ready", "novelty", "why"}
        self._companions = weakref.WeakKeyDictionary()   # model -> lesson.companions.Companions
        self._companions_by_key: dict = {}                # companions' cache key -> the same object
        self._companions_lock = threading.Lock()
        self._data_lock, self._novelty_lock = threading.Lock(), threading.Lock()

    def weights_of(self, name) -> Path | None:
        """The file of run ``name``'s latest weights; ``None`` while it has none (404: no such run or job)."""
        job = self.jobs.jobs.get(name)
        run_dir = job.run_dir if job else self.jobs.run_dir(name)
        return next((p for p in (run_dir / runs.LAST_FILE, run_dir / runs.MODEL_FILE) if p.is_file()), None)

    def model_for(self, request):
        """``(model, class_names, dataset)``: the run's latest weights with ``?run=NAME``, else the served model."""
        name = request.query_params.get("run")
        if not name:
            return self.model, self.class_names, self.dataset
        path = self.weights_of(name)
        if path is None:
            raise ApiError(409, f"run {name!r} has no saved model yet")
        key = path.stat().st_mtime_ns
        cached = self._run_models.get(name)
        if cached is None or cached[0] != key:
            from ..model import load
            model = load(path)
            config = runs.read_config(path.parent)
            names = (config.get("data") or {}).get("class_names")
            cached = (key, model, compute.describe(model, names)["class_names"], config)
            self._run_models[name] = cached
        return cached[1], cached[2], cached[3]

    def own_data(self, shape, dataset):
        """:func:`model_data` for a model taking ``shape`` trained on ``dataset``, read once; or the
        ``LookupError`` saying why there is none."""
        key = (tuple(shape), json.dumps(dataset, sort_keys=True, default=str))
        with self._data_lock:
            if key not in self._data:
                try:
                    self._data[key] = model_data(shape, dataset, self.data_dir)
                except LookupError as e:
                    self._data[key] = e
            return self._data[key]

    def examples(self, model, dataset, source="model", n=12):
        """``(x, y, class_names, source, note)``: ``n`` test images for ``model``'s input: with
        ``source="model"`` its own data when found on disk (:func:`model_data`), else ``shapes``
        pictures and a ``note`` saying why."""
        shape = tuple(model.input_shape)
        if len(shape) != 3 or shape[2] not in (1, 3):
            raise ApiError(400, f"this model takes inputs of shape {shape}, not images")
        data = self.own_data(shape, dataset) if source == "model" else None
        if isinstance(data, tuple):
            (xt, yt), names, used = data[1], data[2], data[3]
            return xt[:n], yt[:n], names, used, None
        if shape not in self._shapes:
            self._shapes[shape] = shapes_examples(shape)
        x, y, names = self._shapes[shape]
        note = None if data is None else f"Shapes pictures instead of the model's own: {data}."
        return x[:n], y[:n], names, "shapes", note

    def novelty(self, model, dataset, x) -> dict:
        """Whether ``x`` is far from ``model``'s training data (``cnnlab.analysis.novelty``, calibrated once
        per model on its own held-out test images, in a thread of its own on a copy of the model, so
        that predictions never wait for it); ``far`` is ``None`` until then, or when there are none."""
        with self._novelty_lock:
            entry = self._novelty.get(model)
            if entry is None:
                self._novelty[model] = entry = {"ready": threading.Event(), "novelty": None, "why": None}
                threading.Thread(target=self._calibrate, args=(model, dataset, entry), daemon=True,
                                 name="novelty-calibration").start()
        if not entry["ready"].is_set():
            return {"far": None, "message": "The warning for inputs unlike the training images is being calibrated "
                                            "on the model's own data; later predictions will have it."}
        novelty, used = entry["novelty"], entry["why"]
        if novelty is None:
            return {"far": None, "message": used}
        out = {**novelty.judge(x), "dataset": used, "measure": NOVELTY_MEASURE}
        out["message"] = (f"This input is unlike the {used} images the model was trained on (its score, "
                          f"{out['score']:.1f}, is above {out['threshold']:.1f}, which only 3% of its held-out "
                          f"{used} test images exceed), so its prediction, however confident, may be wrong."
                          if out["far"] else None)
        return out

    def _calibrate(self, model, dataset, entry):
        from ..analysis.novelty import Novelty
        try:
            data = self.own_data(tuple(model.input_shape), dataset)
            if isinstance(data, LookupError):
                entry["why"] = f"No warning for inputs unlike the training images: {data}."
            else:
                (xtr, _), (xt, _), _, used = data
                entry["novelty"] = Novelty.fit(copy.deepcopy(model), xtr[:N_FIT], xt[:N_HELD_OUT])
                entry["why"] = used
        except Exception as e:                      # noqa: BLE001 - said with every prediction, never lost
            entry["why"] = f"No warning for inputs unlike the training images: calibration failed ({type(e).__name__}: {e})."
        finally:
            entry["ready"].set()

    def choices(self) -> dict:
        """What a training job may use here: the named datasets found on disk (``--data-dir``,
        ``$CNNLAB_DATA``, the cache; ``shapes`` always), the dataset folders directly inside
        ``--data-dir``, the zoo's models and the augmentation presets."""
        from ..augment import PRESETS
        from ..datasets import DATASETS, find_cifar10_files, find_dataset, find_idx_files
        from ..models import ZOO
        datasets = []
        for key in DATASETS:
            where = "generated" if key == "shapes" else find_dataset(key, self.data_dir)
            datasets.append({"name": key, "available": where is not None, "where": where and str(where),
                             "why": None if where else "not found in --data-dir, $CNNLAB_DATA or the cache"})
        root = Path(self.data_dir) if self.data_dir else None
        for sub in sorted(root.iterdir()) if root and root.is_dir() else ():
            with contextlib.suppress(OSError, CnnlabFileError):
                if sub.is_dir() and sub.name not in DATASETS and (find_idx_files(sub) or find_cifar10_files(sub)):
                    datasets.append({"name": sub.name, "available": True, "where": str(sub), "why": None})
        return {"data_dir": self.data_dir and str(self.data_dir), "datasets": datasets, "models": list(ZOO),
                "augment": list(PRESETS)}

    def run_dir_of(self, request):
        """The run directory of the model a request asks for (``?run=NAME``, else the served model's, if any)."""
        name = request.query_params.get("run")
        if not name:
            return self.run_dir
        job = self.jobs.jobs.get(name)
        return job.run_dir if job else self.jobs.run_dir(name)

    def companions(self, model, dataset, run_dir=None):
        """The lesson's companion models of ``model`` (``cnnlab.analysis.lesson.companions``; cached beside
        ``run_dir`` when it is a run), made once per model in a thread of their own with one BLAS thread,
        never under the compute lock."""
        from ..analysis.lesson.companions import Companions
        with self._novelty_lock:
            entry = self._companions.get(model)
            if entry is None:
                data = self.own_data(tuple(model.input_shape), dataset) if len(model.input_shape) == 3 else \
                    LookupError("the model does not take images")
                made = Companions(model, data, run_dir=run_dir)
                entry = self._companions_by_key.setdefault(made.key, made)   # the same architecture and data:
                self._companions[model] = entry                              # one set (a run training on)
                if entry is made:
                    def run():
                        with self._companions_lock, _blas().limit(limits=1):   # one set trains at a time
                            entry.run()
                    threading.Thread(target=run, daemon=True, name="lesson-companions").start()
        return entry

    def lesson_step(self, model, names, dataset, x, n, run_dir=None) -> dict:
        """Step ``n`` of the lesson for ``model`` on input ``x``, arrays packed for JSON."""
        from ..analysis import lesson
        data = self.own_data(tuple(model.input_shape), dataset) if len(model.input_shape) == 3 else None
        ctx = lesson.Context(model=model, x=x, class_names=names, data=data,
                             companions=self.companions(model, dataset, run_dir).context())
        return compute.jsonable(lesson.step(n, ctx))

    def compute(self, fn, *args, **kw):
        """Run ``fn`` under the compute lock, in a worker thread, with one BLAS thread.

        One image at a time needs small matrix products: one thread computes them fastest, never
        spin-waits on a busy machine, and leaves the other cores to a training job's process.
        """
        def locked():
            with self.lock, _blas().limit(limits=1):
                return fn(*args, **kw)
        return run_in_threadpool(locked)


@functools.lru_cache(maxsize=1)
def _blas():
    """The process's BLAS thread pools (found once: looking them up takes milliseconds)."""
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


def model_data(shape, config, data_dir=None, n_train=2000, n_test=1000):
    """``((x_train, y_train), (x_test, y_test), class_names, source)``: the first ``n_train`` training and
    ``n_test`` test images of the model's own data, for a model taking ``shape``.

    The dataset of ``config`` (its run's configuration): a named dataset looked up as ``cnnlab train``
    looks (``data_dir``, the run's own ``data_dir``, ``$CNNLAB_DATA``, the cache; never downloaded),
    ``shapes`` (generated as the run had it) or the run's dataset folder. ``LookupError`` says why
    when there is none.
    """
    from ..datasets import DATASETS, find_dataset, load_dataset
    name = str((config or {}).get("dataset") or "")
    if not name:
        raise LookupError("this model's training data is not known (it is not a run)")
    key = name.lower().replace("_", "-")
    options = config.get("dataset_options") or {}
    try:
        if key in DATASETS and key != "shapes":
            where = next(filter(None, (find_dataset(key, d) for d in (data_dir, config.get("data_dir"), None))), None)
            if where is None:
                raise LookupError(f"{name}'s files were not found in --data-dir, $CNNLAB_DATA or the cache")
            (x, y), (xt, yt), _ = load_dataset(where, **options)
            names, source = DATASETS[key][1], key
        else:
            (x, y), (xt, yt), info = load_dataset(name, **options)
            names, source = info["class_names"], key if key in DATASETS else info["name"]
    except (OSError, ValueError) as e:
        raise LookupError(f"{name} could not be read: {e}") from None
    if tuple(xt.shape[1:]) != tuple(shape):
        raise LookupError(f"{name}'s images are {tuple(xt.shape[1:])}, the model takes {tuple(shape)}")
    return (x[:n_train], y[:n_train]), (xt[:n_test], yt[:n_test]), list(names), source


def shapes_examples(shape, n=256):
    """``(x, y, class_names)``: ``n`` shapes pictures resized to ``shape``."""
    from ..datasets import SHAPES_CLASSES, load_shapes
    h, w, c = shape
    (_, _), (xt, yt) = load_shapes(1, n, image_size=max(12, h, w), seed=1)
    if xt.shape[1:3] != (h, w):
        xt = np.stack([images.resize(img, h, w) for img in xt])
    return np.repeat(xt, c, axis=3).astype(np.float32), yt, list(SHAPES_CLASSES)


# ---------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------
def create_app(model, class_names=None, runs_root="runs", allowed_hosts=("127.0.0.1", "localhost"), dataset=None,
               max_jobs=1, max_upload=MAX_UPLOAD, data_dir=None, run_dir=None) -> Starlette:
    """The application for ``model``. ``allowed_hosts``: the names the ``Host`` header may carry
    (``None``: any); ``dataset``: the served model's training configuration (for its test images);
    ``data_dir``: where named datasets are stored (``cnnlab train --data-dir``); ``run_dir``: the served
    model's run directory, if it is a run (the lesson's companions are kept there)."""
    ex = Explorer(model, class_names, runs_root, dataset, max_jobs, max_upload, data_dir, run_dir)

    secret = secrets.token_urlsafe(32)

    async def index(request):
        page = FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
        page.set_cookie(token_cookie(request.headers.get("host", "")), secret, httponly=True, samesite="strict")
        return page

    async def get_model(request):
        model, names, _ = ex.model_for(request)
        return JSONResponse(compute.describe(model, names))

    async def image_of(request, model, dataset):
        """The request's picture prepared for ``model`` as its query asks (``invert``, ``center``:
        auto, yes or no; ``input``: drawing, upload or example, for the notes' words), and the notes."""
        options = {k: _choice(request, k, ("auto", "yes", "no"), "auto") for k in ("invert", "center")}
        subject = _choice(request, "input", ("drawing", "upload", "example", "picture"), "picture")
        return decode_image(await read_body(request, ex.max_upload), model.input_shape, dataset,
                            subject=subject, **options)

    async def predict(request):
        model, names, dataset = ex.model_for(request)
        x, notes = await image_of(request, model, dataset)
        fmt = request.query_params.get("activations")
        fmt = {None: None, "": None, "0": None, "1": "list", "list": "list", "base64": "base64"}.get(fmt, "bad")
        if fmt == "bad":
            raise ApiError(400, f"activations must be 1, list or base64, received {request.query_params['activations']!r}")
        out = await ex.compute(compute.predict, model, x, fmt, names)
        out["notes"] = notes
        out["novelty"] = await ex.compute(ex.novelty, model, dataset, x)
        return JSONResponse(out)

    def layer_of(request, model):
        """The query's ``layer``: a layer name of ``model`` (400 when missing, 404 when unknown)."""
        layer = request.query_params.get("layer")
        if not layer:
            raise ApiError(400, "missing query parameter 'layer'")
        try:
            model[layer]
        except KeyError as e:
            raise ApiError(404, str(e.args[0])) from None
        return layer

    async def unit(request):
        model, _, dataset = ex.model_for(request)
        layer = layer_of(request, model)
        c, y, xx = _int(request, "channel", lo=0), _int(request, "y", 0, lo=0), _int(request, "x", 0, lo=0)
        x, _ = await image_of(request, model, dataset)
        return JSONResponse(await ex.compute(compute.unit_detail, model, x, layer, c, y, xx))

    async def unit_optimum(request):
        model, _, dataset = ex.model_for(request)
        layer = layer_of(request, model)
        c, xx = _int(request, "channel", lo=0), _int(request, "x", 0, lo=0)
        y = _int(request, "y", lo=0) if "y" in request.query_params else None       # default: the map's centre
        x, _ = await image_of(request, model, dataset)
        return JSONResponse(await ex.compute(compute.unit_optimum, model, x, layer, c, y, xx))

    async def examples(request):
        model, _, dataset = ex.model_for(request)
        source = {"test": "model"}.get(request.query_params.get("source"), request.query_params.get("source", "model"))
        if source not in ("model", "shapes"):
            raise ApiError(400, f"source must be 'model' (or 'test') or 'shapes', received {source!r}")
        n = min(_int(request, "n", 12, lo=1), 64)
        x, y, names, used, note = await ex.compute(ex.examples, model, dataset, source, n)
        return JSONResponse({"source": used, "split": "test", "note": note, "examples": [
            {"label": int(t), "class_name": names[t] if t < len(names) else str(t), "png": png_base64(img)}
            for img, t in zip(x, y)]})

    async def filters(request):
        name = request.query_params.get("run")
        if name and ex.weights_of(name) is None:          # a new run before its first save: nothing yet
            return JSONResponse({"layer": None, "kernel": None, "message": f"run {name!r} has no saved weights yet"})
        model, _, _ = ex.model_for(request)
        layer = compute.first_conv(model)
        return JSONResponse({"layer": layer.name, "kernel": compute.pack(layer.params["kernel"], "base64")})

    async def filters_added(request):
        """What training added to the first convolution of ``?run=NAME``: its kernel now minus its first
        snapshot (the run keeps snapshots when started with ``snapshot_filters``), and each filter's
        relative change ``||k - k0|| / ||k0||`` (``cnnlab explain features``'s measure)."""
        name = request.query_params.get("run")
        if not name:
            raise ApiError(400, "missing query parameter 'run'")
        path = ex.jobs.run_dir(name) / runs.FILTERS_FILE
        if not path.is_file():
            raise ApiError(404, f"run {name!r} kept no filter snapshots (start it with snapshot_filters)")
        snapshots = runs.read_filter_snapshots(path)
        step0 = min(snapshots)
        model, _, _ = ex.model_for(request)
        layer = compute.first_conv(model)
        k0, k = snapshots[step0], np.asarray(layer.params["kernel"])
        if k0.shape != k.shape:
            raise ApiError(409, f"run {name!r}: the snapshots hold kernels {k0.shape}, the model {k.shape}")
        from ..analysis.filters import filter_change
        return JSONResponse({"layer": layer.name, "initial_step": step0, "added": compute.pack(k - k0, "base64"),
                             "relative_change": filter_change({0: k0, 1: k})["per_filter"][-1].tolist()})

    async def why_filters(request):
        model, _, dataset = ex.model_for(request)
        x, *_ = await ex.compute(ex.examples, model, dataset, "model", 256)
        out = await ex.compute(compute.filters_view, model, x, _int(request, "k", 4, lo=1))
        out["examples"] = len(x)
        return JSONResponse(out)

    async def why_saliency(request):
        model, _, dataset = ex.model_for(request)
        k = request.query_params.get("class")
        k = None if k in (None, "") else _int(request, "class", lo=0)
        x, _ = await image_of(request, model, dataset)
        return JSONResponse(await ex.compute(compute.saliency_view, model, x, k))

    async def why_shift(request):
        model, _, dataset = ex.model_for(request)
        dy, dx = _int(request, "dy", 0), _int(request, "dx", 0)
        x, _ = await image_of(request, model, dataset)
        return JSONResponse(await ex.compute(compute.shift_view, model, x, dy, dx))

    async def lesson_outline(request):
        from ..analysis import lesson
        try:
            model, _, dataset = ex.model_for(request)
        except ApiError as e:                          # a new run before its first save: the outline alone
            return JSONResponse({"steps": lesson.outline(), "companions": None, "message": e.message})
        companions = await run_in_threadpool(ex.companions, model, dataset, ex.run_dir_of(request))
        return JSONResponse({"steps": lesson.outline(), "companions": companions.status()})

    async def lesson_step(request):
        model, names, dataset = ex.model_for(request)
        n = request.path_params["n"]
        if not n.isdigit():
            raise ApiError(404, f"no lesson step {n!r}: steps are numbered from 1")
        x, _ = await image_of(request, model, dataset)
        return JSONResponse(await ex.compute(ex.lesson_step, model, names, dataset, x, int(n), ex.run_dir_of(request)))

    async def lesson_try(request):
        from ..analysis.lesson import tryit
        model, _, dataset = ex.model_for(request)
        q, d = request.query_params, tryit.DEFAULTS
        options = {"kernel": q.get("kernel") or d["kernel"], "padding": q.get("padding") or d["padding"],
                   **{k: _int(request, k, d[k]) for k in ("size", "stride", "dilation", "pool")}}
        if q.get("values"):
            options["values"] = tryit.parse_values(q["values"])
        x, _ = await image_of(request, model, dataset)
        return JSONResponse(compute.jsonable(await ex.compute(tryit.try_kernel, model, x, **options)))

    async def choices(request):
        return JSONResponse(await run_in_threadpool(ex.choices))

    async def list_runs(request):
        return JSONResponse({"root": str(ex.jobs.root), "runs": ex.jobs.list_runs(),
                             "jobs": [j.summary() for j in ex.jobs.jobs.values()]})

    async def start_run(request):
        body = await read_json_body(request)
        job = await run_in_threadpool(ex.jobs.start, body)
        return JSONResponse({"id": job.id, "run": job.run_dir.name, "status": job.status}, status_code=201)

    async def get_run(request):
        run_dir = ex.jobs.run_dir(request.path_params["name"])
        events, status = run_events(run_dir)
        job = ex.jobs.jobs.get(run_dir.name)
        try:
            config = runs.read_config(run_dir)
        except (OSError, ValueError) as e:
            config = {"error": str(e)}
        return JSONResponse({"name": run_dir.name, "status": status, "config": config, "epochs": events,
                             "job": job.summary() if job else None})

    async def stop_run(request):
        job = ex.jobs.stop(request.path_params["name"])
        return JSONResponse(job.summary())

    async def run_stream(request):
        name = request.path_params["name"]
        job = ex.jobs.jobs.get(name)
        run_dir = job.run_dir if job else ex.jobs.run_dir(name)
        raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "0"
        last = int(raw) if raw.isdigit() else 0

        def frame(event):
            return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"

        async def stream():
            nonlocal last
            yield "retry: 1000\n\n"
            idle = 0.0
            while True:
                if ex.closing.is_set():          # the server stops: a last event (without an id, so that
                    message = {"type": "shutdown", "message": "the server is stopping"}  # a reconnect resumes)
                    yield f"event: shutdown\ndata: {json.dumps(message)}\n\n"
                    return
                if job is not None:
                    events, done = job.since(last), False
                    for e in events:
                        done = done or e["type"] == "end"
                else:
                    events, status = await run_in_threadpool(run_events, run_dir, last)
                    done = status not in (None, "running")
                    if done:
                        events.append({"type": "end", "id": (events[-1]["id"] if events else last) + 1,
                                       "status": status})
                for e in events:
                    last = e["id"]
                    yield frame(e)
                if done:
                    return
                await asyncio.sleep(0.2 if job is not None else 0.5)
                idle = 0.0 if events else idle + 0.5
                if idle >= 15:
                    idle = 0.0
                    yield ": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def api(handler):
        """Known failures become JSON errors with the right status."""
        async def wrapped(request):
            try:
                return await handler(request)
            except ApiError as e:
                return _error(e.status, e.message, **e.extra)
            except JobError as e:
                return _error(e.status, str(e), **e.extra)
            except (CnnlabFileError, ValueError) as e:
                return _error(400, str(e))
        return wrapped

    async def no_icon(request):
        return Response(status_code=204)

    routes = [
        Route("/", index),
        Route("/favicon.ico", no_icon),
        Route("/api/model", api(get_model)),
        Route("/api/predict", api(predict), methods=["POST"]),
        Route("/api/unit", api(unit), methods=["POST"]),
        Route("/api/unit/optimum", api(unit_optimum), methods=["POST"]),
        Route("/api/examples", api(examples)),
        Route("/api/filters", api(filters)),
        Route("/api/filters/added", api(filters_added)),
        Route("/api/why/filters", api(why_filters)),
        Route("/api/why/saliency", api(why_saliency), methods=["POST"]),
        Route("/api/why/shift", api(why_shift), methods=["POST"]),
        Route("/api/lesson", api(lesson_outline)),
        Route("/api/lesson/try", api(lesson_try), methods=["POST"]),
        Route("/api/lesson/{n}", api(lesson_step), methods=["POST"]),
        Route("/api/choices", api(choices)),
        Route("/api/runs", api(list_runs), methods=["GET"]),
        Route("/api/runs", api(start_run), methods=["POST"]),
        Route("/api/runs/{name}", api(get_run)),
        Route("/api/runs/{name}/events", api(run_stream)),
        Route("/api/runs/{name}/stop", api(stop_run), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def http_error(request, exc):
        return _error(exc.status_code, exc.detail if isinstance(exc.detail, str) else "error")

    async def server_error(request, exc):
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        ex.closing.set()
        await run_in_threadpool(ex.jobs.shutdown)     # each job stops after its batch; no process left

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error},
                    lifespan=lifespan)
    app.state.explorer = ex
    return Guard(app, allowed_hosts, secret)
