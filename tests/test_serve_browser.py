"""The explorer in a real browser: Playwright driving Debian's chromium against ``cnnlab serve`` on a free port.

Every test saves a screenshot of its view (under the test's temporary folder, and in
``$CNNLAB_SCREENSHOTS`` when set: the README's pictures are made this way).
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``cnnlab serve`` with no model: it trains the default subject first (shapes here: about a minute), then serves it."""
    runs_dir = tmp_path_factory.mktemp("runs")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", "--port", str(port), "--runs", str(runs_dir)],
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
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    page.wait_for_selector("#top-class", timeout=30_000)
    yield page
    page.close()
    assert not errors, errors


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
    page.click('.layer[data-layer="conv2d_1"] canvas >> nth=3', position={"x": 9, "y": 13})
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
    assert page.locator("#train-filters canvas").count() == 8
    screenshot(page, tmp_path, "training")


def test_uploading_a_non_image_shows_the_message(page, tmp_path):
    page.set_input_files("#upload", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"just text"}])
    page.wait_for_function("document.querySelector('#input-error').textContent.length > 0")
    assert "not a picture" in page.inner_text("#input-error")
    screenshot(page, tmp_path, "upload-error")
