"""``cnnlab explain all``: every tool on one model, and the index page that leads through them."""
import re

import numpy as np
import pytest

from cnnlab.analysis.lesson import outline
from cnnlab.explain import index as X
from cnnlab.explain.common import esc

SMALL = {"subject": {"n_train": 300, "epochs": 1},
         "weight-sharing": {"n_train": 200, "n_test": 60, "epochs": 1, "image_size": 16, "demo_size": 6},
         "matched-filter": {"n_samples": 30, "top_k": 2},
         "invariance": {"n_train": 200, "n_test": 40, "epochs": 1, "max_shift": 2, "max_degrees": 10,
                        "canvas": False},
         "saliency": {"stride": 4, "smooth_samples": 4}}


@pytest.mark.slow
def test_index_page_leads_from_how_to_why_to_what(tmp_path):
    r = X.explain_all(tmp_path, dataset="shapes", options=SMALL)
    html = (tmp_path / "index.html").read_text()
    # the lesson's steps, in the lesson's order, each under its own number and title
    steps = {s["id"]: s for s in outline()}
    headings = [f"Step {steps[i]['step']}: {steps[i]['title']}" for i in
                ("convolution", "maps", "sharing", "matched", "invariance", "looks")]
    at = [html.index(esc(h)) for h in headings]
    assert at == sorted(at)
    assert "Steps 1, 2, 4, 8, 9, 10, 11 and 14 are in the explorer&#x27;s lesson only" in html
    links = re.findall(r'href="([^"]+)"', html)
    assert sorted(links) == sorted(["conv/conv.html", "features/features.html", "weight-sharing/weight_sharing.html",
                                    "matched-filter/matched_filter.html", "invariance/invariance.html",
                                    "saliency/saliency.html"])
    for link in links:
        assert (tmp_path / link).is_file(), link
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]+)"', html))
    # one model for every tool, named on the page with its data; no word that belongs to another dataset
    desc = r["features"]["model"]
    assert desc.startswith("tiny_cnn trained now on 300 shapes images")
    assert r["saliency"]["model"] == r["matched-filter"]["model"] == desc
    assert r["invariance"]["models"]["cnn"]["description"] == desc
    assert desc in html and "<b>shapes</b>" in html and "digit" not in html.lower()
    assert r["weight-sharing"]["training"]["dataset"] == r["invariance"]["dataset"] == "shapes"
    # the numbers quoted are the tools' own
    ws = r["weight-sharing"]
    assert f"reaches {100 * ws['accuracy']['conv']:.1f}%" in html
    inv = r["invariance"]
    assert f"{100 * inv['accuracy']['cnn'][-1]:.1f}% of the time by this CNN" in html
    cos = [f["mean_top_cosine"] for f in r["matched-filter"]["filters"]]
    assert f"between {np.min(cos):.2f} and {np.max(cos):.2f}" in html
    # the "why" of the convolution step: edge kernels on the subject's own test image, with their measured numbers
    edges = r["conv"]["edges"]
    assert edges["dataset"] == "shapes" and "hand-made edge kernels slid over test image #0 of shapes" in html
    assert html.index("edge kernels on a real picture") < html.index(esc(headings[1]))
    for k in edges["kernels"]:
        assert f"{100 * k['on_border']:.1f}% of the strong responses of the kernel for {k['name']}" in html


def test_every_page_belongs_to_a_lesson_step_and_comes_in_the_lessons_order():
    steps = outline()
    order = X.lesson_order()
    assert [t for t, _ in order] == sorted(X.TOOLS, key=lambda t: [s["id"] for s in steps].index(X.LESSON_STEP[t]))
    assert [s["step"] for _, s in order] == sorted(s["step"] for _, s in order)
    assert {t for t, _ in order} == set(X.TOOLS)
    assert [s["id"] for _, s in order] == ["convolution", "maps", "sharing", "matched", "invariance", "looks"]
