"""The explorer's web application: Starlette routes over :mod:`.compute` and :mod:`.jobs`.

Routes (all answers JSON except the page, the static files and the event stream)::

    GET  /                                  the page (static/index.html)
    GET  /static/...                        the page's scripts and styles (package data only)
    GET  /api/model[?run=NAME]              input_shape, class_names, layers [{name, class, kind, output_shape, ...}]
    POST /api/predict[?activations=1|base64][&run=NAME]      body: PNG/JPEG bytes -> probabilities, softmax
    POST /api/unit?layer=L&channel=C&y=Y&x=X[&run=NAME]      body: image -> the numbers behind one unit
    GET  /api/examples?source=shapes|test&n=N               example images (PNG, base64) with labels
    GET  /api/filters[?run=NAME]            the first convolution's kernels (live training view)
    GET  /api/filters/added?run=NAME        that kernel minus its first snapshot: what training added
    GET  /api/why/filters[?run=NAME]        first-layer filters with their most activating patches
    POST /api/why/saliency[?class=K]        body: image -> gradient saliency and Grad-CAM
    POST /api/why/shift?dy=DY&dx=DX         body: image -> shifted image, conv maps, pooled features
    GET  /api/runs                          run directories under the runs folder, and jobs
    POST /api/runs                          JSON training options -> a job in its own process (409 if busy)
    GET  /api/runs/NAME                     a run's config, state and history
    GET  /api/runs/NAME/events              server-sent events: batch, epoch, end (Last-Event-ID resumes)
    POST /api/runs/NAME/stop                stop a job (it keeps its last completed epoch)

Safety: requests whose ``Host`` is not one of the served names get 403 (DNS
rebinding); bodies over ``max_upload`` bytes get 413; decompression bombs get
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
import functools
import io
import json
import threading
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
from .jobs import JobError, JobManager, run_events

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD = 4 * 1024 * 1024            # bytes of an uploaded image
MAX_JSON = 64 * 1024                    # bytes of a JSON request


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
    data = await read_body(request, MAX_JSON)
    try:
        return json.loads(data.decode("utf-8")) if data.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON: {e}") from None


def decode_image(data: bytes, shape, dataset=None) -> tuple[np.ndarray, list]:
    """The bytes of an image file -> (float32 (H, W, C) in [0, 1] for a model taking ``shape``, notes).

    Read and prepared by cnnlab's one image reader, as ``cnnlab predict`` and ``cnnlab explain``
    do (:func:`cnnlab.images.prepare_input`): the header's size checked before any pixel is
    decoded (decompression bombs: 413), alpha on white, the light-background rule, MNIST's
    size normalization for MNIST-style models. ``dataset`` is the model's training configuration
    when known; the notes say in a sentence each what was done to the picture.
    """
    if not data:
        raise ApiError(400, "the body is empty: send the bytes of a PNG or JPEG image")
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise ApiError(400, f"this model takes inputs of shape {tuple(shape)}, not (H, W, 1) or (H, W, 3) images")
    name = dataset.get("dataset") if isinstance(dataset, dict) else None
    try:
        return images.prepare_input(data, tuple(shape), dataset=name, name="the uploaded image")
    except CnnlabFileError as e:
        raise ApiError(413 if "decompression bomb" in str(e) else 400, str(e)) from None


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
    """A float (H, W, C) image in [0, 1] as base64 PNG."""
    from PIL import Image
    a = (np.clip(np.asarray(img), 0, 1) * 255).round().astype(np.uint8)
    a = a[..., 0] if a.shape[-1] == 1 else a
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------
# The served model, run models and examples
# ---------------------------------------------------------------------------
class Explorer:
    """What the routes share: the served model, models of served runs, examples, jobs, one compute lock.

    Layers keep what their forward pass needs for backward, so one computation runs at a time.
    """

    def __init__(self, model, class_names=None, runs_root="runs", dataset=None, max_jobs=1,
                 max_upload=MAX_UPLOAD):
        self.model, self.dataset = model, dataset
        self.class_names = compute.describe(model, class_names)["class_names"]
        self.jobs = JobManager(runs_root, max_jobs=max_jobs)
        self.max_upload = int(max_upload)
        self.lock = threading.Lock()
        self._run_models: dict[str, tuple] = {}
        self._examples: dict[tuple, tuple] = {}

    def model_for(self, request):
        """``(model, class_names, dataset)``: the run's latest weights with ``?run=NAME``, else the served model."""
        name = request.query_params.get("run")
        if not name:
            return self.model, self.class_names, self.dataset
        run_dir = self.jobs.run_dir(name)
        path = run_dir / runs.LAST_FILE
        path = path if path.is_file() else run_dir / runs.MODEL_FILE
        if not path.is_file():
            raise ApiError(409, f"run {name!r} has no saved model yet")
        key = path.stat().st_mtime_ns
        cached = self._run_models.get(name)
        if cached is None or cached[0] != key:
            from ..model import load
            model = load(path)
            config = runs.read_config(run_dir)
            names = (config.get("data") or {}).get("class_names")
            cached = (key, model, compute.describe(model, names)["class_names"], config)
            self._run_models[name] = cached
        return cached[1], cached[2], cached[3]

    def examples(self, model, dataset, source="shapes", n=12):
        """``(x, y, class_names, source)``: ``n`` test images for ``model``'s input; ``source="test"``
        takes the run's own test set when it is on disk (never downloaded), else ``shapes``."""
        shape = tuple(model.input_shape)
        if len(shape) != 3 or shape[2] not in (1, 3):
            raise ApiError(400, f"this model takes inputs of shape {shape}, not images")
        key = (shape, source, json.dumps(dataset, sort_keys=True, default=str))
        if key not in self._examples:
            self._examples[key] = _load_examples(shape, dataset if source == "test" else None)
        x, y, names, used = self._examples[key]
        return x[:n], y[:n], names, used

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


def _load_examples(shape, config, n=256):
    """Test images resized to ``shape``: the run's dataset when readable without a download, else shapes."""
    from PIL import Image
    from ..datasets import DATASETS, SHAPES_CLASSES, load_dataset, load_shapes
    if config:
        name = str(config.get("dataset", ""))
        key = name.lower().replace("_", "-")
        try:
            if key in DATASETS and key != "shapes":
                loader, names = DATASETS[key]
                _, (xt, yt) = loader(config.get("data_dir"), download=False)
            else:
                _, (xt, yt), info = load_dataset(name, config.get("data_dir"), **(config.get("dataset_options") or {}))
                names = info["class_names"]
            if tuple(xt.shape[1:]) == shape:
                return xt[:n], yt[:n], list(names), key
        except (OSError, ValueError):
            pass                                     # not on disk: shapes instead
    h, w, c = shape
    (_, _), (xt, yt) = load_shapes(1, n, image_size=max(12, h, w), seed=1)
    if xt.shape[1:3] != (h, w):
        xt = np.stack([np.asarray(Image.fromarray(img[..., 0]).resize((w, h), Image.Resampling.BOX))
                       for img in xt])[..., None]
    return np.repeat(xt, c, axis=3).astype(np.float32), yt, list(SHAPES_CLASSES), "shapes"


# ---------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------
def create_app(model, class_names=None, runs_root="runs", allowed_hosts=("127.0.0.1", "localhost"), dataset=None,
               max_jobs=1, max_upload=MAX_UPLOAD) -> Starlette:
    """The application for ``model``. ``allowed_hosts``: the names the ``Host`` header may carry
    (``None``: any); ``dataset``: the served model's training configuration (for its test images)."""
    ex = Explorer(model, class_names, runs_root, dataset, max_jobs, max_upload)

    async def index(request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def get_model(request):
        model, names, _ = ex.model_for(request)
        return JSONResponse(compute.describe(model, names))

    async def image_of(request, model, dataset):
        """The request's picture prepared for ``model``, and the notes saying how."""
        return decode_image(await read_body(request, ex.max_upload), model.input_shape, dataset)

    async def predict(request):
        model, names, dataset = ex.model_for(request)
        x, notes = await image_of(request, model, dataset)
        fmt = request.query_params.get("activations")
        fmt = {None: None, "": None, "0": None, "1": "list", "list": "list", "base64": "base64"}.get(fmt, "bad")
        if fmt == "bad":
            raise ApiError(400, f"activations must be 1, list or base64, received {request.query_params['activations']!r}")
        out = await ex.compute(compute.predict, model, x, fmt, names)
        out["notes"] = notes
        return JSONResponse(out)

    async def unit(request):
        model, _, dataset = ex.model_for(request)
        layer = request.query_params.get("layer")
        if not layer:
            raise ApiError(400, "missing query parameter 'layer'")
        try:
            model[layer]
        except KeyError as e:
            raise ApiError(404, str(e.args[0])) from None
        c, y, xx = _int(request, "channel", lo=0), _int(request, "y", 0, lo=0), _int(request, "x", 0, lo=0)
        x, _ = await image_of(request, model, dataset)
        return JSONResponse(await ex.compute(compute.unit_detail, model, x, layer, c, y, xx))

    async def examples(request):
        model, _, dataset = ex.model_for(request)
        source = request.query_params.get("source", "shapes")
        if source not in ("shapes", "test"):
            raise ApiError(400, f"source must be 'shapes' or 'test', received {source!r}")
        n = min(_int(request, "n", 12, lo=1), 64)
        x, y, names, used = await ex.compute(ex.examples, model, dataset, source, n)
        return JSONResponse({"source": used, "examples": [
            {"label": int(t), "class_name": names[t] if t < len(names) else str(t), "png": png_base64(img)}
            for img, t in zip(x, y)]})

    async def filters(request):
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
        from ..explain.features import filter_change
        return JSONResponse({"layer": layer.name, "initial_step": step0, "added": compute.pack(k - k0, "base64"),
                             "relative_change": filter_change({0: k0, 1: k})["per_filter"][-1].tolist()})

    async def why_filters(request):
        model, _, dataset = ex.model_for(request)
        x, _, _, _ = await ex.compute(ex.examples, model, dataset, "test", 256)
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
        Route("/api/examples", api(examples)),
        Route("/api/filters", api(filters)),
        Route("/api/filters/added", api(filters_added)),
        Route("/api/why/filters", api(why_filters)),
        Route("/api/why/saliency", api(why_saliency), methods=["POST"]),
        Route("/api/why/shift", api(why_shift), methods=["POST"]),
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
        ex.jobs.shutdown()                       # running jobs stop at their next batch, keeping their last epoch

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error},
                    lifespan=lifespan)
    app.state.explorer = ex
    return HostCheck(app, allowed_hosts) if allowed_hosts is not None else app


class HostCheck:
    """ASGI middleware: refuse (403, JSON) requests whose ``Host`` header names another host.

    A page on another site can make the browser resolve its own name to 127.0.0.1 (DNS
    rebinding); its requests then carry that name in ``Host``, and are refused here.
    """

    def __init__(self, app, allowed_hosts):
        self.app = app
        self.allowed = {h.lower() for h in allowed_hosts}

    def __getattr__(self, name):                  # ``app.state`` and friends reach the wrapped application
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.allowed:
                response = _error(403, f"refused: the Host header {host!r} is not a served name "
                                       f"({', '.join(sorted(self.allowed))})")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
