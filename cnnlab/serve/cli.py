"""``cnnlab serve [MODEL_OR_RUN] [--port P] [--host H] [--open]``: the explorer in the browser.

MODEL_OR_RUN is a run directory, a ``.safetensors`` model or a zoo name
(untrained). Without one, the default subject (:mod:`cnnlab.analysis.subject`:
the zoo's ``tiny_cnn`` on MNIST when its files are at hand, else on the built-in
``shapes``) is trained once, kept as the run ``RUNS/<dataset>-default-subject``
and reused next time, so the explorer works offline.

Starlette and uvicorn come with the ``serve`` extra and are imported only when
the command runs; without them the command says what to install.
"""
from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def _require_extra():
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ValueError(f"cnnlab serve needs Starlette and uvicorn ({e.name} is missing): "
                         f'pip install "cnnlab[serve]"') from None


def resolve_model(spec, runs_root: Path, log=print):
    """``(model, class_names, training_config)`` for MODEL_OR_RUN (``None``: the default subject)."""
    from .. import runs
    from ..analysis.subject import default_subject_run
    from ..model import load
    if spec is None:
        spec = default_subject_run(runs_root, log=lambda msg: log(f"cnnlab serve: {msg}"))
    path = Path(spec)
    if path.is_dir() or path.suffix.lower() == ".safetensors":
        model = load(path)
        run_dir = runs.find_run_dir(path)
        if run_dir is not None:
            config = runs.read_config(run_dir)
            return model, (config.get("data") or {}).get("class_names"), config
        return model, None, None
    from .. import models as zoo
    return zoo.get(spec)(), None, None


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
    model, class_names, config = resolve_model(args.model, runs_root)
    hosts = allowed_hosts(args.host)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"cnnlab serve: warning: listening on {args.host}: other machines can reach this server"
              + ("" if hosts else " and the Host header is not checked"), file=sys.stderr)
    app = create_app(model, class_names, runs_root=runs_root, allowed_hosts=hosts, dataset=config,
                     max_jobs=args.max_jobs)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else shown}:{args.port}/"
    print(f"cnnlab serve: {model.name} ({model.num_params:,} parameters) at {url}  (Ctrl-C stops)", flush=True)
    if args.open:
        import webbrowser
        webbrowser.open(url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def add_parser(subparsers):
    p = subparsers.add_parser(
        "serve", help="explore a model in the browser: draw, see every layer, click a unit, train live",
        description="Start a local web server that shows a model's layers, feature maps and numbers, and "
                    "trains models live. Without MODEL_OR_RUN it trains the default subject once (tiny_cnn on MNIST "
                    "when at hand, else on the built-in shapes) and reuses it.")
    p.add_argument("model", nargs="?", metavar="MODEL_OR_RUN",
                   help="a run directory, a .safetensors model or a zoo name (default: the default subject)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; anything else warns)")
    p.add_argument("--open", action="store_true", help="open the page in the browser")
    p.add_argument("--runs", default="runs", help="folder of run directories to serve and write (default runs)")
    p.add_argument("--max-jobs", type=int, default=1, help="training jobs at a time (default 1)")
    p.set_defaults(func=run)
    return p


def register(subparsers):
    return add_parser(subparsers)
