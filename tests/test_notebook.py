"""The notebook display and helpers, outside a kernel: ``_repr_html_`` of a model, an explain result and a run
directory (valid HTML holding the numbers of their plain sources), ``serve.show`` (answers on loopback, stops
when asked), the live loss curve, and no notebook package imported by cnnlab outside a notebook.
(tests/test_notebooks.py runs the same code inside a real kernel.)"""
import base64
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import cnnlab
from cnnlab.layers import Add, Conv2D, Dense, Flatten, GlobalAvgPool2D, ReLU

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_PACKAGES = ("IPython", "ipykernel", "ipywidgets", "jupyter_client", "zmq", "tornado", "nbformat",
                     "nbclient", "tqdm.notebook", "tqdm.auto", "matplotlib_inline")
VOID = {"img", "br", "hr", "meta", "input", "link"}


class Tables(HTMLParser):
    """Checks that every tag closes in order and collects each table's rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.stack, self.tables, self.images, self.cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def parse(html):
    p = Tables()
    p.feed(html)
    p.close()
    assert not p.stack, f"unclosed tags {p.stack}"
    return p


def summary_rows(text):
    """The per-layer rows of ``summary()``'s text: split on runs of 2+ spaces."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[rules[1] + 1:rules[2]]]


@pytest.mark.parametrize("kind", ["sequential", "graph"])
def test_model_html_is_valid_and_holds_the_numbers_of_summary(kind):
    if kind == "sequential":
        model = cnnlab.models.lenet5()
    else:
        inp = cnnlab.Input((12, 12, 3))
        a = ReLU()(Conv2D(4, 3, padding="same")(inp))
        b = Conv2D(4, 1)(a)
        model = cnnlab.Model(inp, Dense(5)(GlobalAvgPool2D()(Add()([a, b]))))
    text = model.summary(print_fn=None)
    page = parse(model._repr_html_())
    (table,) = page.tables
    assert table[1:] == summary_rows(text)                    # every layer's name, shape, params, MACs (inputs)
    assert len(table) == len(model.layers) + 1
    html = model._repr_html_()
    total = int(re.search(r"Total params: ([\d,]+)", text).group(1).replace(",", ""))
    macs = int(re.search(r"forward\): ([\d,]+)", text).group(1).replace(",", ""))
    assert total == model.num_params == sum(layer.num_params for layer in model.layers)
    assert f"{total:,}" in html and f"{macs:,}" in html
    if kind == "graph":
        assert table[0][-1] == "Inputs" and any("conv2d" in row[-1] and "conv2d_1" in row[-1] for row in table[1:])


def test_an_unbuilt_model_shows_plain_text():
    model = cnnlab.Sequential([Flatten(), Dense(3)])
    assert model._repr_html_() is None


def test_explain_result_shows_its_pictures_and_numbers_and_is_still_the_dict(tmp_path):
    from cnnlab.explain import explain_conv
    result = explain_conv(tmp_path / "conv")
    saved = json.loads((tmp_path / "conv" / "conv.json").read_text())
    assert isinstance(result, dict) and saved["output_shape"] == result["output_shape"] == [3, 3]
    page = parse(result._repr_html_())
    pictures = [Path(p).name for p in (result["files"]["gif"], result["files"]["output_png"],
                                       result["files"]["edge_png"])]
    assert len(page.images) == 3
    for img, name in zip(page.images, pictures):
        mime, data = img["src"].split(",", 1)
        assert base64.b64decode(data) == (tmp_path / "conv" / name).read_bytes()
        assert mime == ("data:image/gif;base64" if name.endswith(".gif") else "data:image/png;base64")
    numbers = dict(row for row in page.tables[0][1:])
    assert numbers["frames"] == str(result["frames"]) and numbers["channels"] == "1"
    assert numbers["padding"] == result["padding"]
    assert "output" not in numbers and "files" not in numbers                       # arrays and file lists stay out


def test_run_shows_its_curves_and_final_metrics(tmp_path):
    from cnnlab.datasets import load_shapes
    from cnnlab.runs import Run, make_config, run_training
    (x, y), (xt, yt) = load_shapes(n_train=200, n_test=100)
    config = make_config(dataset="shapes", model="tiny_cnn", epochs=2, batch_size=50, workers=1)
    run_training(config, tmp_path / "run", verbose=0, data=((x, y), (xt, yt), {"name": "shapes"}), plot=False)
    run = Run(tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    page = parse(run._repr_html_())
    metrics = dict(row for row in page.tables[0][1:])
    assert metrics["epochs"] == "2" and metrics["model"] == "tiny_cnn"
    assert float(metrics["test accuracy"]) == pytest.approx(evaluation["accuracy"], abs=5e-4)
    assert float(metrics["last epoch loss"]) == pytest.approx(history["loss"][-1], rel=1e-3)
    assert len(page.images) == 2                                                 # the curves and the confusion matrix
    assert "test accuracy" in repr(run)
    with pytest.raises(cnnlab.CnnlabFileError, match="not a run directory"):
        Run(tmp_path)


def test_live_loss_records_every_batch_and_draws_outside_a_kernel():
    from cnnlab.notebook import LiveLoss, in_notebook, progress_bar
    assert not in_notebook()
    live = LiveLoss(every=0)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (96, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, 96)
    model = cnnlab.Sequential([Flatten(), Dense(3)], input_shape=(6, 6, 1))
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[live], validation_data=(x, y),
                        workers=1)
    assert len(live.losses) == 6 and live.steps == list(range(1, 7)) and live.epoch_ends == [3, 6]
    assert np.mean(live.losses[:3]) == pytest.approx(history["loss"][0], rel=1e-5)    # the epoch mean it draws
    assert live.val_losses == pytest.approx(history["val_loss"])
    assert len(live.figure().axes[0].lines) == 4                 # batches, two epoch means, the validation points
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, live=True, workers=1)   # accepted; draws nothing here
    assert progress_bar(3, "x") is None                              # stderr is not a terminal under pytest


def test_serve_show_answers_on_loopback_and_stops_when_asked(tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    import cnnlab.serve
    server = cnnlab.serve.show(cnnlab.models.lenet5(), runs=tmp_path / "runs", display=False, view="why")
    try:
        assert server.running and server.page == server.url + "#view=why" and server.url == f"http://localhost:{server.port}/"
        answer = httpx.get(f"http://127.0.0.1:{server.port}/api/model", timeout=30)
        assert answer.status_code == 200 and answer.json()["input_shape"] == [28, 28, 1]
        listening = [s.getsockname() for srv in server._server.servers for s in srv.sockets]
        assert listening and all(addr[0] == "127.0.0.1" for addr in listening)     # loopback only
        assert f'src="{server.url}#view=why"' in server._repr_html_()
    finally:
        server.stop()
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{server.port}/api/model", timeout=5)
    assert "stopped" in server._repr_html_()


def test_importing_and_using_cnnlab_outside_a_notebook_loads_no_notebook_package(tmp_path):
    code = f"""
import sys
import numpy as np
import cnnlab, cnnlab.serve, cnnlab.explain, cnnlab.notebook
from cnnlab.layers import Dense, Flatten
model = cnnlab.Sequential([Flatten(), Dense(2)], input_shape=(4, 4, 1))
x = np.zeros((8, 4, 4, 1), np.float32)
model.fit(x, np.zeros(8, np.int64), verbose=1, live=True)
model._repr_html_()
print([m for m in {NOTEBOOK_PACKAGES!r} if m in sys.modules])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
@pytest.mark.parametrize("notebook_host, status", [("localhost", 200), ("127.0.0.1", 403)])
def test_the_explorer_in_an_iframe_works_from_a_notebook_at_localhost(tmp_path, notebook_host, status):
    """What docs/notebooks/README.md says: the IFrame's page may change state (here: a prediction, a POST that
    needs the server's cookie) inside a notebook page at ``localhost``, the same site; from ``127.0.0.1`` the
    browser withholds the cookie and the server refuses."""
    import http.server
    import io
    import shutil
    import threading
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    sync_api = pytest.importorskip("playwright.sync_api")
    from PIL import Image
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    import cnnlab.serve
    server = cnnlab.serve.show(cnnlab.models.lenet5(), runs=tmp_path / "runs", display=False)
    page_html = server._repr_html_().encode()

    class Notebook(http.server.BaseHTTPRequestHandler):       # stands in for Jupyter's page holding the cell
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>" + page_html + b"</body></html>")

        def log_message(self, *args):
            pass

    notebook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Notebook)
    threading.Thread(target=notebook.serve_forever, daemon=True).start()
    buf = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buf, format="PNG")
    png = list(buf.getvalue())
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(f"http://{notebook_host}:{notebook.server_address[1]}/")
            frame = page.frame_locator("iframe")
            frame.locator("body").wait_for(timeout=60_000)
            explorer = next(f for f in page.frames if f.url.startswith(server.url))
            got = explorer.evaluate("""async (bytes) => {
                const r = await fetch('api/predict', {method: 'POST', body: new Uint8Array(bytes),
                                                      headers: {'Content-Type': 'image/png'}});
                return [r.status, await r.text()];
            }""", png)
            browser.close()
    finally:
        notebook.shutdown()
        server.stop()
    assert got[0] == status, got[1][:300]
    if status == 200:
        assert len(json.loads(got[1])["probabilities"]) == 10


def test_live_loss_waits_ten_times_its_last_drawing_before_the_next(monkeypatch):
    import time
    import cnnlab.notebook as nb
    drawn = []

    class Handle:                                     # stands in for the cell's display
        def update(self, image):
            drawn.append(image)

    def slow_png(fig):
        time.sleep(0.05)
        return b"png"
    monkeypatch.setattr(nb, "in_notebook", lambda: False)
    monkeypatch.setattr("cnnlab.plots.figure_png", slow_png)
    display = type(sys)("IPython.display")           # IPython's display, faked: this test needs no IPython
    display.Image = lambda data, format: data
    monkeypatch.setitem(sys.modules, "IPython", type(sys)("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    live = nb.LiveLoss(every=0)
    live._handle = Handle()
    for step in range(1, 6):
        live.on_batch_end(None, step, 1.0 / step)
    assert len(drawn) == 1 and live._wait >= nb.DRAW_SHARE * 0.05     # 4 batches came sooner than 0.5 s
    live.on_epoch_end(None, 0, {"val_loss": 0.3})
    assert len(drawn) == 2                                             # an epoch's end always draws
