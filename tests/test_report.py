"""``cnnlab report RUN_DIR``: a self-contained page whose numbers match the model and the run's files."""
import html as html_mod
import json
import re

import numpy as np
import pytest

from cnnlab._io import CnnlabFileError, write_json
from cnnlab.datasets import load_shapes
from cnnlab.explain import report as R
from cnnlab.callbacks import FilterSnapshots
from cnnlab.analysis.texts import filters_caption
from cnnlab.explain.features import describe_filters
from cnnlab.explain.subject import demo_model
from cnnlab.runs import files, make_config
from cnnlab.optim import Adam

SHAPES = {"n_train": 300, "n_test": 80, "seed": 0}


def page_data(text):
    """The numbers the page embeds as JSON."""
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    assert m, "no embedded report data"
    return json.loads(m.group(1).replace("<\\/", "</"))


def assert_self_contained(text):
    assert "data:image/png;base64," in text
    for attr in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text):
        assert attr.startswith(("data:", "#")), attr
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "url(" not in text


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory written with cnnlab's own functions: model, config, history, state, filter snapshots."""
    (x, y), (xt, yt) = load_shapes(**SHAPES)
    model = demo_model((28, 28, 1), 10, seed=0)
    snaps = FilterSnapshots(every=8, layer=model["conv2d"])
    history = model.fit(x, y, epochs=2, batch_size=32, optimizer=Adam(lr=2e-3), verbose=0, callbacks=[snaps],
                        validation_data=(xt[:20], yt[:20]))
    d = tmp_path_factory.mktemp("run")
    model.save(d / "model.safetensors")
    model.save(d / "last.safetensors")
    files.write_architecture(d, model)
    files.write_config(d, make_config(dataset="shapes", dataset_options=SHAPES, model="tiny_cnn", epochs=2,
                                      batch_size=32, seed=0, optimizer={"name": "adam", "lr": 0.002}))
    files.write_history(d, history, plot=False)
    files.write_state(d, {"epoch": 2, "step": 20, "rng_state": model.rng.bit_generator.state, "best_metric": None,
                          "best_epoch": 2, "split_seed": 0, "status": "completed"})
    files.write_filter_snapshots(d, snaps)
    return d, model, (xt, yt), history, snaps.snapshots


def test_report_without_evaluation_computes_the_confusion_matrix(run):
    d, model, (xt, yt), history, snaps = run
    path = R.write_report(d)
    assert path == d / "report.html"
    text = path.read_text()
    assert_self_contained(text)
    data = page_data(text)
    probs = model.predict(xt)
    pred = probs.argmax(1)
    expected = np.zeros((10, 10), int)
    np.add.at(expected, (yt, pred), 1)
    assert data["confusion_matrix"] == expected.tolist()
    assert data["accuracy"] == pytest.approx(float(np.mean(pred == yt)))
    assert "computed now" in data["confusion_source"]
    # the most confident mistakes: wrong, and in decreasing order of confidence
    ms = data["mistakes"]
    assert len(ms) == min(15, int(np.sum(pred != yt)))
    for m in ms:
        assert m["true"] == yt[m["index"]] != m["predicted"] == pred[m["index"]]
        assert m["probability"] == pytest.approx(float(probs[m["index"]].max()), rel=1e-5)
    assert [m["probability"] for m in ms] == sorted((m["probability"] for m in ms), reverse=True)
    # history, filters, summary and config are on the page
    assert data["history"]["loss"] == pytest.approx(history["loss"])
    assert data["filter_snapshots"] == sorted(snaps)
    unescaped = html_mod.unescape(text)
    assert model.summary(print_fn=None) in unescaped
    assert "tiny_cnn" in unescaped and "Training curves" in text and "Most confident mistakes" in text
    assert text.count("data:image/png;base64,") >= 6 + len(snaps)   # pictures plus one player frame per snapshot
    for name in SHAPES:
        assert name in unescaped


def test_report_uses_evaluation_json_when_present(run, tmp_path):
    d, model, _, _, _ = run
    rd = tmp_path / "run"
    rd.mkdir()
    for f in d.iterdir():
        if f.name != "report.html":
            (rd / f.name).write_bytes(f.read_bytes())
    matrix = np.diag(np.full(10, 7)).tolist()
    matrix[3][5] = 2
    write_json(rd / "evaluation.json", {"accuracy": 70 / 72, "num_images": 72, "confusion_matrix": matrix,
                                        "class_names": [f"c{i}" for i in range(10)]})
    data = page_data(R.write_report(rd, out=tmp_path / "page.html").read_text())
    assert data["confusion_matrix"] == matrix and "evaluation.json" in data["confusion_source"]
    assert data["class_names"][3] == "c3"
    assert not (rd / "report.html").exists()
    # --limit evaluates the first N test images instead
    assert R.write_report(rd, out=tmp_path / "limited", limit=25) == tmp_path / "limited" / "report.html"
    data = page_data((tmp_path / "limited" / "report.html").read_text())
    assert sum(map(sum, data["confusion_matrix"])) == 25 and data["evaluated"]["num_images"] == 25


def test_report_of_a_bare_run_and_errors(run, tmp_path):
    d, _, _, _, _ = run
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes())
    text = R.write_report(bare).read_text()
    assert_self_contained(text)
    assert "history.json is missing" in text and "config.json is missing" in text
    assert "confusion_matrix" not in page_data(text)
    data = page_data(R.write_report(bare, dataset="shapes", limit=30).read_text())  # evaluate on demand
    assert sum(map(sum, data["confusion_matrix"])) == 30
    with pytest.raises(CnnlabFileError, match="does not exist"):
        R.write_report(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CnnlabFileError, match="model.safetensors"):
        R.write_report(empty)
    with pytest.raises(ValueError, match="limit"):
        R.write_report(d, out=tmp_path / "x.html", limit=0)


def test_cli(run, tmp_path, capsys):
    from cnnlab.cli import main
    d = run[0]
    assert main(["report", str(d), "--limit", "40", "--out", str(tmp_path / "cli.html")]) == 0
    assert "cli.html" in capsys.readouterr().out
    assert page_data((tmp_path / "cli.html").read_text())["evaluated"]["num_images"] == 40
    assert main(["report", str(tmp_path / "missing")]) != 0


def test_mistake_captions_are_readable(run):
    _, model, (xt, yt), _, _ = run
    probs = model.predict(xt)
    idx = R.confident_mistakes(probs, yt, 6)
    names = [f"class {i}" for i in range(10)]
    fig = R.plot_mistakes(xt, yt, probs, idx, names)
    assert len(fig.axes) == len(idx) > 0
    for ax, i in zip(fig.axes, idx):
        label = ax.xaxis.label
        p = int(probs[i].argmax())
        assert label.get_fontsize() >= 9
        assert label.get_text() == f"true: {names[yt[i]]}\npred: {names[p]} ({probs[i, p]:.1%})"


def crafted_report(tmp_path, kernel):
    """The report of a bare run whose first convolution has the given filters (5, 5, 1, 8)."""
    model = demo_model((28, 28, 1), 10, seed=0)
    model["conv2d"].params["kernel"][...] = kernel
    d = tmp_path / "run"
    d.mkdir()
    model.save(d / "model.safetensors")
    text = R.write_report(d).read_text()
    return page_data(text)["first_layer_filters"], html_mod.unescape(text)


def test_filter_caption_of_vertical_edges(tmp_path):
    rng = np.random.default_rng(0)
    across = np.array([-2.0, -1, 0, 1, 2])                    # dark on the left, bright on the right, every row
    signs, scales = rng.choice([-1, 1], 8), rng.uniform(0.2, 1.0, 8)
    kernel = np.stack([s * a * np.tile(across, (5, 1)) for s, a in zip(signs, scales)], axis=-1)[:, :, None, :]
    kernel += rng.normal(0, 0.03, kernel.shape)
    described, page = crafted_report(tmp_path, kernel)
    assert [f["kind"] for f in described["filters"]] == ["edge"] * 8
    assert {f["direction"] for f in described["filters"]} == {"vertical"}
    caption = filters_caption(described)
    assert "8 oriented edges (8 vertical)" in caption and caption in page
    assert "horizontal" not in caption and "no clear" not in caption
    # the same filters turned by 90 degrees are horizontal edges
    assert filters_caption(describe_filters(np.rot90(kernel, axes=(0, 1)))).count("8 horizontal") == 1


def test_filter_caption_of_horizontal_bars_and_of_random_filters(tmp_path):
    rng = np.random.default_rng(1)
    down = np.array([-1.0, -1, 4, -1, -1])[:, None]           # a bright line along the middle row
    kernel = np.stack([a * np.tile(down, (1, 5)) for a in rng.uniform(0.2, 1.0, 8)], axis=-1)[:, :, None, :]
    described, page = crafted_report(tmp_path, kernel + rng.normal(0, 0.03, kernel.shape))
    assert [(f["kind"], f["direction"]) for f in described["filters"]] == [("bar", "horizontal")] * 8
    assert "8 oriented bars (8 horizontal)" in page and "vertical" not in filters_caption(described)
    noise = describe_filters(rng.normal(size=(5, 5, 1, 8)))  # random filters: mostly no clear shape
    caption = filters_caption(noise)
    none = sum(f["kind"] == "none" for f in noise["filters"])
    assert none >= 6 and f"{none} with no clear edge, bar or blob" in caption and "8 oriented" not in caption
    # a blob: all weights of one sign, largest in the middle
    y, x = np.mgrid[-2:3, -2:3]
    blob = describe_filters(np.exp(-(x ** 2 + y ** 2) / 3.0)[:, :, None, None] * np.array([1.0, -1.0]))
    assert [f["kind"] for f in blob["filters"]] == ["bright blob", "dark blob"]
