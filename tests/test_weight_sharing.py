"""Weight sharing: the dense equivalent of a convolution, LocallyConnected2D, and the comparison tool."""
import json
import re

import numpy as np
import pytest

import cnnlab
from cnnlab.analysis.convolution import conv_to_dense, dense_equivalent, expected_nonzeros, local_to_dense
from cnnlab.explain import explain_weight_sharing
from cnnlab.gradcheck import check_layer
from cnnlab.layers import Conv2D, Dense, Flatten
from cnnlab.layers.local import LocallyConnected2D, untie

CONFIGS = [
    # (input_shape, filters, kernel_size, strides, padding, dilation, groups)
    ((6, 6, 1), 1, 3, 1, "valid", 1, 1),
    ((7, 5, 2), 3, (3, 2), (2, 1), "same", 1, 1),
    ((6, 7, 3), 2, 3, 1, 1, 2, 1),
    ((5, 6, 4), 4, 2, 2, (0, 1), 1, 2),
]


def nonzero_kernel(shape, rng):
    k = rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)     # no zero weights
    return k


@pytest.mark.parametrize("shape,filters,ks,strides,padding,dilation,groups", CONFIGS)
def test_dense_equivalent_reproduces_the_convolution(shape, filters, ks, strides, padding, dilation, groups):
    rng = np.random.default_rng(0)
    conv = Conv2D(filters, ks, strides=strides, padding=padding, dilation=dilation, groups=groups)
    conv.build(shape, rng=rng, dtype=np.float64)
    conv.params["kernel"][...] = nonzero_kernel(conv.params["kernel"].shape, rng)
    conv.params["bias"][...] = rng.standard_normal(filters)
    x = rng.standard_normal((3,) + shape)
    wmat, b = dense_equivalent(conv)
    ho, wo, f = conv.output_shape
    assert wmat.shape == (int(np.prod(shape)), ho * wo * f)
    y = conv.forward(x).reshape(3, -1)
    assert np.abs(x.reshape(3, -1) @ wmat + b - y).max() < 1e-10
    # Exactly the tied copies of the kernel: one entry per in-bounds tap, input channel (of the group) and filter.
    assert np.count_nonzero(wmat) == expected_nonzeros(shape, conv.params["kernel"].shape, strides, padding,
                                                       dilation, groups)
    assert set(np.unique(wmat[wmat != 0])) <= set(np.unique(conv.params["kernel"]))


def test_nonzero_count_by_hand():
    # valid, stride 1: every output position sees all kh*kw*C pixels: Ho*Wo*kh*kw*C*F entries.
    k = np.full((3, 3, 2, 4), 0.5)
    wmat, _ = conv_to_dense(k, (6, 5, 2))
    assert wmat.shape == (6 * 5 * 2, 4 * 3 * 4)
    assert np.count_nonzero(wmat) == 4 * 3 * 3 * 3 * 2 * 4
    # "same" padding on a 3x3 image with a 3x3 kernel: corner windows see 4 pixels, edges 6, the centre 9.
    wmat, _ = conv_to_dense(np.ones((3, 3, 1, 1)), (3, 3, 1), padding="same")
    assert np.count_nonzero(wmat) == 4 * 4 + 4 * 6 + 9
    # Column (i, j) of the tied matrix is the kernel placed at the window's pixels.
    k = np.arange(1, 10, dtype=float).reshape(3, 3, 1, 1)
    wmat, _ = conv_to_dense(k, (5, 5, 1))
    col = wmat[:, 1 * 3 + 2].reshape(5, 5)            # output (1, 2)
    expected = np.zeros((5, 5))
    expected[1:4, 2:5] = k[:, :, 0, 0]
    np.testing.assert_array_equal(col, expected)


@pytest.mark.parametrize("cfg,shape", [
    (dict(filters=2, kernel_size=3), (2, 5, 5, 2)),
    (dict(filters=3, kernel_size=(2, 3), strides=2, padding="same"), (2, 6, 7, 1)),
    (dict(filters=2, kernel_size=3, padding=1, dilation=2, use_bias=False), (1, 6, 5, 3)),
    (dict(filters=1, kernel_size=2, strides=(1, 2), padding=(1, 0)), (3, 4, 5, 2)),
])
def test_locally_connected_gradients(cfg, shape):
    x = np.random.default_rng(2).standard_normal(shape)
    errors = check_layer(LocallyConnected2D(**cfg), x)
    assert max(errors.values()) < 1e-6, errors


def test_locally_connected_shapes_untie_and_dense_equivalent():
    rng = np.random.default_rng(1)
    conv = Conv2D(3, 3, strides=2, padding="same")
    conv.build((7, 6, 2), rng=rng, dtype=np.float64)
    conv.params["bias"][...] = [0.1, 0.2, -0.3]
    local = untie(conv)
    ho, wo, f = conv.output_shape
    assert local.params["kernel"].shape == (ho, wo, 3 * 3 * 2, 3) and local.params["bias"].shape == (ho, wo, 3)
    assert local.num_params == ho * wo * conv.num_params
    assert local.macs() == conv.macs()
    x = rng.standard_normal((2, 7, 6, 2))
    np.testing.assert_allclose(local.forward(x), conv.forward(x), atol=1e-12)   # untied copies: same function
    local.params["kernel"][...] = rng.standard_normal(local.params["kernel"].shape)
    wmat, b = local_to_dense(local.params["kernel"], (7, 6, 2), 3, 2, "same", 1, local.params["bias"])
    np.testing.assert_allclose(x.reshape(2, -1) @ wmat + b, local.forward(x).reshape(2, -1), atol=1e-10)
    # Same zero pattern as the convolution, but the values are no longer tied.
    wconv, _ = conv_to_dense(conv.params["kernel"], (7, 6, 2), 2, "same")
    np.testing.assert_array_equal(wmat != 0, wconv != 0)
    assert len(np.unique(wmat[wmat != 0])) > len(np.unique(wconv[wconv != 0]))


def test_locally_connected_saves_and_loads(tmp_path):
    model = cnnlab.Sequential([LocallyConnected2D(2, 3, name="lc"), Flatten(), Dense(3)], input_shape=(6, 6, 1))
    model["lc"].params["bias"][...] = 0.25
    model.save(tmp_path / "m.safetensors")
    again = cnnlab.load(tmp_path / "m.safetensors")
    assert type(again["lc"]).__name__ == "LocallyConnected2D"
    x = np.random.default_rng(0).uniform(0, 1, (2, 6, 6, 1)).astype(np.float32)
    np.testing.assert_array_equal(again.logits(x), model.logits(x))


def test_explain_weight_sharing(tmp_path):
    res = explain_weight_sharing(out=tmp_path, dataset="shapes", n_train=400, n_test=200, epochs=4, image_size=16,
                                 demo_size=6)
    d = json.loads((tmp_path / "weight_sharing.json").read_text())
    assert d["max_abs_difference"] < 1e-5
    keys = {"conv", "locally_connected", "dense"}
    assert set(d["parameters"]) == keys and set(d["accuracy"]) == keys
    assert all(0 <= a <= 1 for a in d["accuracy"].values())
    p = d["parameters"]
    # conv 8@5x5 on 16x16 -> 12x12x8 -> pool 6x6x8 -> dense 10
    assert p["conv"] == 5 * 5 * 8 + 8 + 6 * 6 * 8 * 10 + 10
    assert p["locally_connected"] == 12 * 12 * (5 * 5 * 8 + 8) + 6 * 6 * 8 * 10 + 10
    assert abs(p["dense"] - p["conv"]) < 16 * 16 + 1 + 10          # within one hidden unit of the conv
    demo = d["demo"]
    assert demo["nonzeros"] == demo["expected_nonzeros"] == 4 * 4 * 9 and demo["distinct_nonzero_values"] == 9
    m = d["model_conv_layer"]
    assert m["nonzeros"] == m["expected_nonzeros"] == 12 * 12 * 25 * 8
    text = (tmp_path / "weight_sharing.html").read_text()
    assert text.count("data:image/png;base64,") >= 2
    assert "http://" not in text and "https://" not in text
    assert not re.search(r'(src|href)="(?!data:|#)', text)
    assert res["files"]["matrix_png"].endswith("weight_sharing_matrix.png")
    # the page quotes the JSON's numbers; each model trained until its loss stopped falling, or to the limit
    assert f"{d['demo']['max_abs_difference']:.2e}" in text and d["demo"]["max_abs_difference"] == pytest.approx(
        res["demo"]["max_abs_difference"], rel=1e-9, abs=0)
    t = d["training"]
    for k in keys:
        loss = t["history"][k]["loss"]
        assert len(loss) == t["epochs"][k] <= 4
        if t["converged"][k]:
            assert t["history"][k]["accuracy"][-1] == 1.0 or loss[-2] - loss[-1] < 0.03 * loss[-2]
        else:
            assert t["epochs"][k] == 4 and all(a - b >= 0.03 * a for a, b in zip(loss, loss[1:]))
        assert t["train_accuracy"][k] == t["history"][k]["accuracy"][-1]
    assert ("lack of structure" in text) == bool(t["converged"]["dense"] and d["accuracy"]["dense"] <
                                                 d["accuracy"]["conv"] - 0.01)


@pytest.mark.parametrize("shape, k, target", [((28, 28, 1), 10, 5000), ((8, 8, 3), 4, 900), ((6, 6, 1), 2, 3)])
def test_mlp_hidden_units_matches_the_parameter_count(shape, k, target):
    from cnnlab.explain.subject import mlp_hidden_units
    h = mlp_hidden_units(shape, k, target)
    count = lambda n: cnnlab.Sequential([Flatten(), Dense(n), Dense(k)], input_shape=shape).num_params  # noqa: E731
    assert h >= 1
    if h > 1:                       # the nearest hidden size: one unit more or less is no closer to the target
        assert abs(count(h) - target) <= min(abs(count(h - 1) - target), abs(count(h + 1) - target))


def test_fit_until_stops_when_done_and_says_so():
    from cnnlab.explain.subject import fit_until
    from cnnlab.datasets import load_shapes
    (x, y), _ = load_shapes(64, 1, image_size=12, seed=0)
    model = cnnlab.Sequential([Flatten(), Dense(int(y.max()) + 1)], input_shape=x.shape[1:], seed=0)
    history, stopped = fit_until(model, x, y, 5, lambda h: len(h["loss"]) >= 2, validation_data=(x, y))
    assert stopped and len(history["loss"]) == 2 and len(history["val_accuracy"]) == 2
    history, stopped = fit_until(model, x, y, 3, lambda h: False)
    assert not stopped and len(history["loss"]) == 3
    history, stopped = fit_until(model, x, y, 4, lambda h: True, min_epochs=3)
    assert stopped and len(history["loss"]) == 3
