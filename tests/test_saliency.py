"""``cnnlab explain saliency``: gradient saliency, occlusion sensitivity and Grad-CAM, checked against
independent computations."""
import json
import re

import numpy as np
import pytest

import cnnlab
from cnnlab._io import write_json
from cnnlab.runs import make_config
from cnnlab.datasets import load_shapes
from cnnlab.analysis import attribution as A
from cnnlab.analysis.layers import receptive_field_centres
from cnnlab.explain import saliency as S
from cnnlab.explain.subject import train_demo_model
from cnnlab.layers import Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU

SHAPES = {"n_train": 300, "n_test": 30, "seed": 0}


def tiny_model(channels=1, seed=0):
    """A small float64 CNN with random weights and biases, for exact derivative checks."""
    m = cnnlab.Sequential([Conv2D(3, 3, padding="same"), ReLU(), MaxPool2D(2), Conv2D(4, 3), ReLU(),
                           Flatten(), Dense(3)], input_shape=(8, 8, channels), seed=seed).astype(np.float64)
    rng = np.random.default_rng(seed + 1)
    for layer in m.layers:
        for k, p in layer.params.items():
            p[...] = rng.normal(0, 0.5, p.shape)
    return m


def test_gradient_saliency_equals_finite_differences():
    m = tiny_model(channels=2)
    x = np.random.default_rng(5).uniform(0, 1, (8, 8, 2))
    k = 1
    g = A.score_gradient(m, x, k)
    assert g.shape == x.shape
    eps = 1e-6
    for (i, j, c) in [(0, 0, 0), (3, 4, 1), (7, 7, 0), (2, 5, 1), (5, 1, 0)]:
        xp, xm = x.copy(), x.copy()
        xp[i, j, c] += eps
        xm[i, j, c] -= eps
        fd = (m.logits(xp[None])[0, k] - m.logits(xm[None])[0, k]) / (2 * eps)
        assert g[i, j, c] == pytest.approx(fd, rel=1e-5, abs=1e-8)
    np.testing.assert_allclose(A.gradient_saliency(m, x, k), np.abs(g).max(axis=-1))


def test_smoothgrad_is_the_mean_gradient_of_the_noisy_copies():
    m = tiny_model(channels=2)
    x = np.random.default_rng(6).uniform(0, 1, (8, 8, 2)).astype(np.float32)
    got = A.smoothgrad(m, x, 2, samples=5, sigma=0.2, seed=3)
    spread = float(x.max() - x.min())
    noisy = x + np.random.default_rng(3).normal(0.0, 0.2 * spread, (5, 8, 8, 2))
    want = np.mean([A.score_gradient(m, n.astype(np.float32), 2) for n in noisy], axis=0)   # one image at a time
    np.testing.assert_allclose(got, np.abs(want).max(axis=-1), rtol=1e-4, atol=1e-7)
    assert not np.allclose(got, A.gradient_saliency(m, x, 2))          # the noise did change the map


def test_occlusion_values_equal_a_direct_recomputation():
    m = tiny_model()
    x = np.random.default_rng(2).uniform(0, 1, (8, 8, 1))
    k = 2
    r = A.occlusion_sensitivity(m, x, k, patch=3, stride=2, fill=0.25, batch_size=5)
    assert r["map"].shape == (4, 4) and len(r["centres"]) == 16
    base = m.predict(x[None])[0, k]
    assert r["probability"] == pytest.approx(base)
    for (a, b) in [(0, 0), (1, 2), (3, 3)]:
        cy, cx = 2 * a, 2 * b
        xo = x.copy()
        xo[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2] = 0.25     # 3x3 patch centred on (cy, cx), clipped
        assert r["map"][a, b] == pytest.approx(base - m.predict(xo[None])[0, k], abs=1e-12)
    masks, centres = A.occlusion_masks(8, 8, 3, 2)
    assert masks.shape == (16, 8, 8) and masks[0].sum() == 4 and masks[5].sum() == 9
    full = A.occlusion_sensitivity(m, x, k, patch=2, fill="mean")
    assert full["map"].shape == (8, 8) and full["fill"] == pytest.approx(x.mean())


def test_grad_cam_of_a_known_model():
    # conv 1x1 makes maps A0 = x and A1 = -x; the score of class 0 is mean(ReLU(A0)), of class 1 mean(ReLU(A1))
    m = cnnlab.Sequential([Conv2D(2, 1, use_bias=False), ReLU(), GlobalAvgPool2D(), Dense(2, use_bias=False)],
                          input_shape=(6, 5, 1)).astype(np.float64)
    m["conv2d"].params["kernel"][...] = np.array([1.0, -1.0]).reshape(1, 1, 1, 2)
    m["dense"].params["kernel"][...] = np.eye(2)
    x = np.random.default_rng(0).uniform(0.1, 1, (6, 5, 1))
    r = A.grad_cam(m, x, 0)
    assert r["layer"] == "conv2d"
    # dS0/dA0 = 1/(H W) where A0 > 0 (everywhere), dS0/dA1 = 0: alpha = (1/30, 0), cam = x / 30
    np.testing.assert_allclose(r["weights"], [1 / 30, 0.0])
    np.testing.assert_allclose(r["cam"], x[..., 0] / 30)
    np.testing.assert_allclose(r["map"], x[..., 0] / 30)        # same size: upsampling is the identity
    # class 1 has no evidence anywhere (ReLU(-x) = 0): an all-zero map
    assert np.all(A.grad_cam(m, x, 1)["cam"] == 0)


def test_grad_cam_matches_an_independent_computation():
    m = tiny_model(seed=3)
    x = np.random.default_rng(4).uniform(0, 1, (8, 8, 1))
    k = 0
    r = A.grad_cam(m, x, k, layer="conv2d_1")
    idx = [l.name for l in m.layers].index("conv2d_1")
    h = x[None]
    for layer in m.layers[:idx + 1]:
        h = layer.forward(h)
    a = h[0].copy()

    def score(amap):                                 # the rest of the network on the feature maps
        z = amap[None]
        for layer in m.layers[idx + 1:]:
            z = layer.forward(z)
        return z[0, k]

    grad = np.zeros_like(a)
    eps = 1e-6
    for ind in np.ndindex(a.shape):
        ap, am = a.copy(), a.copy()
        ap[ind] += eps
        am[ind] -= eps
        grad[ind] = (score(ap) - score(am)) / (2 * eps)
    np.testing.assert_allclose(r["activations"], a)
    np.testing.assert_allclose(r["gradients"], grad, rtol=1e-5, atol=1e-8)
    alpha = grad.mean(axis=(0, 1))
    np.testing.assert_allclose(r["weights"], alpha, rtol=1e-5, atol=1e-10)
    cam = np.maximum((a * alpha).sum(-1), 0)
    np.testing.assert_allclose(r["cam"], cam, rtol=1e-5, atol=1e-10)
    assert r["map"].shape == (8, 8) and np.all(r["map"] >= 0)
    assert A.default_cam_layer(m).name == "conv2d_1"


def test_upsample_bilinear():
    m = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(A.upsample_bilinear(m, (3, 4)), m)
    np.testing.assert_allclose(A.upsample_bilinear(np.full((2, 2), 3.0), (7, 5)), 3.0)
    up = A.upsample_bilinear(np.array([[0.0, 1.0]]), (1, 4))
    np.testing.assert_allclose(up, [[0.0, 0.25, 0.75, 1.0]])         # pixel centres aligned
    assert A.top_pixels(m, 2) == [[2, 3, 11.0], [2, 2, 10.0]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    (x, y), _ = load_shapes(**SHAPES)
    model, _ = train_demo_model((x, y), (28, 28, 1), 10, epochs=1)
    d = tmp_path_factory.mktemp("run")
    model.save(d / "model.safetensors")
    write_json(d / "config.json", make_config(dataset="shapes", dataset_options=SHAPES))
    return d


def test_explain_saliency_end_to_end(tmp_path, run_dir):
    out = tmp_path / "sal"
    r = S.explain_saliency(out, model=run_dir, index=4, class_index=3, stride=2)
    model = cnnlab.load(run_dir)
    _, (xt, yt) = load_shapes(**SHAPES)
    x = xt[4]
    assert r["class"] == 3 and r["image"]["label"] == int(yt[4])
    assert r["probability"] == pytest.approx(float(model.predict(x[None])[0, 3]), rel=1e-5)
    np.testing.assert_allclose(r["gradient"]["map"], A.gradient_saliency(model, x, 3), rtol=1e-5, atol=1e-7)
    occ = np.array(r["occlusion"]["map"])
    assert occ.shape == (14, 14) and r["occlusion"]["patch"] == A.default_patch(28, 28) == 6
    xo = x.copy()
    xo[10 - 3:10 + 3, 6 - 3:6 + 3] = 0.0                       # the patch centred on pixel (10, 6): cell (5, 3)
    assert occ[5, 3] == pytest.approx(r["probability"] - float(model.predict(xo[None])[0, 3]), abs=1e-6)
    cam = A.grad_cam(model, x, 3)
    assert r["grad_cam"]["layer"] == "conv2d_1"
    np.testing.assert_allclose(r["grad_cam"]["map"], cam["map"], rtol=1e-5, atol=1e-7)
    assert r["grad_cam"]["min"] >= 0
    np.testing.assert_allclose(r["smoothgrad"]["map"], A.smoothgrad(model, x, 3, r["smoothgrad"]["samples"],
                                                                  r["smoothgrad"]["sigma"]), rtol=1e-4, atol=1e-7)
    top = r["gradient"]["top_pixels"][0]
    assert top[2] == pytest.approx(float(np.max(r["gradient"]["map"])))
    saved = json.loads((out / "saliency.json").read_text())
    assert saved["class"] == 3 and len(saved["grad_cam"]["map"]) == 28
    for name in r["files"]:
        assert (out / name).is_file()
    html = (out / "saliency.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    for attr in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html):
        assert attr.startswith("data:")
    assert "http://" not in html and "https://" not in html


def test_default_class_is_the_prediction_and_cli(tmp_path, run_dir, capsys):
    from cnnlab.cli import main
    assert main(["explain", "saliency", "--model", str(run_dir), "--index", "2", "--stride", "4",
                 "--out", str(tmp_path / "cli")]) == 0
    assert "saliency.html" in capsys.readouterr().out
    r = json.loads((tmp_path / "cli" / "saliency.json").read_text())
    assert r["class"] == r["predicted"]
    assert main(["explain", "saliency", "--model", str(run_dir), "--class", "12",
                 "--out", str(tmp_path / "bad")]) != 0


def test_grad_cam_map_is_placed_where_the_receptive_fields_are():
    import cnnlab
    from cnnlab import layers as L
    # valid 5x5 conv (centre +2), max-pool 2 (centre +0.5 of its input, stride 2), valid 3x3 conv (+1 cell)
    model = cnnlab.Sequential([L.Conv2D(2, 5), L.ReLU(), L.MaxPool2D(2), L.Conv2D(2, 3), L.Flatten(), L.Dense(3)],
                              input_shape=(20, 20, 1))
    (oy, sy), (ox, sx) = receptive_field_centres(model, 3)
    assert (sy, sx) == (2, 2) and oy == ox == 2 + 0.5 + 2 * 1
    same = cnnlab.Sequential([L.Conv2D(2, 3, padding="same"), L.MaxPool2D(2, padding="same"), L.Flatten(), L.Dense(2)],
                             input_shape=(9, 9, 1))
    assert receptive_field_centres(same, 0) == ((0.0, 1.0), (0.0, 1.0))
    # A one-hot map cell lands on the image pixel at the centre of its receptive field.
    m = np.zeros((6, 6))
    m[2, 3] = 1.0
    up = A.upsample_bilinear(m, (20, 20), ((oy, sy), (ox, sx)))
    assert np.unravel_index(up.argmax(), up.shape) == (int(oy + 2 * sy), int(ox + 3 * sx))
