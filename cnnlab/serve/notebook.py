"""``cnnlab.serve.show(model_or_run)``: the explorer inside a notebook cell.

    server = cnnlab.serve.show(model)            # a model object, a run directory, a .safetensors, a zoo name
    server.url                                   # http://localhost:PORT/ (a free port, loopback only)
    server.stop()                                # or: the kernel ends (restart, shutdown), and it stops

It is the same application as ``cnnlab serve`` (:func:`cnnlab.serve.app.create_app`, with its guard), run by
uvicorn in a background thread of this process, bound to 127.0.0.1 on a port the system picks, and shown in
the cell in an IFrame. The server stops when asked (``stop()``), and when the process exits (``atexit``):
running training jobs stop after their batch, as with Ctrl-C on ``cnnlab serve``. Training jobs run in fresh
processes (``spawn``), never forked from the kernel.

Where it works: the IFrame is loaded by the browser, from ``localhost:PORT`` of the machine the browser runs
on. A notebook on your own machine (Jupyter, JupyterLab, VS Code) works as is. A notebook served from another
machine (JupyterHub, a cluster, a cloud VM) needs the port forwarded to the machine of the browser, e.g.
``ssh -L PORT:127.0.0.1:PORT user@host`` (``show(model, port=PORT)`` fixes the port); a hosted notebook whose
machine cannot be reached (Colab-like) cannot show it. The page is ``localhost`` so that a notebook opened at
``http://localhost:8888`` is the same site and the server's cookie reaches it (``cnnlab.serve.guard``).
"""
from __future__ import annotations

import atexit
import html
import socket
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"
PAGE_HOST = "localhost"             # the name the IFrame loads: the same site as a notebook at localhost:8888
START_SECONDS = 30                  # how long show() waits for the server to answer


class ShownServer:
    """A running explorer: ``url``, ``port``, ``stop()``; shown in a cell as the page in an IFrame."""

    def __init__(self, server, thread, port, model_name, height, view=None):
        self._server, self._thread, self.port, self.height = server, thread, port, height
        self.url = f"http://{PAGE_HOST}:{port}/"
        self.page = self.url + (f"#view={view}" if view else "")      # what the IFrame opens
        self.model_name = model_name

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (event streams end, training jobs stop after their batch) and wait for it."""
        if self._thread.is_alive():
            self._server.app_state_closing()
            self._server.should_exit = True
            self._thread.join(timeout)
        atexit.unregister(self.stop)

    def __repr__(self) -> str:
        return f"<cnnlab explorer of {self.model_name} at {self.url} ({'running' if self.running else 'stopped'})>"

    def _repr_html_(self) -> str:
        if not self.running:
            return f"<p>The explorer of {html.escape(self.model_name)} at {self.url} is stopped.</p>"
        return (f'<iframe src="{html.escape(self.page)}" width="100%" height="{int(self.height)}" style="border:1px solid #ddd" '
                f'title="cnnlab explorer"></iframe><p style="font-size:smaller">The explorer of '
                f'{html.escape(self.model_name)}: <a href="{html.escape(self.page)}" target="_blank">{self.url}</a> (open it in a tab; '
                f'<code>.stop()</code> stops it)</p>')


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def show(model_or_run, port: int | None = None, runs="runs", height: int = 720, data_dir=None, view=None,
         display: bool = True) -> ShownServer:
    """Start the explorer of ``model_or_run`` in a background thread and show it in the cell.

    ``model_or_run``: what ``cnnlab serve`` takes (``None``: the default subject), or a model object.

    ``port``: default a free one; ``runs``: the folder of run directories it lists and writes (as
    ``cnnlab serve --runs``); ``view``: the page's view to open (``"overview"``, ``"unit"``, ``"why"``,
    ``"training"``, ``"lesson"``: the address's ``#view=``); ``display=False`` only starts it (the returned object shows it as a cell's
    value). Returns the running server; ``stop()`` stops it.
    """
    from .cli import _require_extra, allowed_hosts, resolve_model
    _require_extra()
    import uvicorn
    from .app import create_app
    runs_root = Path(runs)
    model, class_names, config = resolve_model(model_or_run, runs_root, data_dir=data_dir)
    app = create_app(model, class_names, runs_root=runs_root, allowed_hosts=allowed_hosts(HOST), dataset=config,
                     data_dir=data_dir)
    port = free_port() if port is None else int(port)

    class Server(uvicorn.Server):                 # in a thread, uvicorn leaves the kernel's signals alone
        def app_state_closing(self):
            app.state.explorer.closing.set()

    server = Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning", timeout_graceful_shutdown=3,
                                   lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"cnnlab-serve-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"cnnlab.serve.show: the server did not start on {HOST}:{port} "
                               "(is the port taken? pass another port=)")
        time.sleep(0.05)
    shown = ShownServer(server, thread, port, model.name, height, view)
    atexit.register(shown.stop)
    if display:
        from ..notebook import in_notebook
        if in_notebook():
            from IPython.display import display as show_in_cell
            show_in_cell(shown)
        else:
            print(f"cnnlab explorer of {model.name} at {shown.url}")
    return shown
