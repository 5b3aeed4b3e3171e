"""cnnlab.analysis.maximize: the unit gradient against finite differences, the optimum of a linear unit."""
import numpy as np
import pytest

from cnnlab.analysis import maximize as M
from cnnlab.graph import Input
from cnnlab.layers import Add, Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU
from cnnlab.model import Model, Sequential


def small_model():
    m = Sequential([Conv2D(4, 3, padding="same"), ReLU(), MaxPool2D(2), Conv2D(3, 3), ReLU(), Flatten(), Dense(5)],
                   input_shape=(10, 10, 1), seed=3)
    m.astype(np.float64)
    return m


@pytest.mark.parametrize("layer,unit", [(3, 2), (4, 1), (6, 4)])
def test_unit_gradient_matches_finite_differences(layer, unit):
    check_gradient(small_model(), layer, unit)


def residual_model():
    """A residual block with a branch beside it: the units of a graph model, and a layer off the path to them."""
    inputs = Input((9, 9, 1))
    a = ReLU()(Conv2D(3, 3, padding="same")(inputs))
    b = Conv2D(3, 3, padding="same")(a)
    s = ReLU()(Add()([a, b]))
    side = Conv2D(2, 1)(a)                                       # read by nobody on the way to `s`
    out = Dense(4)(GlobalAvgPool2D()(Add()([s, Conv2D(3, 1)(side)])))
    m = Model(inputs, out, seed=6)
    m.astype(np.float64)
    return m


@pytest.mark.parametrize("name_of,unit", [(lambda m: [l for l in m.layers if type(l).__name__ == "Add"][0].name, 1),
                                          (lambda m: m.layers[-1].name, 2)])
def test_unit_gradient_of_a_graph_model_matches_finite_differences(name_of, unit):
    m = residual_model()
    check_gradient(m, [l.name for l in m.layers].index(name_of(m)), unit)


def check_gradient(m, layer, unit):
    size = m.input_shape[0]
    name = m.layers[layer].name
    x = np.random.default_rng(0).uniform(0, 1, (size, size, 1))
    value, g = M.unit_value_and_gradient(m, name, x, unit)
    eps = 1e-6
    for i, j in [(2, 3), (4, 4), (5, 6), (7, 2)]:
        xp, xm = x.copy(), x.copy()
        xp[i, j, 0] += eps
        xm[i, j, 0] -= eps
        fd = (M.unit_value_and_gradient(m, name, xp, unit)[0] - M.unit_value_and_gradient(m, name, xm, unit)[0]) / (2 * eps)
        assert g[i, j, 0] == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_a_first_layer_unit_with_only_an_l2_bound_finds_its_kernel():
    m = small_model()
    conv = m.layers[0]
    for f in range(4):
        r = M.maximize_unit(m, conv.name, f, steps=60, jitter=0, blur_sigma=0, radius=2.0)
        x = r["image"]
        patch = x[4:7, 4:7, 0]                                         # the centre unit (5, 5) reads rows/cols 4..6
        k = conv.params["kernel"][:, :, 0, f]
        cos = (patch * k).sum() / (np.linalg.norm(patch) * np.linalg.norm(k))
        assert cos > 0.99
        assert np.linalg.norm(x) <= 2.0 + 1e-9
        assert r["values"][-1] > r["values"][0]


def test_jitter_and_blur_still_raise_a_deeper_unit():
    m = small_model()
    r = M.maximize_unit(m, m.layers[6].name, 2, steps=40, seed=1)
    assert np.linalg.norm(r["image"]) <= r["radius"] + 1e-9
    assert np.mean(r["values"][-5:]) > r["values"][0]


def test_a_layer_off_the_chain_is_refused():
    with pytest.raises(ValueError, match="no layer"):
        M.maximize_unit(small_model(), "nope", 0)


@pytest.mark.parametrize("model", [small_model, residual_model])
def test_the_optimum_beats_the_input_and_noise_of_the_same_norm(model):
    m = model()
    x = np.random.default_rng(2).uniform(0, 1, m.input_shape)
    for layer in m.layers:
        r = M.optimum(m, layer.name, 1, x, steps=48)
        assert np.linalg.norm(r["image"]) <= np.linalg.norm(x) * (1 + 1e-9)
        out = m.forward(np.stack([r["image"], x]), capture=[layer.name])[1][layer.name]   # recomputed by a forward pass
        idx = (slice(None),) + ((1,) if out.ndim == 2 else (*r["position"], 1))
        assert out[idx] == pytest.approx([r["value"], r["input_value"]], rel=1e-9, abs=1e-12), layer.name
        noise = np.random.default_rng(7).standard_normal((32,) + m.input_shape)      # other noise than the tool's
        noise *= np.linalg.norm(x) / np.linalg.norm(noise.reshape(32, -1), axis=1)[:, None, None, None]
        on_noise = m.forward(noise, capture=[layer.name])[1][layer.name][idx]
        assert r["value"] > max(r["input_value"], on_noise.max(), r["random_values"].max()), layer.name
        if type(layer).__name__ == "ReLU":
            assert r["optimised"] != layer.name                  # ascended through the layer below it


def test_the_optimum_refuses_units_that_do_not_exist():
    m = small_model()
    x = np.zeros(m.input_shape)
    with pytest.raises(ValueError, match="unit 9"):
        M.optimum(m, m.layers[0].name, 9, x)
    with pytest.raises(ValueError, match="outside"):
        M.optimum(m, m.layers[0].name, 0, x, position=(10, 0))
