"""``cnnlab.analysis``: the numbers about a model against independent references, its imports, and its sentences."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnlab
from cnnlab.analysis import convolution as C, layers as AL, shifts, texts
from cnnlab.layers import (AvgPool2D, BatchNorm, Conv2D, Dense, Flatten, GlobalAvgPool2D, LeakyReLU, MaxPool2D,
                           ReLU, Subsample, Tanh, conv2d_naive)
from cnnlab.layers.conv import resolve_padding

ROOT = Path(cnnlab.__file__).parent


# ---------------------------------------------------------------------------
# Imports
# ---------------------------------------------------------------------------
def test_importing_analysis_loads_no_pictures_no_pages_no_server():
    code = ("import sys, json, cnnlab.analysis; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'starlette', "
            "'uvicorn') or m.startswith(('cnnlab.explain', 'cnnlab.serve')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def _imported_modules(path: Path, package: str) -> set:
    """Every module an import statement in ``path`` names (inside functions too), absolute."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize("pkg, forbidden", [("serve", "cnnlab.explain"), ("explain", "cnnlab.serve"),
                                            ("analysis", "cnnlab.explain"), ("analysis", "cnnlab.serve")])
def test_packages_do_not_import_each_other(pkg, forbidden):
    offenders = {f"{p.name}: {m}" for p in (ROOT / pkg).glob("*.py")
                 for m in _imported_modules(p, f"cnnlab.{pkg}") if m == forbidden or m.startswith(forbidden + ".")}
    assert not offenders


# ---------------------------------------------------------------------------
# Layers: kinds, first conv, outputs and inputs
# ---------------------------------------------------------------------------
def _chain(seed=0):
    return cnnlab.Sequential([Conv2D(3, 3, padding="same"), BatchNorm(), ReLU(), MaxPool2D(2), Conv2D(4, 3),
                              Tanh(), Flatten(), Dense(5)], input_shape=(10, 10, 2), seed=seed)


def test_kinds_of_every_layer_class():
    expected = {Conv2D(2, 3): "conv", MaxPool2D(2): "pool", AvgPool2D(2): "pool", Subsample(2): "pool",
                GlobalAvgPool2D(): "pool", BatchNorm(): "norm", ReLU(): "activation", LeakyReLU(): "activation",
                Tanh(): "activation", Dense(3): "dense", Flatten(): "flatten", cnnlab.layers.Add(): "other"}
    assert {type(l).__name__: AL.kind(l) for l in expected} == {type(l).__name__: k for l, k in expected.items()}


def test_first_conv_and_its_one_error():
    model = _chain()
    assert AL.first_conv(model) is model.layers[0]
    mlp = cnnlab.Sequential([Flatten(), Dense(3)], input_shape=(4, 4, 1))
    assert AL.first_conv(mlp, required=False) is None
    with pytest.raises(ValueError, match=r"the model has no Conv2D layer; its layers are \['flatten', 'dense'\]"):
        AL.first_conv(mlp)
    with pytest.raises(ValueError, match="is not a convolution"):
        AL.conv_layer(model, model.layers[1].name)


def test_capture_and_inputs_are_the_forward_pass():
    model = _chain()
    x = np.random.default_rng(1).uniform(0, 1, (3, 10, 10, 2)).astype(np.float32)
    logits, acts = AL.capture(model, x[0])
    np.testing.assert_allclose(logits, model.logits(x[:1])[0], rtol=1e-5, atol=1e-6)
    h = x[:1]
    for layer, out in AL.feature_maps(model, x[0]):          # the chain recomputed layer by layer
        h = layer.forward(h, training=False)
        np.testing.assert_allclose(out, h[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(acts[layer.name], out)
    conv2 = model.layers[4]
    np.testing.assert_array_equal(AL.layer_input(model, x[0], acts, conv2), acts[model.layers[3].name])
    first = x[0]
    assert AL.layer_input(model, first, acts, model.layers[0]) is first
    batch = AL.layer_inputs(model, conv2, x, batch_size=2)
    np.testing.assert_allclose(batch[2], AL.capture(model, x[2])[1][model.layers[3].name], rtol=1e-6)


# ---------------------------------------------------------------------------
# Receptive fields against a brute-force dependence check
# ---------------------------------------------------------------------------
def _support(model, layer, x, y0, x0):
    """The bounding box of the input pixels that move output ``(y0, x0, 0)`` of ``layer`` (a linear model):
    each pixel perturbed on its own, all of them in one batch."""
    h, w, _ = model.input_shape
    eye = np.zeros((h * w, h, w, 1), np.float64)
    eye[np.arange(h * w), np.arange(h * w) // w, np.arange(h * w) % w, 0] = 1.0
    _, base = model.forward(x[None].astype(np.float64), capture=[layer.name])
    _, moved = model.forward(x[None].astype(np.float64) + eye, capture=[layer.name])
    diff = np.abs(moved[layer.name][:, y0, x0, 0] - base[layer.name][0, y0, x0, 0]).reshape(h, w)
    rows, cols = np.nonzero(diff > 1e-9)
    return rows.min(), rows.max(), cols.min(), cols.max()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_receptive_field_is_the_set_of_pixels_a_unit_depends_on(seed):
    rng = np.random.default_rng(seed)
    inputs = cnnlab.Input((17, 17, 1))
    a = Conv2D(2, 3, strides=2, padding="same", name="a")(inputs)
    b = AvgPool2D(2, name="pool")(a)
    c = Conv2D(2, 3, dilation=2, padding=1, name="c")(b)
    d = Conv2D(2, 5, strides=3, padding=2, name="d")(inputs)             # a second branch, joined below
    e = AvgPool2D(3, strides=3, name="e")(d)
    s = cnnlab.layers.Add(name="sum")([Conv2D(2, 1, name="c1")(c), Conv2D(2, 1, name="e2")(e)])
    model = cnnlab.Model(inputs, Dense(3)(Flatten()(s)), seed=seed)
    model.astype(np.float64)
    x = rng.uniform(0, 1, (17, 17, 1))
    for name in ("a", "pool", "c", "sum"):
        layer = model[name]
        ho, wo = layer.output_shape[:2]
        for y0, x0 in {(0, 0), (ho - 1, wo - 1), (ho // 2, wo // 3)}:
            box = AL.receptive_field(model, layer, y0, y0, x0, x0)
            clipped = (max(box["top"], 0), min(box["bottom"], 16), max(box["left"], 0), min(box["right"], 16))
            assert _support(model, layer, x, y0, x0) == clipped, (name, y0, x0, box)


def test_receptive_field_centres_match_the_boxes():
    model = cnnlab.Sequential([Conv2D(2, 5, padding=1), MaxPool2D(2), Conv2D(2, 3, strides=2)], input_shape=(20, 20, 1))
    (oy, sy), (ox, sx) = AL.receptive_field_centres(model, 2)
    layer = model.layers[2]
    for j in range(layer.output_shape[0]):
        box = AL.receptive_field(model, layer, j, j, j, j)
        assert oy + sy * j == pytest.approx((box["top"] + box["bottom"]) / 2)
        assert ox + sx * j == pytest.approx((box["left"] + box["right"]) / 2)


# ---------------------------------------------------------------------------
# The convolution's steps and its dense equivalent against the naive loops
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_conv_steps_against_the_naive_loops(seed):
    rng = np.random.default_rng(seed)
    h, w, c = rng.integers(5, 10), rng.integers(5, 10), rng.integers(1, 4)
    k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    stride, dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3))), (int(rng.integers(1, 3)), 1)
    padding = ["valid", "same", (1, 0)][seed % 3]
    if padding == "same":
        stride = (1, 1)
    x = rng.normal(size=(h, w, c))
    kernel = rng.normal(size=k + (c,))
    bias = float(rng.normal())
    y, pads, records = C.conv_steps(x, kernel, bias, stride, padding, dilation)
    ref = conv2d_naive(x[None], kernel[..., None], np.array([bias]), stride, pads, dilation)[0, :, :, 0]
    assert pads == resolve_padding(padding, (h, w), k, stride, dilation)
    np.testing.assert_allclose(y, ref, atol=1e-10)
    assert len(records) == ref.size
    for r in records:
        assert r["sum"] + r["bias"] == pytest.approx(ref[r["row"], r["col"]], abs=1e-10)
        np.testing.assert_allclose(r["channel_sums"].sum(), r["sum"], atol=1e-10)


@pytest.mark.parametrize("groups, padding, strides, dilation", [(1, "valid", 1, 1), (2, "same", 1, 2),
                                                               (1, (1, 2), 2, 1), (4, 1, (2, 1), (1, 2))])
def test_dense_equivalent_reproduces_conv2d(groups, padding, strides, dilation):
    rng = np.random.default_rng(groups)
    layer = Conv2D(4, 3, strides=strides, padding=padding, dilation=dilation, groups=groups)
    layer.build((9, 8, 4), dtype=np.float64)
    layer.params["kernel"][...] = rng.normal(size=layer.params["kernel"].shape)
    layer.params["bias"][...] = rng.normal(size=4)
    x = rng.normal(size=(3, 9, 8, 4))
    wmat, b = C.dense_equivalent(layer)
    np.testing.assert_allclose(x.reshape(3, -1) @ wmat + b, layer.forward(x).reshape(3, -1), atol=1e-10)
    assert np.count_nonzero(wmat) == C.expected_nonzeros((9, 8, 4), layer.params["kernel"].shape, strides, padding,
                                                         dilation, groups)


# ---------------------------------------------------------------------------
# Shifts
# ---------------------------------------------------------------------------
def test_shift_response_numbers():
    model = _chain()
    x = np.random.default_rng(3).uniform(0, 1, (10, 10, 2)).astype(np.float32)
    r = shifts.shift_response(model, x, 1, -2)
    np.testing.assert_array_equal(r["image"][1:, :8], x[:9, 2:])
    assert not r["image"][0].any() and not r["image"][:, 8:].any()
    feats = model.layers[6]
    assert r["features_layer"] == feats.name and r["conv_layer"] == model.layers[0].name
    a = AL.capture(model, r["image"])[1][feats.name]
    b = AL.capture(model, x)[1][feats.name]
    assert r["features_change"] == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(b), rel=1e-6)
    p, q = r["shifted"]["probabilities"], r["original"]["probabilities"]
    assert r["probability_change"] == pytest.approx(0.5 * np.abs(p - q).sum())
    assert r["prediction_changed"] == (np.argmax(p) != np.argmax(q))
    with pytest.raises(ValueError, match="shift must be smaller than the image"):
        shifts.shift_response(model, x, 10, 0)


# ---------------------------------------------------------------------------
# Sentences: each rule where its wording flips
# ---------------------------------------------------------------------------
def test_shift_sentence_follows_the_numbers():
    big = texts.shift_change(0, 5, 1.11, 0.6, True)
    assert "barely" not in big and "not invariant" in big and "111%" in big and "predicted class changed" in big
    large_features = texts.shift_change(0, 1, 0.55, 0.01, False)
    assert "not invariant" in large_features and "features barely" not in large_features
    small = texts.shift_change(2, 0, 0.04, 0.01, False)
    assert "barely changed (4.0%)" in small and "barely moved" in small and "nearly invariant" in small
    between = texts.shift_change(-1, 1, 0.3, 0.2, False)
    assert "partly invariant" in between and "barely" not in between and "stayed" in between
    assert "1 px up and 1 px right" in between
    assert texts.shift_change(0, 0, 0.0, 0.0, False).startswith("No shift")


def test_invariance_verdict_flips_with_the_measured_changes():
    labels = {"cnn_gap": "GAP model", "cnn": "CNN", "mlp": "MLP"}
    gap_wins = texts.invariance_verdict({"cnn_gap": 0.05, "cnn": 0.5, "mlp": 0.9}, labels)
    assert gap_wins.startswith("Only the GAP model") and "less than the MLP's (0.50 against 0.90)" in gap_wins
    none = texts.invariance_verdict({"cnn_gap": 0.4, "cnn": 0.5, "mlp": 0.55}, labels)
    assert none.startswith("No model") and "about as much as" in none


def test_weight_sharing_and_cosine_sentences_flip():
    acc = {"conv": 0.9, "dense": 0.7}
    assert "lack of training" in texts.weight_sharing_verdict(False, 30, 0.8, acc)
    assert "far better than new ones" in texts.weight_sharing_verdict(True, 5, 0.95, acc)
    assert "still reaches only" in texts.weight_sharing_verdict(True, 5, 0.72, acc)
    assert "does as well" in texts.weight_sharing_verdict(True, 5, 0.9, {"conv": 0.9, "dense": 0.895})
    assert "clear match" in texts.top_patch_cosines(0.6, 0.0, 0.2)
    weak = texts.top_patch_cosines(0.3, 0.1, 0.2)
    assert "not clearly a match" in weak and "clear match even" not in weak


def test_mlp_training_note():
    base = {"epochs": 12, "validation_images": 200, "validation_accuracy": 0.91, "cnn_validation_accuracy": 0.92}
    assert "missing invariance, not weak fitting" in texts.mlp_training({**base, "matched": True})
    assert "the most allowed" in texts.mlp_training({**base, "matched": False})
    assert texts.mlp_training(None) == "The MLP was given, not trained here."


def test_the_explorer_sends_the_sentence_its_numbers_choose():
    from cnnlab.serve import compute
    model = _chain()
    x = np.random.default_rng(4).uniform(0, 1, (10, 10, 2)).astype(np.float32)
    for dy, dx in ((0, 3), (1, 0), (0, 0)):
        d = compute.shift_view(model, x, dy, dx)
        assert d["sentence"] == texts.shift_change(dy, dx, d["features_change"], d["probability_change"],
                                                   d["prediction_changed"], f"the features of {d['features_layer']}")
        says_barely = "barely changed" in d["sentence"]
        assert says_barely == (0 < d["features_change"] < texts.SMALL_CHANGE)


def test_canvas_sentence_blames_untrained_weights_only_when_the_mlp_fell_behind():
    behind = texts.canvas_result("digit", 56, 28, 0.8, 0.2, 0.1)
    assert "never trained" in behind and "80.0%" in behind and "20.0%" in behind
    alike = texts.canvas_result("digit", 56, 28, 0.5, 0.48, 0.1)
    assert "never trained" not in alike and "did not fall behind" in alike


def test_filter_evolution_says_random_start_only_for_small_changes():
    small = texts.filter_evolution(16, 0, 480, 0.19, [0.1, 0.3], 40)
    assert "19%" in small and "still look much like their random start" in small and "reshaped" not in small
    big = texts.filter_evolution(16, 0, 480, 0.9, [0.7, 1.2], 40)
    assert "reshaped" in big and "still look" not in big
