"""cnnlab.analysis.maximize: the unit gradient against finite differences, the optimum of a linear unit."""
import numpy as np
import pytest

from cnnlab.analysis import maximize as M
from cnnlab.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from cnnlab.model import Sequential


def small_model():
    m = Sequential([Conv2D(4, 3, padding="same"), ReLU(), MaxPool2D(2), Conv2D(3, 3), ReLU(), Flatten(), Dense(5)],
                   input_shape=(10, 10, 1), seed=3)
    m.astype(np.float64)
    return m


@pytest.mark.parametrize("layer,unit", [(3, 2), (4, 1), (6, 4)])
def test_unit_gradient_matches_finite_differences(layer, unit):
    m = small_model()
    name = m.layers[layer].name
    x = np.random.default_rng(0).uniform(0, 1, (10, 10, 1))
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
