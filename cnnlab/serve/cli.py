"""``cnnlab serve [MODEL_OR_RUN] [--port P] [--host H] [--open]``: the explorer in the browser.

MODEL_OR_RUN is a run directory, a ``.safetensors`` model, an ``.onnx`` file or a zoo name
(untrained). Without one, the default subject (:mod:`cnnlab.analysis.subject`:
the zoo's ``tiny_cnn`` on MNIST when its files are at hand, else on the built-in
``shapes``) is trained once, kept as the run ``RUNS/<dataset>-default-subject``
and reused next time, so the explorer works offline.

Ctrl-C or SIGTERM stops the server within a few seconds: open event streams end with a
``shutdown`` event, requests get ``GRACE`` seconds to finish, and a running training job
is stopped after its current batch (its run keeps the checkpoint of its last completed
epoch; ``cnnlab train --resume`` continues it); no process is left behind.

Starlette and uvicorn come with the ``serve`` extra and are imported only when
the command runs; without them the command says what to install.
"""
from __future__ import annotations

import ipaddress
import signal
import sys
from pathlib import Path

GRACE = 3                  # seconds a request may take to finish once the server is asked to stop
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def _require_extra():
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ValueError(f"cnnlab serve needs Starlette and uvicorn ({e.name} is missing): "
                         f'pip install "cnnlab[serve]"') from None


def resolve_model(spec, runs_root: Path, log=print, data_dir=None, run_dir=False):
    """``(model, class_names, training_config)`` for MODEL_OR_RUN (``None``: the default subject), and its
    run directory (``None`` when it is not a run) after them with ``run_dir=True``."""
    from .. import runs
    from ..analysis.subject import default_subject_run
    if spec is None:
        spec = default_subject_run(runs_root, data_dir, log=lambda msg: log(f"cnnlab serve: {msg}"))
    resolved = runs.resolve_model(spec)
    if run_dir:
        return resolved.model, resolved.class_names, resolved.config, resolved.run_dir
    return resolved.model, resolved.class_names, resolved.config


def allowed_hosts(host: str):
    """The names the ``Host`` header may carry: the bound host, and the loopback names for a loopback bind;
    ``None`` (any) for a wildcard bind."""
    if host in ("0.0.0.0", "::", ""):
        return None
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    names = {host.lower(), f"[{host}]" if ":" in host and not host.startswith("[") else host.lower()}
    return tuple(sorted(names | (set(LOOPBACK_NAMES) if loopback else set())))


def run(args) -> int:
    _require_extra()
    import uvicorn
    from .app import create_app
    runs_root = Path(args.runs)
    model, class_names, config, run_dir = resolve_model(args.model, runs_root, data_dir=args.data_dir, run_dir=True)
    hosts = allowed_hosts(args.host)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"cnnlab serve: warning: listening on {args.host}: other machines can reach this server"
              + ("" if hosts else " and the Host header is not checked"), file=sys.stderr)
    app = create_app(model, class_names, runs_root=runs_root, allowed_hosts=hosts, dataset=config,
                     max_jobs=args.max_jobs, data_dir=args.data_dir, run_dir=run_dir)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else shown}:{args.port}/"
    explorer, running = app.state.explorer, []

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            """Say where the page is once the socket listens (a client that reads the line can connect)."""
            await super().startup(sockets=sockets)
            if self.started:
                print(f"cnnlab serve: {model.name} ({model.num_params:,} parameters) at {url}  (Ctrl-C stops)",
                      flush=True)
                if args.open:
                    import webbrowser
                    webbrowser.open(url)

        def handle_exit(self, sig, frame):
            """Ctrl-C or SIGTERM: event streams end at once, the server stops and the command returns 0
            (the signal is not raised again after shutdown, as uvicorn does); a second Ctrl-C forces it."""
            if not explorer.closing.is_set():
                running.extend(explorer.jobs.running())
                explorer.closing.set()
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                          timeout_graceful_shutdown=GRACE)).run()
    for job in running:
        print(f"cnnlab serve: stopped; the training job {job.id} was stopped, and {job.run_dir} keeps the "
              f"checkpoint of its last completed epoch (cnnlab train --resume {job.run_dir} continues it)", flush=True)
    if not running:
        print("cnnlab serve: stopped", flush=True)
    return 0


def add_parser(subparsers):
    p = subparsers.add_parser(
        "serve", help="explore a model in the browser: draw, see every layer, click a unit, train live",
        description="Start a local web server that shows a model's layers, feature maps and numbers, and "
                    "trains models live. Without MODEL_OR_RUN it trains the default subject once (tiny_cnn on MNIST "
                    "when at hand, else on the built-in shapes) and reuses it.")
    p.add_argument("model", nargs="?", metavar="MODEL_OR_RUN",
                   help="a run directory, a .safetensors model, an .onnx file or a zoo name (default: the default subject)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; anything else warns)")
    p.add_argument("--open", action="store_true", help="open the page in the browser")
    p.add_argument("--runs", default="runs", help="folder of run directories to serve and write (default runs)")
    p.add_argument("--max-jobs", type=int, default=1, help="training jobs at a time (default 1)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where the named datasets are stored, as for cnnlab train: the examples come from the "
                        "model's own test images, and the training form offers the datasets found")
    p.set_defaults(func=run)
    return p


def register(subparsers):
    return add_parser(subparsers)
