"""Training jobs started from the explorer, each in its own process, and progress events for any run.

A job is ``cnnlab.runs.run_training`` in a child process (``multiprocessing``,
"spawn": a fresh interpreter, so the server's threads are not copied), writing
an ordinary run directory: ``cnnlab train --resume`` continues it and ``cnnlab
report`` reports it. The child sends events through a queue::

    {"type": "start", "run": NAME, "epochs": E, ...}
    {"type": "batch", "epoch": e, "step": s, "loss": l}     every batch for the first EVERY_BATCH, then
                                                            at most one every BATCH_EVERY seconds
    {"type": "epoch", "epoch": e, "loss": ..., "accuracy": ..., "val_accuracy": ...}   after the checkpoint
    {"type": "end", "status": "completed" | "stopped" | "failed", "epoch": last saved epoch, "message": ...}

A thread in the server appends them to the job's list, numbering them from 1;
a watcher asks for the events after the last one it has seen (server-sent
events' ``Last-Event-ID``), so a reconnect resumes where it left off. Stopping
a job sets an event the child checks after every batch; training then ends as
Ctrl-C does, keeping the checkpoint of the last completed epoch. A child that
dies without saying why (killed, out of memory) is reported from its exit code
and the epoch in its ``state.json``.

Runs written by another process (``cnnlab train`` in a terminal) have no queue:
:func:`run_events` reads their ``history.json`` and ``state.json`` instead.
"""
from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import re
import threading
import time
from pathlib import Path

from .. import runs
from ..runs.files import existing_run_files

EVERY_BATCH = 200          # the first batches of a job each send an event (a short run still draws a curve),
BATCH_EVERY = 0.1          # then at most one every BATCH_EVERY seconds
# What a page may set when it starts a job (everything else keeps ``cnnlab train``'s defaults).
JOB_OPTIONS = ("dataset", "model", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
               "schedule", "augment", "seed", "val_split", "label_smoothing", "loss", "limit", "workers",
               "dataset_options", "snapshot_filters")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class JobError(ValueError):
    """A job request that cannot be honoured; ``status`` is the HTTP status that says why."""

    def __init__(self, message, status=400, **extra):
        super().__init__(message)
        self.status, self.extra = status, extra


# ---------------------------------------------------------------------------
# The child process
# ---------------------------------------------------------------------------
def _child(config, out_dir, resume, events, stop):
    """Train (or resume) in this process; every outcome ends with one ``end`` event."""
    from ..training import Callback

    class Progress(Callback):
        last, sent = 0.0, 0

        def on_batch_end(self, trainer, step, loss):
            if stop.is_set():
                raise KeyboardInterrupt                 # ends training as Ctrl-C does: last epoch kept
            now = time.monotonic()
            if self.sent < EVERY_BATCH or now - self.last >= BATCH_EVERY:
                self.last, self.sent = now, self.sent + 1
                events.put({"type": "batch", "epoch": trainer.epoch + 1, "step": int(step), "loss": float(loss)})

        def on_epoch_end(self, trainer, epoch, logs):
            events.put({"type": "epoch", "epoch": int(trainer.epoch), "step": int(trainer.step),
                        **{k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}})

    events.put({"type": "start", "run": Path(out_dir).name, "epochs": config["epochs"], "resume": resume})
    try:
        result = runs.run_training(config, out_dir, resume=resume, verbose=0, callbacks=[Progress()])
        events.put({"type": "end", "status": "completed", "epoch": int(result["epochs"]),
                    "test": result["test"], "message": result["stop_reason"] or "training completed"})
    except runs.TrainingInterrupted as e:
        events.put({"type": "end", "status": "stopped", "epoch": e.epoch,
                    "message": f"stopped; {out_dir} keeps the checkpoint of epoch {e.epoch}"})
    except BaseException as e:                         # noqa: BLE001 - reported to the page, never lost
        events.put({"type": "end", "status": "failed", "epoch": _saved_epoch(out_dir),
                    "message": f"{type(e).__name__}: {e}"})


def _saved_epoch(run_dir):
    try:
        return int(runs.read_state(run_dir)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


# ---------------------------------------------------------------------------
# Jobs in the server
# ---------------------------------------------------------------------------
class Job:
    def __init__(self, name, run_dir, process, events, stop):
        self.id, self.run_dir, self.process, self.queue, self.stop_event = name, Path(run_dir), process, events, stop
        self.events: list[dict] = []
        self.status = "running"
        self.started = time.time()
        self.lock = threading.Lock()

    def add(self, event):
        with self.lock:
            event = {**event, "id": len(self.events) + 1}
            self.events.append(event)
            if event["type"] == "end":
                self.status = event["status"]

    def since(self, last_id: int) -> list[dict]:
        with self.lock:
            return self.events[max(0, int(last_id)):]

    def summary(self) -> dict:
        last = next((e for e in reversed(self.events) if e["type"] in ("epoch", "end")), None)
        return {"id": self.id, "run": self.run_dir.name, "status": self.status, "started": self.started,
                "epoch": last["epoch"] if last else 0, "events": len(self.events),
                "message": last.get("message") if last and last["type"] == "end" else None}


class JobManager:
    """Starts, lists and stops training jobs writing run directories under ``runs_root``."""

    def __init__(self, runs_root, max_jobs=1, data_dir=None):
        self.root = Path(runs_root)
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.max_jobs = int(max_jobs)
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.ctx = mp.get_context("spawn")

    def running(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.status == "running"]

    def run_dir(self, name) -> Path:
        """The run directory called ``name`` directly under the runs folder (nothing else is served)."""
        if not isinstance(name, str) or not NAME.match(name):
            raise JobError(f"no run named {name!r}", 404)
        path = self.root / name
        if not path.is_dir() or not existing_run_files(path):
            raise JobError(f"no run named {name!r} in {self.root}", 404)
        return path

    def inside(self, value, what) -> str:
        """``value`` as a path inside ``--data-dir`` or ``--runs`` (resolved, links followed), else 400."""
        roots = [r.resolve() for r in (self.data_dir, self.root) if r is not None]
        path = Path(str(value)).expanduser()
        for root in roots:
            candidate = (path if path.is_absolute() else root / path).resolve()
            if candidate.is_relative_to(root) and candidate.exists():
                return str(candidate)
        raise JobError(f"{what} {value!r} refused: a job's {what} is a built-in name or a folder inside "
                       f"--data-dir or --runs ({', '.join(map(str, roots))})")

    def check_sources(self, options) -> dict:
        """A job reads only what the server serves: the dataset is a built-in name or a folder inside
        ``--data-dir`` or ``--runs``, the model a zoo name or an architecture file inside them; named
        datasets are looked up in ``--data-dir`` (as ``cnnlab train --data-dir``)."""
        from ..datasets import DATASETS
        from ..models import ZOO
        out = dict(options)
        name = out.get("dataset")
        if not isinstance(name, str) or not name:
            raise JobError(f"dataset must be a name or a folder, received {name!r}")
        if name.lower().replace("_", "-") not in DATASETS:
            out["dataset"] = self.inside(name, "dataset")
        model = out.get("model")
        if isinstance(model, str) and model.strip().lower().replace("-", "_") not in ZOO:
            out["model"] = self.inside(model, "model")
        if self.data_dir is not None:
            out["data_dir"] = str(self.data_dir)
        return out

    def list_runs(self) -> list[dict]:
        out = []
        if self.root.is_dir():
            for path in sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
                if not (path.is_dir() and NAME.match(path.name) and (path / runs.STATE_FILE).exists()):
                    continue
                info = {"name": path.name, "status": None, "epoch": None, "epochs": None, "dataset": None, "model": None}
                try:
                    state = runs.read_state(path)
                    info.update(status=state.get("status"), epoch=state["epoch"])
                    config = runs.read_config(path)
                    info.update(epochs=config["epochs"], dataset=config["dataset"], model=str(config["model"]))
                except (OSError, ValueError):
                    info["status"] = "unreadable"
                if path.name in self.jobs:
                    info["job"] = self.jobs[path.name].summary()
                out.append(info)
        return out

    def start(self, body) -> Job:
        """Validate ``body`` (JSON object), start the job, return it. ``{"resume": NAME, "epochs": E}``
        continues a run; otherwise the options are those of ``cnnlab train``."""
        if not isinstance(body, dict):
            raise JobError(f"expected a JSON object with the training options, received {type(body).__name__}")
        with self.lock:
            busy = self.running()
            if len(busy) >= self.max_jobs:
                raise JobError(f"a training job is running already ({busy[0].id}); stop it or wait for it",
                               409, running=busy[0].id)
            if body.get("resume") is not None:
                out = self.run_dir(body["resume"])
                unknown = sorted(set(body) - {"resume", "epochs"})
                if unknown:
                    raise JobError(f"a resumed run keeps its settings; only 'epochs' may be given, received {unknown}")
                config = self.check_sources(runs.read_config(out))
                if body.get("epochs") is not None:
                    config["epochs"] = body["epochs"]
                config = runs.validate_config(config)
                resume = True
            else:
                unknown = sorted(set(body) - set(JOB_OPTIONS))
                if unknown:
                    raise JobError(f"unknown training options {unknown}; known: {list(JOB_OPTIONS)}")
                options = {"dataset": "shapes", "model": "tiny_cnn", "epochs": 3, "workers": 1,
                           "dataset_options": {"n_train": 3000, "n_test": 500}
                           if body.get("dataset", "shapes") == "shapes" else {}, **body}
                options = self.check_sources(options)
                try:
                    config = runs.make_config(**options)
                except (TypeError, ValueError) as e:
                    raise JobError(f"invalid training options: {e}") from None
                out = runs.new_run_dir(self.root, config["dataset"], config["model"], taken=self.jobs)
                resume = False
            events, stop = self.ctx.Queue(), self.ctx.Event()
            process = self.ctx.Process(target=_child, args=(config, str(out), resume, events, stop), daemon=True)
            process.start()
            job = Job(out.name, out, process, events, stop)
            self.jobs[job.id] = job
        threading.Thread(target=self._pump, args=(job,), daemon=True, name=f"job-{job.id}").start()
        return job

    def _pump(self, job):
        """Move the child's events into the job until it ends; report a silent death."""
        while True:
            try:
                event = job.queue.get(timeout=0.2)
            except queue_mod.Empty:
                if job.process.is_alive():
                    continue
                try:                                   # the last events may still be in the pipe
                    event = job.queue.get(timeout=0.5)
                except queue_mod.Empty:
                    job.add({"type": "end", "status": "failed", "epoch": _saved_epoch(job.run_dir),
                             "message": f"the training process exited with code {job.process.exitcode} "
                                        f"without finishing; {job.run_dir} keeps its last completed epoch"})
                    return
            job.add(event)
            if event["type"] == "end":
                job.process.join(timeout=10)
                return

    def get(self, job_id) -> Job:
        if job_id not in self.jobs:
            raise JobError(f"no job {job_id!r}; jobs: {sorted(self.jobs) or 'none'}", 404)
        return self.jobs[job_id]

    def stop(self, job_id) -> Job:
        job = self.get(job_id)
        if job.status == "running":
            job.stop_event.set()
        return job

    def shutdown(self, grace=5.0) -> list[Job]:
        """Stop every running job and wait for its process; return the jobs that were running.

        A job is asked to stop after its current batch (its run keeps the checkpoint of its last
        completed epoch); a process still alive after ``grace`` seconds is terminated, then killed,
        so no training process outlives the server.
        """
        stopped = self.running()
        for job in stopped:
            job.stop_event.set()
        deadline = time.monotonic() + grace
        for job in list(self.jobs.values()):
            job.process.join(max(0.0, deadline - time.monotonic()))
            for end in (job.process.terminate, job.process.kill):
                if job.process.is_alive():
                    end()
                    job.process.join(2.0)
        return stopped


# ---------------------------------------------------------------------------
# Runs written by any process
# ---------------------------------------------------------------------------
def run_events(run_dir, after_epoch=0) -> tuple[list[dict], str | None]:
    """Epoch events of a run directory after ``after_epoch`` (read from ``history.json``) and its status.

    Event ids are epoch numbers, so a reconnect resumes after the last epoch seen.
    """
    run_dir = Path(run_dir)
    try:
        status = runs.read_state(run_dir).get("status")
    except (OSError, ValueError):
        status = None
    try:
        table = runs.read_history(run_dir, missing_ok=True)
    except (OSError, ValueError):           # being replaced this instant, or damaged: no events this time
        return [], status
    if not table:
        return [], status
    n = len(table.get("epoch", []))
    events = []
    for i in range(n):
        row = {k: v[i] for k, v in table.items() if isinstance(v, list) and i < len(v)}
        epoch = int(row.get("epoch", i + 1))
        if epoch > after_epoch:
            events.append({"type": "epoch", "id": epoch, **row, "epoch": epoch})
    return events, status
