"""Convolution as template matching: the response peak is at the planted template; top patches are right."""
import argparse
import json
import re

import numpy as np
import pytest
from PIL import Image

from cnnlab.analysis.patches import cross_correlate, normalized_cross_correlate, top_patches
from cnnlab.explain import explain_matched_filter
from cnnlab.explain.cli import register
from cnnlab.explain.matched_filter import cross_template, planted_scene
from cnnlab.layers import Conv2D, Dense, Flatten, ReLU
from cnnlab.model import Sequential


def loop_correlate(img, t):
    th, tw = t.shape
    out = np.zeros((img.shape[0] - th + 1, img.shape[1] - tw + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (img[i:i + th, j:j + tw] * t).sum()
    return out


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    model = Sequential([Conv2D(4, 3, padding="same", name="c1"), ReLU(), Flatten(), Dense(10)],
                       input_shape=(28, 28, 1), seed=3)
    model["c1"].params["bias"][...] = [0.0, 0.1, -0.1, 0.2]
    model.save(path)
    return path


def test_correlation_against_loops_and_ncc_properties():
    rng = np.random.default_rng(0)
    img, t = rng.standard_normal((11, 9)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(cross_correlate(img, t), loop_correlate(img, t), atol=1e-10)
    ncc = normalized_cross_correlate(img, t)
    assert ncc.shape == (9, 6) and np.all(np.abs(ncc) <= 1 + 1e-9)
    # An exact copy of the template (up to brightness and contrast) scores 1.
    img2 = np.zeros((12, 12))
    img2[4:7, 5:9] = 3 * t + 2
    ncc2 = normalized_cross_correlate(img2, t)
    assert ncc2[4, 5] == pytest.approx(1.0) and np.unravel_index(ncc2.argmax(), ncc2.shape) == (4, 5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_peak_at_the_planted_position(seed):
    t = cross_template(7)
    img, pos = planted_scene(t, size=48, noise=0.35, distractors=3, seed=seed)
    resp = cross_correlate(img, t)
    assert np.unravel_index(resp.argmax(), resp.shape) == pos
    ncc = normalized_cross_correlate(img, t)
    assert np.unravel_index(ncc.argmax(), ncc.shape) == pos


def test_top_patches_are_the_most_activating():
    rng = np.random.default_rng(0)
    conv = Conv2D(3, 3, strides=1, padding="same")
    conv.build((8, 8, 1), rng=rng, dtype=np.float64)
    conv.params["bias"][...] = [0.5, 0.0, -0.5]
    x = rng.uniform(0, 1, (20, 8, 8, 1))
    res = top_patches(conv, x, k=4)
    acts = conv.forward(x)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for f in res:
        fi = f["index"]
        per_image_max = acts[..., fi].reshape(20, -1).max(axis=1)
        assert [p["activation"] for p in f["top_patches"]] == pytest.approx(sorted(per_image_max)[::-1][:4])
        assert len({p["image"] for p in f["top_patches"]}) == 4                 # one patch per image
        for p in f["top_patches"]:
            patch = xp[p["image"], p["row"]:p["row"] + 3, p["col"]:p["col"] + 3]
            k = conv.params["kernel"][..., fi]
            assert (patch * k).sum() + conv.params["bias"][fi] == pytest.approx(p["activation"])
            assert p["cosine"] == pytest.approx((patch * k).sum() / np.linalg.norm(patch) / np.linalg.norm(k))


def check_page(path):
    text = path.read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") >= 2
    assert "http://" not in text and "https://" not in text
    assert not re.search(r'(src|href)="(?!data:|#)', text)


def test_explain_matched_filter_with_a_model(tmp_path, small_model):
    explain_matched_filter(out=tmp_path, model=small_model, n_samples=40, top_k=3)
    d = json.loads((tmp_path / "matched_filter.json").read_text())
    assert d["true_position"] is not None and d["peak_position"] == d["true_position"]
    assert d["ncc_peak_position"] == d["true_position"]
    assert d["layer"] == "c1" and len(d["filters"]) == 4
    for f in d["filters"]:
        assert set(f) >= {"index", "top_patches"} and len(f["top_patches"]) == 3
        for p in f["top_patches"]:
            assert set(p) >= {"image", "row", "col", "activation", "cosine"} and -1 <= p["cosine"] <= 1
        acts = [p["activation"] for p in f["top_patches"]]
        assert acts == sorted(acts, reverse=True)
    check_page(tmp_path / "matched_filter.html")
    for name in ("matched_filter_response.png", "matched_filter_filters.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG"


def test_user_image_and_template(tmp_path, small_model):
    rng = np.random.default_rng(5)
    scene = (rng.uniform(0, 1, (40, 40)) ** 3 * 255).astype(np.uint8)
    Image.fromarray(scene).save(tmp_path / "scene.png")
    # Only an image: a textured patch of it becomes the template, and must be found again.
    explain_matched_filter(out=tmp_path / "a", image=tmp_path / "scene.png", size=40, model=small_model,
                           n_samples=20, top_k=2)
    d = json.loads((tmp_path / "a" / "matched_filter.json").read_text())
    assert d["source"]["template"] == "patch of the image"
    assert d["peak_position"] == d["true_position"] and d["ncc_peak_position"] == d["true_position"]
    # Only a template: it is planted in noise and found.
    tmpl = np.zeros((5, 5), np.uint8)
    tmpl[:, 2] = tmpl[2, :] = 255
    Image.fromarray(tmpl).save(tmp_path / "t.png")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["explain", "matched-filter", "--out", str(tmp_path / "b"), "--template",
                              str(tmp_path / "t.png"), "--model", str(small_model), "--samples", "20",
                              "--top-k", "2", "--noise", "0.3"])
    assert args.func(args) == 0
    d = json.loads((tmp_path / "b" / "matched_filter.json").read_text())
    np.testing.assert_allclose(d["template"], tmpl / 255.0)
    assert d["peak_position"] == d["true_position"]
    # Both given: the true position is unknown.
    explain_matched_filter(out=tmp_path / "c", image=tmp_path / "scene.png", template=tmp_path / "t.png",
                           model=small_model, n_samples=20, top_k=2)
    d = json.loads((tmp_path / "c" / "matched_filter.json").read_text())
    assert d["true_position"] is None and len(d["peak_position"]) == 2
    check_page(tmp_path / "c" / "matched_filter.html")
