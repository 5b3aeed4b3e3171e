"""``cnnlab serve``: explore a model in the browser, down to the numbers, while it trains.

* :mod:`.compute` -- what the pages show, computed with NumPy from ``cnnlab.analysis``;
* :mod:`.jobs` -- training jobs in their own processes, progress events for any run directory;
* :mod:`.app` -- the Starlette application (``create_app(model)``), JSON errors;
* :mod:`.guard` -- what other web pages may not do (Host, Origin, the server's secret);
* :mod:`.cli` -- the ``cnnlab serve`` command;
* :mod:`.notebook` -- :func:`show`: the same server in a thread of a notebook's kernel, shown in the cell;
* ``static/`` -- the page: plain JavaScript modules, SVG and canvas, no build step, no network.

Starlette and uvicorn are the ``serve`` extra (``pip install "cnnlab[serve]"``); only
:mod:`.app` and :mod:`.guard` import them.
"""
from .notebook import show

__all__ = ["show"]
