"""``cnnlab explain features``: feature maps, layer statistics, filters and their evolution."""
import html as html_mod
import json
import re

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

import cnnlab
from cnnlab._io import CnnlabFileError, write_json
from cnnlab.datasets import load_shapes
from cnnlab.analysis import layers as AL, texts
from cnnlab.explain import features as F
from cnnlab.explain import subject as SUB
from cnnlab.runs import make_config

SHAPES = {"n_train": 300, "n_test": 40, "seed": 0}


def assert_self_contained(html):
    """Pictures inlined as data URIs; nothing fetched from a server or the network."""
    assert "data:image/png;base64," in html
    for attr in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html):
        assert attr.startswith(("data:", "#")), attr
    assert "http://" not in html and "https://" not in html
    assert "url(" not in html


@pytest.fixture(scope="module")
def trained():
    (x, y), (xt, yt) = load_shapes(**SHAPES)
    model, snaps = SUB.train_demo_model((x, y), (28, 28, 1), 10, epochs=1, seed=0, frames=5)
    return model, snaps, (xt, yt)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, trained):
    model, snaps, _ = trained
    d = tmp_path_factory.mktemp("run")
    model.save(d / "model.safetensors")
    write_json(d / "config.json", make_config(dataset="shapes", dataset_options=SHAPES, epochs=1))
    save_file({f"step_{s:07d}": np.ascontiguousarray(k) for s, k in snaps.items()}, str(d / "filters.safetensors"))
    return d


def test_feature_maps_are_each_layers_output(trained):
    model, _, (xt, _) = trained
    maps = AL.feature_maps(model, xt[3])
    assert [layer.name for layer, _ in maps] == [layer.name for layer in model.layers]
    h = xt[3:4]
    for (layer, a), ref in zip(maps, model.layers):
        h = ref.forward(h)
        assert a.shape == layer.output_shape
        np.testing.assert_allclose(a, h[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(maps[-1][1], model.logits(xt[3:4])[0], rtol=1e-5, atol=1e-5)


def test_layer_statistics():
    layer = cnnlab.layers.ReLU(name="r")
    a = np.array([[[0.0, 2.0], [0.0, 4.0]]])
    s = AL.statistics(layer, a)
    assert s == {"name": "r", "type": "ReLU", "output_shape": [1, 2, 2], "min": 0.0, "max": 4.0, "mean": 1.5,
                 "fraction_zero": 0.5}


def test_explain_features_from_a_run(tmp_path, run_dir, trained):
    model, snaps, (xt, _) = trained
    out = tmp_path / "out"
    r = F.explain_features(out, model=run_dir, index=2)
    loaded = cnnlab.load(run_dir)
    # the numbers are those of the model on test image 2 of the run's dataset
    maps = AL.feature_maps(loaded, xt[2])
    assert len(r["layers"]) == len(loaded.layers)
    for s, (layer, a) in zip(r["layers"], maps):
        assert s["name"] == layer.name and s["output_shape"] == list(a.shape)
        assert s["min"] == pytest.approx(float(a.min()), abs=1e-6)
        assert s["max"] == pytest.approx(float(a.max()), abs=1e-6)
        assert s["mean"] == pytest.approx(float(a.mean()), abs=1e-6)
        assert s["fraction_zero"] == pytest.approx(float(np.mean(a == 0)))
        assert (out / s["png"]).is_file()
    probs = loaded.predict(xt[2:3])[0]
    assert r["prediction"]["class"] == int(probs.argmax())
    assert r["prediction"]["probability"] == pytest.approx(float(probs.max()), rel=1e-5)
    assert r["image"]["source"] == "test image #2 of shapes"
    # filters and their evolution: one GIF frame per snapshot, in step order
    assert r["filters"]["shape"] == list(loaded["conv2d"].params["kernel"].shape)
    assert r["filters"]["described"] == F.describe_filters(loaded["conv2d"].params["kernel"])  # this model's filters
    assert r["evolution"]["steps"] == sorted(snaps)
    with Image.open(out / "filters_evolution.gif") as gif:
        assert gif.n_frames == len(snaps)
        first = np.asarray(gif.convert("RGB"))
        gif.seek(gif.n_frames - 1)
        assert not np.array_equal(first, np.asarray(gif.convert("RGB")))
    saved = json.loads((out / "features.json").read_text())
    assert saved.keys() == r.keys() and saved["prediction"]["class"] == r["prediction"]["class"]
    assert [s["mean"] for s in saved["layers"]] == pytest.approx([s["mean"] for s in r["layers"]], abs=1e-9)
    for name in r["files"]:
        assert (out / name).is_file(), name
    with Image.open(out / "filters.png") as im:
        assert im.size[0] > 200 and im.size[1] > 100
    html = (out / "features.html").read_text()
    assert html_mod.escape(texts.filters_caption(r["filters"]["described"])) in html
    assert_self_contained(html)
    assert "data:image/gif;base64," in html
    for s in r["layers"]:
        assert s["name"] in html


def test_user_image_is_read_at_the_model_input_and_inverted_when_light(tmp_path, trained):
    model, _, _ = trained
    img = np.full((56, 56), 255, np.uint8)       # a dark cross on white paper
    img[26:30, 8:48] = 0
    img[8:48, 26:30] = 0
    Image.fromarray(img).save(tmp_path / "cross.png")
    x = SUB.prepare_image(tmp_path / "cross.png", (28, 28, 1), center="no")
    assert x.shape == (28, 28, 1) and x.dtype == np.float32
    assert x[0, 0, 0] == 0.0 and x[14, 14, 0] > 0.95             # inverted: light strokes on black
    assert SUB.prepare_image(tmp_path / "cross.png", (28, 28, 1), invert="no", center="no")[0, 0, 0] == 1.0
    r = F.explain_features(tmp_path / "out", model=model, image=tmp_path / "cross.png", center="no")
    probs = model.predict(x[None])[0]
    assert r["prediction"]["class"] == int(probs.argmax())
    assert r["image"]["label"] is None and r["evolution"] is None   # no snapshots for a bare model


def test_filter_snapshot_errors(tmp_path, trained):
    model, _, _ = trained
    save_file({"weights": np.zeros((5, 5, 1, 8), np.float32)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CnnlabFileError, match="step_0000000"):
        SUB.read_filter_snapshots(tmp_path / "bad.safetensors")
    save_file({"step_0000000": np.zeros((3, 3, 1, 2), np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CnnlabFileError, match="another model"):
        F.explain_features(tmp_path / "out", model=model, snapshots=tmp_path / "other.safetensors",
                           dataset="shapes")
    with pytest.raises(CnnlabFileError, match="filter snapshot file .*missing.safetensors does not exist"):
        SUB.read_filter_snapshots(tmp_path / "missing.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(CnnlabFileError, match="garbage.safetensors is not a readable safetensors file"):
        SUB.read_filter_snapshots(tmp_path / "garbage.safetensors")


def test_no_model_trains_the_demo_model_and_records_its_filters(tmp_path):
    r = F.explain_features(tmp_path / "out", dataset="shapes", index=1)
    assert "tiny_cnn trained now" in r["model"]
    html = (tmp_path / "out" / "features.html").read_text()
    assert "Data: <b>shapes</b>" in html and "digit" not in html.lower()
    assert (tmp_path / "out" / "filters_change.png").is_file()
    ev = r["evolution"]
    assert len(ev["relative_change_per_filter"]) == 8 and ev["steps"][0] <= ev["half_step"] <= ev["steps"][-1]
    assert f"moved by {ev['relative_change']:.0%} of their initial size" in html
    assert r["evolution"]["steps"][0] == 0 and len(r["evolution"]["steps"]) >= 8
    # how far training moved the filters, measured by benchmarks/measure_thresholds.py (seeds 0-4 x compiled loops
    # on/off x OpenBLAS kernels; benchmarks/README.md): 0.349-0.415; threshold 0.2 (margin 0.15)
    assert r["evolution"]["relative_change"] > 0.2


def test_cli(tmp_path, run_dir, capsys):
    from cnnlab.cli import main
    assert main(["explain", "features", "--model", str(run_dir), "--index", "1", "--max-maps", "4",
                 "--out", str(tmp_path / "cli")]) == 0
    assert "features.html" in capsys.readouterr().out
    r = json.loads((tmp_path / "cli" / "features.json").read_text())
    assert r["image"]["source"] == "test image #1 of shapes"


def write_idx(path, array):
    """An uncompressed IDX file: magic (0, 0, 0x08 = uint8, ndim), big-endian int32 sizes, the bytes."""
    a = np.asarray(array, np.uint8)
    path.write_bytes(bytes([0, 0, 8, a.ndim]) + np.array(a.shape, ">i4").tobytes() + a.tobytes())


def test_default_subject_is_mnist_when_at_hand_else_shapes(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))      # an empty cache
    monkeypatch.chdir(tmp_path)                                          # no ./data
    (x, y), (xt, yt) = load_shapes(n_train=120, n_test=30, seed=1)     # stand-ins for digits, in MNIST's files
    folder = tmp_path / "d" / "mnist"
    folder.mkdir(parents=True)
    for prefix, images, labels in (("train", x, y), ("t10k", xt, yt)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", (images[..., 0] * 255).round())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    assert SUB.default_data(tmp_path / "d") == ("mnist", tmp_path / "d")
    assert SUB.default_data(tmp_path / "empty") == ("shapes", tmp_path / "empty")
    assert SUB.default_data()[0] == "shapes"
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "d"))
    assert SUB.default_data()[0] == "mnist"
    (xtr, ytr), (xte, yte), info = SUB.load_data(None, n_train=50, n_test=7)
    assert info["name"] == "mnist" and len(xtr) == 50 and len(xte) == 7
    np.testing.assert_array_equal(ytr, y[:50])                         # the first examples, in file order
    np.testing.assert_allclose(xte, (xt[:7] * 255).round() / 255, atol=1e-6)
    r = F.explain_features(tmp_path / "out", index=2)
    assert "120 mnist images" in r["model"] and r["image"]["source"] == "test image #2 of mnist"
    assert "Data: <b>mnist</b>" in (tmp_path / "out" / "features.html").read_text()
