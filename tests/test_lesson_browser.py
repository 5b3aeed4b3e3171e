"""The lesson in a real browser: Playwright driving Debian's chromium against ``cnnlab serve``.

Every step is walked on four models (an MNIST-format LeNet-5 trained on an IDX fixture written here, the
default shapes subject, ``resnet8``, a PyTorch network imported through ONNX): no error, the right heading,
and the numbers the page holds for the step equal the server's for the same input (the steps' own tests
recompute those numbers independently). Every figure kind is drawn from a hand-written step served by a
route of the test's browser (never by the package). With ``CNNLAB_SCREENSHOTS=dir`` every step of the
default model is saved as ``lesson-NN-<id>.png``.
"""
import json
import math
import os
import urllib.parse
from pathlib import Path

import pytest

from test_serve_browser import (api, browser, mnist, onnx_model, open_page, resnet, server,  # noqa: F401 (fixtures)
                                settled, tab_reaches_every_visible_control, touch_stroke)

pytestmark = pytest.mark.slow                   # a browser and servers: run by CI, skipped by -m "not slow"

QUERY = "?input=example&invert=auto&center=auto"


def wait_step(page, n):
    """Wait until step ``n`` is drawn (the step's answer arrived and nothing is pending)."""
    page.wait_for_function(f"(() => {{ const a = document.getElementById('lesson-step');"
                           f" return a && a.dataset.step === '{n}' && !a.hasAttribute('aria-busy'); }})()", timeout=30_000)


def page_blob(page):
    """The bytes of the page's current input, as it posts them."""
    b64 = page.evaluate("""async () => { const b = new Uint8Array(await window.explorer.state.blob.arrayBuffer());
        let s = ''; for (const c of b) s += String.fromCharCode(c); return btoa(s); }""")
    import base64
    return base64.b64decode(b64)


def api_step(page, url, n, blob):
    """Step ``n`` as the server answers it for ``blob``, asked with the page's cookie."""
    r = page.context.request.post(f"{url}api/lesson/{n}{QUERY}", data=blob, headers={"Content-Type": "image/png"})
    assert r.ok, r.text()
    return r.json()


def same_numbers(a, b):
    assert set(a) == set(b), (a, b)
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), (k, x, y)
        else:
            assert x == y, (k, x, y)


def fits(page):
    """The lesson needs no sideways scrolling: its view is as wide as its content (wide figures scroll in
    their own boxes)."""
    return page.evaluate("(() => { const v = document.getElementById('view-lesson');"
                         " return v.scrollWidth <= v.clientWidth + 1; })()")


def save(page, name):
    target = os.environ.get("CNNLAB_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)


def tried(page, url, figure, blob):
    """Try-it: stride 2 asks the server again; the sizes drawn are the route's for the same settings."""
    before = page.inner_text(".try-sizes")
    page.fill(".try-stride", "2")
    page.locator(".try-stride").dispatch_event("change")
    page.wait_for_function(f"document.querySelector('.try-sizes').textContent !== {json.dumps(before)}", timeout=30_000)
    options = {**figure.get("options", {}), "stride": 2}
    r = page.context.request.post(f"{url}api/lesson/try{QUERY}&{urllib.parse.urlencode(options)}", data=blob,
                                  headers={"Content-Type": "image/png"})
    assert r.ok, r.text()
    shown = json.loads(page.get_attribute(".try-sizes", "data-sizes"))
    assert shown["output"] == r.json()["sizes"]["output"] and shown["input"] == r.json()["sizes"]["input"]


def walk(page, url, shots=False):
    """Every step from 1 to N, by the Next button: checked against the outline and the server's numbers."""
    outline = api(url, "api/lesson")["steps"]
    assert [s["step"] for s in outline] == list(range(1, len(outline) + 1))
    assert page.locator("#lesson-steps a").count() == len(outline)
    wait_step(page, 1)
    settled(page)
    blob = page_blob(page)
    for s in outline:
        n = s["step"]
        wait_step(page, n)
        box = page.locator("#lesson-step")
        assert page.inner_text("#lesson-heading") == f"{n}. {s['title']}"
        assert page.locator("#lesson-step .error").count() == 0, page.inner_text("#lesson-step")
        assert page.locator('#lesson-steps a[aria-current="step"]').get_attribute("data-step") == str(n)
        assert f"step={n}" in page.evaluate("location.hash")
        # the numbers the page holds are the server's for the same input (the step's own tests check them)
        for attempt in range(5):
            shown = json.loads(box.get_attribute("data-numbers"))
            answer = api_step(page, url, n, blob)
            try:
                same_numbers(shown, answer["numbers"])
                break
            except AssertionError:            # a companion model became ready in between: the page shows it again
                if attempt == 4:
                    raise
                page.wait_for_timeout(2500)
                wait_step(page, n)
        # the step's schema (cnnlab/analysis/lesson/__init__.py)
        assert answer["id"] == s["id"] and answer["title"] == s["title"] and answer["count"] == len(outline)
        assert isinstance(answer["paragraphs"], list) and all(isinstance(p, str) for p in answer["paragraphs"])
        assert all(isinstance(k, str) for k in answer["numbers"])
        for f in answer["figures"]:
            assert isinstance(f, dict) and isinstance(f.get("kind"), str)
        if answer.get("link"):                      # the detailed view it summarises, as a link the page opens
            assert answer["link"]["view"] in ("unit", "overview", "why", "training")
            href = "#" + urllib.parse.urlencode({k: v for k, v in answer["link"].items() if v is not None})
            assert page.get_attribute("#lesson-step a.more", "href") == href
        if answer.get("predict"):
            assert 0 <= answer["predict"]["answer"] < len(answer["predict"]["choices"])
        if answer.get("applies") is False:
            assert answer["why_not"] and page.locator("#lesson-step p.not-applicable").count() >= 1
        if answer.get("predict"):                   # predict before the reveal: hidden until answered
            assert page.locator("#lesson-step .reveal").is_hidden()
            page.click("#lesson-step .choice >> nth=0")
            assert page.locator("#lesson-step .reveal").is_visible()
        shown_figures = page.locator("#lesson-step .lesson-figures > .lesson-figure")
        assert shown_figures.count() == len(answer["figures"])
        for k, f in enumerate(answer["figures"]):
            if f.get("alt"):                        # the text alternative, with the numbers, under each figure
                assert shown_figures.nth(k).locator(":scope > .alt").inner_text() == f["alt"]
        assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"], n
        assert fits(page), n
        for f in answer["figures"]:
            if f["kind"] == "tryit":
                tried(page, url, f, blob)
        if shots:
            save(page, f"lesson-{n:02d}-{s['id']}")
        if n < len(outline):
            page.click("#lesson-next")
    assert page.locator("#lesson-next").is_disabled()
    return outline


@pytest.mark.parametrize("which", ["server", "mnist", "resnet", "onnx_model"])
def test_every_step_on_four_models(browser, request, which):
    """No error, the right heading, the server's numbers; no horizontal scrolling at 1280x800."""
    url = request.getfixturevalue(which)
    page = open_page(browser, url + "#view=lesson&step=1", 1280, 800)
    walk(page, url, shots=which == "server")
    page.context.close()
    assert not page.errors, page.errors


def test_a_first_visit_opens_the_lesson_and_a_return_the_overview(browser, server):
    page = open_page(browser, server, 1280, 800, first_visit=True)
    page.wait_for_selector("#view-lesson.active")
    wait_step(page, 1)
    assert page.inner_text("#lesson-heading") == f"1. {api(server, 'api/lesson')['steps'][0]['title']}"
    page.goto(server)                               # the same browser again: where it left off is not forced
    page.wait_for_selector("#top-class", timeout=30_000)
    page.wait_for_selector("#view-overview.active")
    page.context.close()
    assert not page.errors, page.errors


def test_keys_links_and_history_walk_the_steps(browser, server):
    n = len(api(server, "api/lesson")["steps"])
    page = open_page(browser, server + "#view=lesson&step=3", 1280, 800)
    wait_step(page, 3)                              # a deep link opens its step
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("ArrowRight")
    wait_step(page, 4)
    assert page.evaluate("location.hash").startswith("#view=lesson&step=4")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    wait_step(page, 2)
    page.evaluate("history.back()")                 # Back and Forward walk the steps
    wait_step(page, 3)
    page.evaluate("history.forward()")
    wait_step(page, 2)
    # Tab reaches the Next button and the steps' list; Enter uses them
    page.focus("#lesson-next")
    page.keyboard.press("Enter")
    wait_step(page, 3)
    page.focus(f'#lesson-steps a[data-step="{n}"]')
    page.keyboard.press("Enter")
    wait_step(page, n)
    assert page.locator("#lesson-next").is_disabled() and page.locator("#lesson-back").is_enabled()
    page.evaluate("document.activeElement && document.activeElement.blur()")
    for _ in range(60):                            # keyboard alone: Tab from the top reaches the steps' links
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('#lesson-steps') !== null"):
            break
    else:
        raise AssertionError("Tab never reached the steps' list")
    page.context.close()
    assert not page.errors, page.errors


def test_phone_reads_the_lesson_and_touch_drawing_recomputes_the_step(browser, server):
    page = open_page(browser, server + "#view=lesson&step=2", 390, 844, has_touch=True, is_mobile=True)
    wait_step(page, 2)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.locator("#lesson-heading").bounding_box()["width"] <= 390
    page.evaluate("document.getElementById('lesson-heading').dataset.old = '1'")
    touch_stroke(page, 0.3)
    page.wait_for_function("window.explorer.state.source === 'drawing'")
    settled(page)
    page.wait_for_function("!document.getElementById('lesson-heading').dataset.old", timeout=30_000)   # drawn again
    wait_step(page, 2)
    save(page, "lesson-phone")
    for n in range(3, len(api(server, "api/lesson")["steps"]) + 1):     # every step reads at phone width
        page.click("#lesson-next")
        wait_step(page, n)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, n
        assert fits(page), n
        assert page.locator("#lesson-step .error").count() == 0
    page.context.close()
    assert not page.errors, page.errors


# ---------------------------------------------------------------------------
# Every figure kind, from a hand-written step (the package's steps come and go; the kinds stay)
# ---------------------------------------------------------------------------
def packed(a):
    import numpy as np
    a = np.asarray(a, np.float32)
    return {"shape": list(a.shape), "min": float(a.min()), "max": float(a.max()), "data": a.tolist()}


def tried_answer(n, m):
    """What the try route answers (hand-written): the input, the kernel, the output and the pooled map."""
    import numpy as np
    return {"input": packed(np.zeros((28, 28))), "kernel": packed([[-1, 0, 1]] * 3), "output": packed(np.ones((n, n))),
            "pooled": packed(np.ones((m, m))), "sizes": {"input": [28, 28], "output": [n, n], "pooled": [m, m]}}


def fixture_step(model):
    import numpy as np
    rng = np.random.default_rng(0)
    conv = next(layer for layer in model["layers"] if layer["class"] == "Conv2D")
    p = np.full(6, 1 / 6)
    density = np.convolve(p, p)                      # two dice: the triangle, 2..12
    products = np.array([[p[k] * p[s - k] if 0 <= s - k < 6 else 0.0 for k in range(6)] for s in range(11)])
    return {"step": 1, "count": 1, "id": "fixture", "title": "Every figure kind", "questions": ["Q1"], "applies": True,
            "paragraphs": ["A hand-written step."], "numbers": {"sum": 1.5, "count": 3}, "link": {"view": "overview"},
            "predict": {"question": "Which?", "choices": ["this", "that"], "answer": 1, "reveal": "That one."},
            "figures": [
                {"kind": "maps", "signed": True, "alt": "two maps", "items": [
                    {"label": "first", "map": packed(rng.normal(size=(24, 24)))},
                    {"label": "second", "map": packed(rng.normal(size=(24, 24)))}]},
                {"kind": "curve", "x": [0, 45, 90, 135], "xlabel": "angle", "ylabel": "response", "alt": "a curve",
                 "series": [{"name": "filter 0", "y": [1, 2, 3, 2]}, {"name": "filter 1", "y": [3, 1, 0.5, 1]}]},
                {"kind": "table", "header": ["layer", "parameters"], "rows": [["conv", 156], ["dense", 9800]], "alt": "a table"},
                {"kind": "grid", "values": packed([[0.25, -1.5], [2.0, 0.125]]), "label": "kernel", "alt": "a grid"},
                {"kind": "bars", "labels": ["a", "b", "c"], "values": [0.2, 0.5, 0.3], "alt": "bars"},
                {"kind": "stepper", "layer": conv["name"], "channel": 1, "alt": "the stepping window"},
                {"kind": "slide", "x": list(range(1, 7)), "p": p.tolist(), "q": p.tolist(), "z": list(range(2, 13)),
                 "products": packed(products), "result": density.tolist(), "p_label": "first die",
                 "q_label": "second die (flipped and slid)", "result_label": "sum of two dice", "alt": "two dice"},
                {"kind": "tryit", "kernels": ["edge", "blur", "sharpen", "custom", "trained:K"],
                 "limits": {"size": [1, 9], "stride": [1, 4], "dilation": [1, 4], "pool": [0, 4]},
                 "options": {"kernel": "edge", "size": 3, "stride": 1, "padding": "valid", "dilation": 1, "pool": 2},
                 "route": "/api/lesson/try", **tried_answer(26, 13), "alt": "try it"},
                {"kind": "no-such-kind", "alt": "an unknown kind"}]}


def test_every_figure_kind_is_drawn_from_the_servers_numbers(browser, server):
    page = open_page(browser, server + "#view=overview", 1280, 800)
    settled(page)
    step = fixture_step(page.evaluate("window.explorer.state.model"))
    tried = []

    def route(r):
        if "/api/lesson/try" in r.request.url:
            tried.append(r.request.url)
            return r.fulfill(json={**tried_answer(13, 6), "paragraphs": ["Stride 2 halves the output."]})
        return r.fulfill(json=step)
    page.route(lambda url: "/api/lesson/" in url, route)
    page.evaluate("location.hash = '#view=lesson&step=1'")
    wait_step(page, 1)
    figs = page.locator("#lesson-step .lesson-figures > .lesson-figure")
    assert figs.count() == len(step["figures"])
    assert page.locator("#lesson-step .reveal").is_hidden()          # predict first
    page.click("#lesson-step .choice >> nth=0")
    assert "the answer is “that”" in page.inner_text("#lesson-step .reveal-text")
    assert json.loads(page.get_attribute("#lesson-step", "data-numbers")) == step["numbers"]
    # maps: each labelled, at a legible size, with the colour scale
    assert page.locator(".fig-maps figcaption").all_inner_texts() == ["first", "second"]
    assert all(b["width"] >= 90 for b in (c.bounding_box() for c in page.locator(".fig-maps canvas").all()))
    assert page.locator(".fig-maps .legend").count() == 1
    # curve, table, bars: every point, row and value
    assert page.locator(".fig-curve circle.pt").count() == 8
    assert page.locator(".fig-table td").all_inner_texts() == ["conv", "156", "dense", "9,800"]
    assert page.locator(".fig-bars .value").all_inner_texts() == ["20.0%", "50.0%", "30.0%"]
    # grid: the numbers readable
    assert page.locator(".fig-grid td").all_inner_texts() == ["0.250", "-1.500", "2.000", "0.125"]
    assert float(page.locator(".fig-grid td >> nth=0").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")) >= 11
    # stepper: the unit details view's window on the served layer, its numbers the forward pass's
    page.wait_for_selector("#lesson-unit-equation", timeout=20_000)
    eq = page.locator("#lesson-unit-equation")
    assert eq.get_attribute("data-layer") == step["figures"][5]["layer"] and eq.get_attribute("data-channel") == "1"
    assert abs(float(eq.get_attribute("data-value")) - float(eq.get_attribute("data-model-value"))) < 1e-4
    page.click("#lesson-unit-next")
    page.wait_for_function("document.querySelector('#lesson-unit-equation').dataset.x === '1'")
    # slide: at each shift the products and their sum are the server's arrays
    slide = step["figures"][6]
    for s in (0, 5, 9):
        page.locator(".slide-shift").fill(str(s))
        text = page.locator(".slide-sum")
        assert float(text.get_attribute("data-value")) == pytest.approx(slide["result"][s], rel=1e-6)
        assert text.inner_text().startswith(f"(p ∗ q)({slide['z'][s]}) = ")
        assert text.inner_text().count(" + ") + 1 == sum(1 for v in slide["products"]["data"][s] if v)   # one per overlap
    page.click(".slide-play")
    page.wait_for_function("document.querySelector('.slide-sum').dataset.shift === '10'", timeout=15_000)
    # tryit: the figure's own arrays first; the controls post to the try route with the current input
    assert page.locator(".try-output canvas").count() == 4 and not tried
    assert page.inner_text(".try-sizes") == "input 28×28 → output 26×26 → pooled 13×13"
    assert page.locator(".try-kernel option").count() == 4 + page.evaluate(
        "window.explorer.state.model.layers.find(l => l.class === 'Conv2D').output_shape[2]")
    page.select_option(".try-kernel", "custom")
    page.fill(".try-values", "1 0 -1  2 0 -2  1 0 -1")
    page.fill(".try-stride", "2")
    n = len(tried)
    page.click(".try-run")
    for _ in range(50):
        if len(tried) > n:
            break
        page.wait_for_timeout(100)
    last = tried[-1]
    page.wait_for_function("document.querySelector('.try-sizes').textContent.includes('output 13×13')")
    assert "Stride 2 halves" in page.inner_text(".try-output")
    assert "kernel=custom" in last and "stride=2" in last and "values=1%2C0%2C-1%2C2%2C0%2C-2%2C1%2C0%2C-1" in last, last
    for name in ("size", "padding", "dilation", "pool"):
        assert f"{name}=" in last
    # the unknown kind: a placeholder, and every figure's text alternative
    assert "(a figure of kind no-such-kind)" in figs.nth(8).inner_text()
    assert figs.locator(":scope > .alt").all_inner_texts() == [f["alt"] for f in step["figures"]]
    assert page.locator("#lesson-step a.more").get_attribute("href") == "#view=overview"
    tab_reaches_every_visible_control(page)         # keyboard alone: every control of every figure
    save(page, "lesson-figure-kinds")
    page.context.close()
    assert not page.errors, page.errors


def test_companions_progress_is_shown_and_the_step_redrawn_when_one_is_ready(browser, server):
    states = [{"mlp": {"status": "training", "message": "training on 2000 images", "progress": 0.4}},
              {"mlp": {"status": "ready", "message": "ready", "progress": 1.0}}]
    asked, posted = [], []

    def outline(r):
        if r.request.method == "GET":
            real = json.loads(r.fetch().text())
            real["companions"] = states[min(len(asked), 1)]
            asked.append(1)
            return r.fulfill(json=real)
        posted.append(r.request.url)
        return r.continue_()
    page = open_page(browser, server + "#view=overview", 1280, 800)
    page.route(lambda url: "/api/lesson" in url and "/api/lesson/try" not in url, outline)
    page.reload()
    page.wait_for_selector("#top-class", timeout=30_000)
    page.evaluate("location.hash = '#view=lesson&step=1'")
    wait_step(page, 1)
    assert page.locator('#lesson-companions .companion[data-name="mlp"] progress').count() == 1
    assert "40%" in page.inner_text("#lesson-companions")
    before = len(posted)
    page.wait_for_selector('#lesson-companions .companion[data-status="ready"]', timeout=15_000)
    page.wait_for_function("!document.getElementById('lesson-step').hasAttribute('aria-busy')")
    page.wait_for_timeout(300)
    assert len(posted) > before                    # the step was asked again once the companion was ready
    n = len(asked)
    page.wait_for_timeout(3000)
    assert len(asked) == n                         # nothing trains: no more polling
    page.context.close()
    assert not page.errors, page.errors
