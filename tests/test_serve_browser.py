"""The explorer in a real browser: Playwright driving Debian's chromium against ``cnnlab serve`` on a free port.

Every test saves a screenshot of its view (under the test's temporary folder, and in
``$CNNLAB_SCREENSHOTS`` when set: the README's pictures are made this way).
"""
import base64
import gzip
import http.cookiejar
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow                   # a browser and a server: run by CI, skipped by -m "not slow"
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")
Image = pytest.importorskip("PIL.Image")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow                  # a real server and a browser

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


pytestmark = pytest.mark.slow


def start_server(runs_dir, *model):
    """``cnnlab serve [MODEL]`` on a free port; yields its URL, stops it with Ctrl-C."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", *model, "--port", str(port), "--runs", str(runs_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 400
        while True:
            try:
                urllib.request.urlopen(url + "api/model", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"cnnlab serve did not start: {proc.stdout.read()}")
                time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``cnnlab serve`` with no model: it trains the default subject first (shapes here), then serves it."""
    yield from start_server(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """``cnnlab serve resnet8``: a graph model (residual blocks, BatchNorm, global pooling), RGB input."""
    yield from start_server(tmp_path_factory.mktemp("runs-resnet"), "resnet8")


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """An MNIST-format LeNet-5 run: a small IDX fixture (the built-in shapes written as MNIST's four files, so
    no download and no skip), trained one epoch, served with its data found through the run's --data-dir."""
    from cnnlab.datasets import load_shapes
    root = tmp_path_factory.mktemp("mnist")
    (xt, yt), (xs, ys) = load_shapes(256, 64, image_size=28, seed=3)
    folder = root / "data" / "mnist"
    folder.mkdir(parents=True)

    def idx(a):
        a = np.asarray(a)
        return bytes([0, 0, 8, a.ndim]) + np.array(a.shape, ">u4").tobytes() + a.astype(np.uint8).tobytes()

    for prefix, x, y in (("train", xt, yt), ("t10k", xs, ys)):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx((x[..., 0] * 255).round()), mtime=0))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(y), mtime=0))
    run = root / "run"
    subprocess.run([sys.executable, "-m", "cnnlab", "train", "--dataset", "mnist", "--data-dir", str(root / "data"),
                    "--model", "lenet5", "--epochs", "1", "--out", str(run)], check=True, capture_output=True, timeout=300)
    yield from start_server(root / "runs", str(run))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """A PyTorch network with two branches joined by ``torch.cat``, exported to ONNX and read by ``cnnlab import``."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    nn = torch.nn

    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 5, padding=2)
            self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(8 * 14 * 14, 10)

        def forward(self, x):
            x = torch.relu(torch.cat([self.a(x), self.b(x)], 1))
            return self.fc(torch.flatten(self.pool(x), 1))

    root = tmp_path_factory.mktemp("onnx")
    # float32 whatever another module made torch's default (test_torch_reference sets float64 when collected)
    torch.onnx.export(Branches().float().eval(), torch.zeros(2, 1, 28, 28, dtype=torch.float32),
                      str(root / "branches.onnx"), dynamo=False,
                      input_names=["input"], output_names=["out"], dynamic_axes={"input": {0: "batch"}})
    done = subprocess.run([sys.executable, "-m", "cnnlab", "import", str(root / "branches.onnx"), "--out",
                           str(root / "run"), "--dataset", "shapes"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    yield from start_server(root / "runs", str(root / "run"))


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser, url, width=1400, height=900, first_visit=False, **context):
    """A page at ``url`` once its first prediction is shown; ``page.errors`` collects script errors.
    A first visit with no link opens the lesson; these tests are a returning learner's (the overview)
    unless ``first_visit``."""
    ctx = browser.new_context(viewport={"width": width, "height": height}, **context)
    if not first_visit:
        ctx.add_init_script("localStorage.setItem('cnnlab-lesson-seen', '1')")
    page = ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("#top-class", timeout=30_000)
    return page


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server)
    yield page
    page.context.close()
    assert not page.errors, page.errors


def screenshot(page, tmp_path, name, full_page=False):
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    target = os.environ.get("CNNLAB_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    assert path.stat().st_size > 10_000


def probabilities(page):
    return page.evaluate("window.explorer.state.prediction.probabilities")


def settled(page):
    page.wait_for_function("!window.explorer.state.busy && !window.explorer.state.dirty")


def test_drawing_a_stroke_changes_the_prediction(page, tmp_path):
    page.click("#clear")
    page.wait_for_timeout(200)
    settled(page)
    blank = probabilities(page)
    box = page.locator("#draw").bounding_box()
    page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.down()
    for k in range(1, 21):
        page.mouse.move(box["x"] + (0.2 + 0.03 * k) * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.up()
    page.wait_for_timeout(200)
    settled(page)
    drawn = probabilities(page)
    assert abs(sum(drawn) - 1) < 1e-5
    assert max(abs(a - b) for a, b in zip(blank, drawn)) > 0.01, (blank, drawn)
    assert page.inner_text("#top-class")
    screenshot(page, tmp_path, "overview")


def test_conv_unit_detail_sums_to_the_overview_value(page, tmp_path):
    page.click('.layer[data-layer="conv2d_1"] canvas[data-node] >> nth=3', position={"x": 9, "y": 13})
    page.wait_for_selector("#unit-equation", timeout=15_000)
    for _ in range(2):
        eq = page.locator("#unit-equation")
        layer, c, y, x = (eq.get_attribute(k) for k in ("data-layer", "data-channel", "data-y", "data-x"))
        total = float(eq.get_attribute("data-sum")) + float(eq.get_attribute("data-bias"))
        shown = page.evaluate(f"(() => {{ const a = window.explorer.state.activations['{layer}'];"
                              f" return a.values[({y} * a.shape[1] + {x}) * a.shape[2] + {c}]; }})()")
        assert layer == "conv2d_1" and c == "3"
        assert abs(total - shown) < 1e-5, (total, shown)
        assert abs(float(eq.get_attribute("data-value")) - shown) < 1e-5
        screenshot(page, tmp_path, "conv-detail", full_page=True)
        before = (y, x)
        page.click("#unit-next")                                # the kernel steps to the next position
        page.wait_for_function(f"document.querySelector('#unit-equation').dataset.x !== '{x}'")
        after = page.locator("#unit-equation")
        assert (after.get_attribute("data-y"), after.get_attribute("data-x")) != before


def test_why_it_works_view(page, tmp_path):
    page.click('#tabs button[data-view="why"]')
    page.wait_for_selector(".filter", timeout=30_000)
    page.wait_for_selector("#shift-change")
    page.locator("#shift-dx").fill("3")
    page.wait_for_function("document.querySelector('#shift-change').textContent.indexOf(' 0.0%') < 0")
    assert page.locator(".filter").count() == 8
    # the sentence under the numbers is the server's, chosen from them: never "barely" for a large change
    change = float(re.search(r"changed by ([\d.]+)%", page.locator("#shift-change").text_content()).group(1))
    sentence = page.locator("#shift-sentence").text_content()
    assert sentence.startswith("Moved 3 px right") and ("features of" in sentence)
    assert ("barely changed" in sentence) == (change < 10), (change, sentence)
    assert "change much less" not in page.locator("#why").text_content()
    screenshot(page, tmp_path, "why")


def test_training_job_adds_points_to_the_curve(page, tmp_path):
    page.click('#tabs button[data-view="training"]')
    page.fill("#train-epochs", "2")
    page.fill("#train-limit", "600")
    page.click("#train-start")
    page.wait_for_selector("circle.epoch-point", timeout=60_000)
    first = page.locator("circle.epoch-point").count()
    assert first >= 1
    page.wait_for_function("document.querySelector('#train-status').textContent.startsWith('completed')",
                           timeout=60_000)
    assert page.locator("circle.epoch-point").count() == 2
    assert page.locator("#train-filters figure canvas").count() == 8
    assert page.locator("circle.batch-point").count() >= 2     # the loss of every batch event, drawn
    assert page.locator("#train-stop").is_hidden()             # the stop button only while running
    page.wait_for_selector("#train-added figure canvas")      # what training added, from the run's snapshots
    assert page.locator("#train-added figure canvas").count() == 8
    screenshot(page, tmp_path, "training")


@pytest.mark.slow
def test_a_one_epoch_run_draws_a_point_for_every_batch(page, tmp_path):
    """The server sends every batch of a job's first batches, so one short epoch draws its whole loss curve:
    1000 shapes in batches of 32 are 32 batches, each a point in the page's chart."""
    page.click('#tabs button[data-view="training"]')
    page.select_option("#train-dataset", "shapes")
    page.fill("#train-epochs", "1")
    page.fill("#train-batch", "32")
    page.fill("#train-limit", "1000")
    page.click("#train-start")
    page.wait_for_function("document.querySelector('#train-status')?.textContent.startsWith('completed')",
                           timeout=120_000)
    points = page.locator("#curve-batches circle.batch-point").count()
    print(f"batch points drawn: {points}")
    assert points >= 20, points
    assert page.locator("#train-stop").is_hidden()             # the stop button only while running
    screenshot(page, tmp_path, "training-one-epoch")


def test_uploading_a_non_image_shows_the_message(page, tmp_path):
    page.set_input_files("#upload", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"just text"}])
    page.wait_for_function("document.querySelector('#input-error').textContent.length > 0")
    assert "not a picture" in page.inner_text("#input-error")
    screenshot(page, tmp_path, "upload-error")


def test_an_mnist_run_meets_its_own_digits_and_plain_words(browser, tmp_path):
    """``cnnlab serve RUN --data-dir DIR`` on a LeNet-5 run of MNIST-format data (an IDX fixture written here):
    the first example is the data's first test image, with no note; the notes speak of "the example", quote
    no flag, and the page's boxes change the preparation."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from cnnlab import runs
    from test_datasets import make_idx_set
    data = tmp_path / "data"
    arrays = make_idx_set(data / "mnist", n_train=64, n_test=8, size=28, seed=7)
    run = tmp_path / "runs" / "mnist-lenet5"
    runs.run_training(runs.make_config(dataset="mnist", data_dir=str(data), model="lenet5", epochs=1, batch_size=32,
                                       workers=1), run, verbose=0, plot=False)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(run), "--port", str(port), "--runs",
                             str(tmp_path / "runs"), "--data-dir", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert "(Ctrl-C stops)" in proc.stdout.readline()
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/#view=overview")
        page.wait_for_selector("#top-class", timeout=30_000)
        settled(page)
        first = page.locator("#examples img").first
        assert "(mnist)" in first.get_attribute("title") and page.locator("#examples-note").count() == 0
        png = base64.b64decode(first.get_attribute("src").split(",", 1)[1])
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), arrays["t10k"][0][0])
        notes = page.inner_text("#prediction")
        assert "The example" in notes and "--" not in notes, notes
        page.uncheck("#prep-center")
        page.wait_for_timeout(200)
        settled(page)
        assert "centred" not in page.inner_text("#prediction")
        screenshot(page, tmp_path, "mnist-run")
        page.close()
    finally:
        proc.send_signal(2)
        proc.wait(timeout=20)
# ---------------------------------------------------------------------------
# Views: deep links, the stepping window, the flow, keyboard and sizes
# ---------------------------------------------------------------------------
_OPENERS = {}


def api(url, path, body=None):
    """The server's JSON for ``path``, asked as the page asks: by a client that opened the page first and so
    holds the server's secret cookie (a request without it may not POST)."""
    if url not in _OPENERS:
        _OPENERS[url] = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        _OPENERS[url].open(url, timeout=30).close()
    req = urllib.request.Request(url + path.lstrip("/"), data=body, headers={"Content-Type": "image/png"} if body else {})
    with _OPENERS[url].open(req, timeout=30) as r:
        return json.load(r)


def example_png(url, k):
    return base64.b64decode(api(url, f"api/examples?source=test&n={k + 1}")["examples"][k]["png"])


def activation(page, layer, c, y, x):
    return page.evaluate(f"(() => {{ const a = window.explorer.state.activations['{layer}'];"
                         f" return a.values[({y} * a.shape[1] + {x}) * a.shape[2] + {c}]; }})()")


def unit_shown(page):
    eq = page.locator("#unit-equation")
    return tuple(eq.get_attribute(k) for k in ("data-layer", "data-channel", "data-y", "data-x"))


def open_view(page, view):
    page.click(f'#tabs button[data-view="{view}"]')
    page.wait_for_selector(f"#view-{view}.active")


@pytest.mark.parametrize("which, layer", [("server", "conv2d_1"), ("resnet", "conv2d_3")])
def test_a_link_with_a_unit_opens_that_unit_and_back_forward_work(browser, request, which, layer, tmp_path):
    url = request.getfixturevalue(which)
    page = open_page(browser, url + f"#view=unit&layer={layer}&c=3&y=4&x=5&example=test:5", 1280, 800)
    page.wait_for_selector("#view-details.active #unit-equation", timeout=30_000)
    assert unit_shown(page) == (layer, "3", "4", "5")
    # the unit is computed on the example the link names: the server's example 5, and the page's own maps agree
    assert page.evaluate("window.explorer.state.example") == "test:5"
    png = base64.b64encode(example_png(url, 5)).decode()
    assert page.get_attribute('#examples img[data-example="test:5"]', "src") == f"data:image/png;base64,{png}"
    reference = api(url, f"api/unit?layer={layer}&channel=3&y=4&x=5", example_png(url, 5))["model_value"]
    assert abs(float(page.get_attribute("#unit-equation", "data-model-value")) - reference) < 1e-5
    assert abs(activation(page, layer, 3, 4, 5) - reference) < 1e-5
    screenshot(page, tmp_path, f"unit-link-{which}", full_page=True)
    open_view(page, "why")
    assert page.evaluate("location.hash").startswith("#view=why")
    page.evaluate("history.back()")
    page.wait_for_selector("#view-details.active")
    assert f"layer={layer}" in page.evaluate("location.hash") and unit_shown(page) == (layer, "3", "4", "5")
    page.evaluate("history.forward()")
    page.wait_for_selector("#view-why.active")
    page.context.close()
    assert not page.errors, page.errors


def test_receptive_field_box_is_the_units_rows_and_columns_on_the_models_input(browser, server, tmp_path):
    """The box drawn is the server's receptive field, on the model's input; and independently, changing a pixel
    just outside the box never changes the unit, while some pixel inside does."""
    layer, c, y, x = "conv2d_1", 3, 4, 5
    page = open_page(browser, server + f"#view=unit&layer={layer}&c={c}&y={y}&x={x}&example=test:5", 1280, 800)
    page.wait_for_selector("#receptive-field", timeout=30_000)
    png = example_png(server, 5)
    d = api(server, f"api/unit?layer={layer}&channel={c}&y={y}&x={x}", png)
    assert api(server, "api/predict", png)["notes"] == []            # the picture is the model's input as it is
    box = {k: int(page.get_attribute("#receptive-field", f"data-{k}")) for k in ("top", "bottom", "left", "right", "cell")}
    r = d["receptive_field"]
    h, w = api(server, "api/model")["input_shape"][:2]
    assert (box["top"], box["bottom"], box["left"], box["right"]) == (max(0, r["top"]), min(h - 1, r["bottom"]),
                                                                      max(0, r["left"]), min(w - 1, r["right"]))
    size = page.evaluate("(() => { const c = document.getElementById('receptive-field'); return [c.width, c.height]; })()")
    assert size == [w * box["cell"], h * box["cell"]]
    # the stroke is where the box's edges are, on the canvas
    edge = page.evaluate(f"""(() => {{ const c = document.getElementById('receptive-field').getContext('2d');
        return Array.from(c.getImageData({box['left'] * box['cell'] + 1}, {(box['top'] + box['bottom']) * box['cell'] // 2}, 1, 1).data); }})()""")
    assert edge[0] > 200 and edge[1] < 80, edge
    # independent check through the model: perturb single pixels of the example
    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.uint8)

    def value_with(i, j):
        a = img.copy()
        a[i, j] = 255 if a[i, j] < 128 else 0
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return api(server, f"api/unit?layer={layer}&channel={c}&y={y}&x={x}", buf.getvalue())["model_value"]

    ring = [(i, j) for i in range(box["top"] - 2, box["bottom"] + 3) for j in range(box["left"] - 2, box["right"] + 3)
            if 0 <= i < h and 0 <= j < w and not (box["top"] <= i <= box["bottom"] and box["left"] <= j <= box["right"])]
    assert ring and all(value_with(i, j) == d["model_value"] for i, j in ring)
    cy, cx = (box["top"] + box["bottom"]) // 2, (box["left"] + box["right"]) // 2
    inside = [(i, j) for i in range(cy - 1, cy + 2) for j in range(cx - 1, cx + 2)]
    assert any(abs(value_with(i, j) - d["model_value"]) > 1e-6 for i, j in inside)
    page.context.close()
    assert not page.errors, page.errors


def test_receptive_field_on_an_rgb_graph_model(browser, resnet, tmp_path):
    page = open_page(browser, resnet + "#view=unit&layer=add_1&c=2&y=3&x=7&example=test:1", 1280, 800)
    page.wait_for_selector("#receptive-field", timeout=30_000)
    d = api(resnet, "api/unit?layer=add_1&channel=2&y=3&x=7", example_png(resnet, 1))
    r = d["receptive_field"]
    got = [int(page.get_attribute("#receptive-field", f"data-{k}")) for k in ("top", "bottom", "left", "right")]
    assert got == [max(0, r["top"]), min(31, r["bottom"]), max(0, r["left"]), min(31, r["right"])]
    assert page.locator("#unit-equation").get_attribute("data-layer") == "add_1"
    page.context.close()
    assert not page.errors, page.errors


def test_stepper_plays_from_the_first_unpadded_position_and_fills_the_map(page, tmp_path):
    page.evaluate("location.hash = '#view=unit&layer=conv2d&c=2&y=0&x=0'")
    page.wait_for_function("document.querySelector('#unit-equation')?.dataset.layer === 'conv2d'", timeout=20_000)
    text = page.inner_text("#unit-equation")
    assert "Σ of the 25 products" in text and "channel sums" not in text        # one input channel: no "x = x" line
    pads, strides = page.evaluate("[window.explorer.stepper.detail().pads, window.explorer.stepper.detail().strides]")
    first = (-(-pads[0] // strides[0]), -(-pads[2] // strides[1]))
    page.evaluate("window.__seen = []; document.addEventListener('unit', e => window.__seen.push([e.detail.y, e.detail.x]))")
    entries = page.evaluate("history.length")
    page.locator("#unit-speed").fill("5")                                        # the fastest speed
    page.click("#unit-play")
    page.wait_for_function("window.__seen.length >= 6", timeout=20_000)
    page.click("#unit-play")                                                     # pause
    seen = [tuple(p) for p in page.evaluate("window.__seen")]
    assert seen[0] == first, (seen, first)
    w = 28
    assert all(b[0] * w + b[1] == a[0] * w + a[1] + 1 for a, b in zip(seen, seen[1:6]))
    y, x = (int(v) for v in unit_shown(page)[2:])
    assert int(page.get_attribute("#unit-output-map", "data-filled")) == y * w + x + 1
    assert page.evaluate("history.length") == entries + 1                        # play replaces its own entry
    screenshot(page, tmp_path, "stepper", full_page=True)


def test_unit_details_of_pooling_dense_and_softmax(page):
    page.evaluate("location.hash = '#view=unit&layer=max_pool2d&c=1&y=6&x=7'")
    page.wait_for_function("document.querySelector('#unit-equation')?.dataset.layer === 'max_pool2d'", timeout=20_000)
    marked = page.locator("#details td.mark")
    assert marked.count() == 1
    assert abs(float(marked.inner_text()) - float(page.get_attribute("#unit-equation", "data-value"))) < 1e-3
    page.evaluate("location.hash = '#view=unit&layer=dense&c=4'")
    page.wait_for_selector("#dense-table")
    rows = page.locator("#dense-table tr")
    assert rows.count() == 1 + 10 + 2                                            # header, 10 terms, the rest, bias
    assert "the other 774 products" in page.inner_text("#dense-table")
    page.click("text=softmax details")
    page.wait_for_selector("#softmax-table")
    assert page.locator("#softmax-table tr").count() == 1 + 10 + 1


def test_what_does_this_unit_look_for(browser, server, tmp_path):
    """The unit details' button optimises an input for the unit shown: the picture, its numbers (the server's,
    for the same unit and input) and the sentence appear; the optimum beats the input and the noise."""
    page = open_page(browser, server + "#view=unit&layer=conv2d_1&c=3&y=2&x=4&example=test:5", 1280, 800)
    page.wait_for_selector("#view-details.active #unit-equation", timeout=30_000)
    page.click("#unit-optimum-button")
    page.wait_for_selector("#unit-optimum-table", timeout=30_000)
    t = page.locator("#unit-optimum-table")
    shown = {k: float(t.get_attribute(f"data-{k}")) for k in ("value", "input-value", "random-max", "radius")}
    reference = api(server, "api/unit/optimum?layer=conv2d_1&channel=3&y=2&x=4", example_png(server, 5))
    assert shown["input-value"] == pytest.approx(reference["input_value"], rel=1e-5, abs=1e-6)
    assert shown["radius"] == pytest.approx(reference["radius"], rel=1e-6)
    assert shown["value"] == pytest.approx(reference["value"], rel=1e-5, abs=1e-6)    # the same seed: the same optimum
    assert shown["value"] > max(shown["input-value"], shown["random-max"])
    assert page.inner_text("#unit-optimum-sentence") == reference["sentence"]
    assert page.locator("#unit-optimum-image").get_attribute("aria-label").startswith("the input optimised for conv2d_1")
    screenshot(page, tmp_path, "unit-optimum", full_page=True)
    page.context.close()
    assert not page.errors, page.errors


def test_batchnorm_unit_shows_the_statistics_used(browser, resnet):
    page = open_page(browser, resnet + "#view=unit&layer=batch_norm_1&c=5&y=2&x=9", 1280, 800)
    page.wait_for_selector("#norm-table", timeout=30_000)
    cells = [float(t) for t in page.locator("#norm-table td").all_inner_texts()]
    assert len(cells) == 8
    x, mean, var, eps, x_hat, gamma, beta, out = cells
    assert abs(out - float(page.get_attribute("#unit-equation", "data-model-value"))) < 2e-3
    page.context.close()
    assert not page.errors, page.errors


def test_overview_flow_lines_legends_and_the_transition(page, tmp_path):
    page.wait_for_selector("svg.flow-lines path", state="attached")
    into = lambda node: page.locator(f'svg.flow-lines path[data-dst="{node}"]').count()
    assert into("conv2d_1#0") == 8                 # a conv map reads every map of its input (8 maps, one group)
    assert into("relu#3") == 1 and page.locator('svg.flow-lines path[data-src="relu#3"][data-dst="max_pool2d#3"]').count() == 1
    assert into("conv2d#0") == 1                   # from the input
    node = "conv2d_1#2"
    page.hover(f'[data-node="{node}"]')
    hot = page.locator("svg.flow-lines path.hot")
    assert hot.count() == into(node) + page.locator(f'svg.flow-lines path[data-src="{node}"]').count()
    assert page.locator(".layer .legend").count() == 8
    page.evaluate("window.__ghosts = 0; new MutationObserver(m => m.forEach(r => r.addedNodes.forEach(n => "
                  "{ if (n.classList && n.classList.contains('ghost')) window.__ghosts++; }))).observe(document.body, {childList: true})")
    page.click('[data-node="conv2d_1#2"]')
    page.wait_for_selector("#view-details.active #unit-equation", timeout=20_000)
    assert page.evaluate("window.__ghosts") == 1 and unit_shown(page)[:2] == ("conv2d_1", "2")


def test_large_graph_model_collapses_blocks_that_open_on_click(browser, resnet, tmp_path):
    page = open_page(browser, resnet, 1280, 800)
    page.wait_for_selector("svg.flow-lines path", state="attached")
    assert page.locator(".layer.collapsed").count() == 3
    assert page.locator(".maps button.more").count() >= 3                       # "+8 more", "+24 more", "+56 more"
    screenshot(page, tmp_path, "overview-resnet8")
    page.click(".layer.collapsed .title.block >> nth=0")
    page.wait_for_selector('.layer[data-layer="add"]')
    assert page.locator(".layer.collapsed").count() == 2
    page.wait_for_selector('svg.flow-lines path[data-dst="add#0"]', state="attached")
    srcs = sorted(p.split("#")[0] for p in page.locator('svg.flow-lines path[data-dst="add#0"]').evaluate_all("ps => ps.map(p => p.dataset.src)"))
    assert srcs == ["batch_norm_2", "relu"]                                      # the join's two branches
    page.click('.layer[data-layer="conv2d_1"] .maps button.more')
    assert page.locator('.layer[data-layer="conv2d_1"] [data-node]').count() == 16
    screenshot(page, tmp_path, "overview-resnet8-open", full_page=True)
    page.context.close()
    assert not page.errors, page.errors


@pytest.mark.parametrize("which", ["server", "resnet"])
def test_no_horizontal_scroll_at_1280x800_in_any_view(browser, request, which):
    url = request.getfixturevalue(which)
    page = open_page(browser, url + "#view=unit&layer=conv2d_1&c=0&y=3&x=3", 1280, 800)
    page.wait_for_selector("#unit-equation", timeout=30_000)
    for view in ("details", "overview", "why", "training"):
        open_view(page, view)
        page.wait_for_timeout(300)
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280, view
    page.context.close()
    assert not page.errors, page.errors


def tab_reaches_every_visible_control(page):
    page.evaluate("""document.querySelectorAll('[data-k]').forEach(e => { delete e.dataset.k; });
        document.querySelectorAll('button, select, input, [tabindex="0"]').forEach((e, k) => { e.dataset.k = k; })""")
    wanted = set(page.evaluate("""[...document.querySelectorAll('[data-k]')].filter(e => e.offsetParent !== null
        && !e.disabled).map(e => e.dataset.k)"""))
    reached = set()
    page.evaluate("document.activeElement && document.activeElement.blur()")
    for _ in range(len(wanted) + 20):
        page.keyboard.press("Tab")
        k = page.evaluate("document.activeElement && document.activeElement.dataset.k")
        if k is not None:
            reached.add(k)
    assert len(wanted) > 20 and wanted <= reached, page.evaluate(
        f"{sorted(wanted - reached)}.map(k => document.querySelector(`[data-k='${{k}}']`).outerHTML.slice(0, 80))")


def test_tab_reaches_every_control_and_arrows_walk_the_maps_and_the_window(page):
    tab_reaches_every_visible_control(page)
    page.focus('[data-node][tabindex="0"]')
    start = page.evaluate("document.activeElement.dataset.node")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    node = page.evaluate("document.activeElement.dataset.node")
    assert node != start and node.split("#")[0] == "relu" and node.endswith("#1")
    page.keyboard.press("Enter")
    page.wait_for_selector("#view-details.active #unit-equation", timeout=20_000)
    assert unit_shown(page)[:2] == ("relu", "1")
    tab_reaches_every_visible_control(page)                     # the unit view's controls too
    # a new input while the unit is shown: the same unit, recomputed on it
    page.evaluate("window.__old = window.explorer.stepper")
    page.click("#examples img >> nth=7")
    page.wait_for_function("window.explorer.state.example === 'test:7' && window.explorer.stepper !== window.__old"
                           " && document.querySelector('#unit-equation')", timeout=20_000)
    layer, c, y, x = unit_shown(page)
    assert (layer, c) == ("relu", "1")
    assert abs(float(page.get_attribute("#unit-equation", "data-model-value")) - activation(page, layer, c, y, x)) < 1e-5
    y, x = (int(v) for v in unit_shown(page)[2:])
    page.focus(".stepper-inputs")
    page.keyboard.press("ArrowRight")                            # the window steps with the arrows
    page.wait_for_function(f"document.querySelector('#unit-equation').dataset.x === '{x + 1}'")
    assert unit_shown(page)[2] == str(y)
    for view in ("why", "training"):
        open_view(page, view)
        page.wait_for_timeout(500)
        tab_reaches_every_visible_control(page)


def touch_stroke(page, left):
    """A finger's stroke on the drawing canvas (touch events, as a phone sends them), from ``left`` of its width."""
    page.locator("#draw").scroll_into_view_if_needed()
    box = page.locator("#draw").bounding_box()
    cdp = page.context.new_cdp_session(page)
    pt = lambda k: [{"x": box["x"] + box["width"] * (left + 0.02 * k), "y": box["y"] + box["height"] * (0.2 + 0.03 * k)}]
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": pt(0)})
    for k in range(1, 20):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": pt(k)})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def test_phone_size_reads_and_touch_drawing_works(browser, server, tmp_path):
    page = open_page(browser, server, 390, 844, has_touch=True, is_mobile=True)
    page.click("#clear")
    page.wait_for_timeout(300)
    settled(page)
    blank = probabilities(page)
    touch_stroke(page, 0.5)
    page.wait_for_timeout(300)
    settled(page)
    drawn = probabilities(page)
    assert max(abs(a - b) for a, b in zip(blank, drawn)) > 0.01, (blank, drawn)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, tmp_path, "phone", full_page=True)
    page.context.close()
    assert not page.errors, page.errors


def test_mnist_run_meets_its_own_digits_and_shows_both_inputs(browser, mnist, tmp_path):
    """The first example is from the run's own (MNIST-format) test set; the server centres pictures as MNIST
    was made, so the unit view shows the model's input with the box and the picture before preparation."""
    page = open_page(browser, mnist + "#view=unit&layer=conv2d_1&c=3&y=4&x=5", 1280, 800)
    page.wait_for_selector("#receptive-field", timeout=30_000)
    assert page.inner_text("#example-note") == "(mnist)"
    first = api(mnist, "api/examples?source=test&n=1")["examples"][0]["png"]
    assert page.get_attribute('#examples img[data-example="test:0"]', "src") == f"data:image/png;base64,{first}"
    assert page.evaluate("window.explorer.state.example") == "test:0"
    assert page.evaluate("window.explorer.state.prediction.notes.length") > 0
    assert page.locator("#raw-input").count() == 1
    screenshot(page, tmp_path, "unit-mnist", full_page=True)
    page.context.close()
    assert not page.errors, page.errors


def test_imported_onnx_model_with_a_concatenate_join(browser, onnx_model, tmp_path):
    """Concatenate stacks its inputs' maps: map k of the join is drawn from map k of the first branch (k < 4) or
    map k - 4 of the second; a link to a unit of the join opens it, with the forward pass's value."""
    page = open_page(browser, onnx_model, 1280, 800)
    page.wait_for_selector("svg.flow-lines path", state="attached")
    links = sorted(page.locator('svg.flow-lines path[data-dst^="concatenate#"]').evaluate_all(
        "ps => ps.map(p => p.dataset.src + '>' + p.dataset.dst)"))
    assert links == sorted([f"conv2d#{k}>concatenate#{k}" for k in range(4)] +
                           [f"conv2d_1#{k}>concatenate#{k + 4}" for k in range(4)])
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    screenshot(page, tmp_path, "overview-onnx")
    page.evaluate("location.hash = '#view=unit&layer=concatenate&c=6&y=10&x=12'")
    page.wait_for_function("document.querySelector('#unit-equation')?.dataset.layer === 'concatenate'", timeout=20_000)
    assert abs(float(page.get_attribute("#unit-equation", "data-model-value")) - activation(page, "concatenate", 6, 10, 12)) < 1e-6
    assert abs(activation(page, "concatenate", 6, 10, 12) - activation(page, "conv2d_1", 2, 10, 12)) < 1e-6
    page.context.close()
    assert not page.errors, page.errors
