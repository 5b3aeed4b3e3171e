"""cnnlab.analysis.equivariance: equivariance of convolution, shift absorption of sub-sampling."""
import numpy as np
import pytest

from cnnlab.analysis import equivariance as S
from cnnlab.layers import Conv2D, GlobalAvgPool2D, MaxPool2D, ReLU, Dense, Flatten
from cnnlab.model import Sequential


def conv(filters=3, k=5, **kw):
    layer = Conv2D(filters, k, **kw)
    layer.build((20, 20, 2), np.random.default_rng(1), dtype=np.float64)
    return layer


def test_shift_moves_content_with_zeros_brought_in():
    x = np.arange(2 * 5 * 6 * 1, dtype=np.float64).reshape(2, 5, 6, 1)
    y = S.shift(x, 1, -2)
    np.testing.assert_array_equal(y[:, 1:, :4], x[:, :4, 2:])
    assert not y[:, 0].any() and not y[:, :, 4:].any()


@pytest.mark.parametrize("kw", [dict(padding="same"), dict(padding="valid"), dict(padding=1, dilation=2)])
def test_stride_one_convolution_is_equivariant(kw):
    layer = conv(**kw)
    x = np.random.default_rng(0).standard_normal((2, 20, 20, 2))
    for dy, dx in [(0, 3), (2, -1), (-4, 4)]:
        e = S.equivariance_error(layer.forward, x, dy, dx, border=S.conv_border(layer, (20, 20)))
        assert e["relative"] < 1e-12


def test_strided_convolution_is_equivariant_only_to_multiples_of_its_stride():
    layer = conv(padding="same", strides=2)
    x = np.random.default_rng(0).standard_normal((2, 20, 20, 2))
    assert S.equivariance_error(layer.forward, x, 0, 2, stride=2, border=3)["relative"] < 1e-12
    with pytest.raises(ValueError, match="stride 2"):
        S.equivariance_error(layer.forward, x, 0, 1, stride=2)


def test_a_non_equivariant_map_is_caught():
    """A position-dependent map (the image times a ramp) must show a large error."""
    ramp = np.linspace(0, 1, 20)[None, None, :, None]
    x = np.random.default_rng(0).uniform(0.5, 1, (1, 20, 20, 1))
    assert S.equivariance_error(lambda a: a * ramp, x, 0, 2, border=1)["relative"] > 0.05


def test_pooling_shift_change_against_hand_computed_pools():
    """An impulse as the map, worked out by hand from the definitions of the pools."""
    x = np.zeros((1, 8, 8, 1), np.float32)
    x[0, 2, 2, 0] = 1.0
    ch = S.pooling_shift_change(lambda a: a, x, pool=2, shifts=(0, 1, 2))
    assert all(v[0] == 0.0 for v in ch.values())
    # no pooling: the impulse moves to a new pixel, ||e_a - e_b|| / ||e_a|| = sqrt(2)
    assert ch["none"][1] == pytest.approx(np.sqrt(2))
    # subset keeps pixels (even, even): the impulse at column 2 is kept, at column 3 it vanishes
    assert ch["subset"][1] == pytest.approx(1.0) and ch["subset"][2] == pytest.approx(np.sqrt(2))
    # 2x2 windows: column 2 -> 3 stays in window [2, 3]: average and max do not change; column 4 leaves it
    assert ch["average"][1] == 0.0 and ch["max"][1] == 0.0
    assert ch["average"][2] == pytest.approx(np.sqrt(2)) and ch["max"][2] == pytest.approx(np.sqrt(2))


def test_pooling_layers_and_first_feature_layer():
    lenet = Sequential([Conv2D(2, 3, padding="same"), ReLU(), MaxPool2D(2), Flatten(), Dense(3)], input_shape=(8, 8, 1))
    gap = Sequential([Conv2D(2, 3), Conv2D(2, 3, strides=2), GlobalAvgPool2D(), Dense(3)], input_shape=(8, 8, 1))
    plain = Sequential([Conv2D(2, 3), ReLU(), Flatten(), Dense(3)], input_shape=(8, 8, 1))
    assert [type(l).__name__ for l in S.pooling_layers(lenet)] == ["MaxPool2D"]
    assert len(S.pooling_layers(gap)) == 1 and S.pooling_layers(plain) == []
    assert S.first_feature_layer(lenet) == lenet.layers[1].name
    assert S.first_feature_layer(gap) == gap.layers[0].name
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 1))
    np.testing.assert_allclose(S.layer_maps(lenet, lenet.layers[1].name)(x),
                               np.maximum(lenet.layers[0].forward(x.astype(np.float32)), 0), rtol=1e-6)
