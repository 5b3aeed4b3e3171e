"""Every backward pass against float64 central finite differences, on random configurations."""
import numpy as np
import pytest

from cnnlab import layers as L
from cnnlab import losses
from cnnlab.gradcheck import check_layer, numeric_gradient, relative_error
from conftest import random_conv_configs

TOL = 1e-6


@pytest.mark.parametrize("cfg,shape", random_conv_configs(24, seed=1))
def test_conv2d_gradients(cfg, shape, compiled_loops):
    x = np.random.default_rng(2).standard_normal(shape)
    layer = L.Conv2D(**cfg)
    errors = check_layer(layer, x)
    assert set(errors) == {"input", "kernel"} | ({"bias"} if cfg["use_bias"] else set())
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("cfg,shape", random_conv_configs(12, seed=11, sizes=(5, 10)))
def test_conv2d_band_by_band_gradients(cfg, shape, compiled_loops):
    # Layers with few filters build the patch matrix in bands of output rows and rebuild them in
    # backward; one row per band here, so every band boundary is crossed.
    x = np.random.default_rng(3).standard_normal(shape)
    layer = L.Conv2D(**cfg)
    layer.BAND_BYTES = 1
    errors = check_layer(layer, x)
    assert len(layer._cache[3]) == layer.output_shape[0] > 1 or layer.output_shape[0] == 1
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("shape,padding,use_bias", [((2, 6, 6, 3), "same", True), ((1, 7, 5, 2), "valid", False),
                                                    ((2, 5, 8, 1), (2, 1), True), ((1, 4, 3, 2), 1, False)])
@pytest.mark.parametrize("block_bytes", [None, 1], ids=["one-block", "tile-by-tile"])
@pytest.mark.parametrize("k", [3, 5])
def test_conv2d_winograd_gradients(shape, padding, use_bias, block_bytes, k, compiled_loops):
    # Stride-1 3x3 and 5x5 layers with many channels run Winograd's F(2x2, 3x3) or F(2x2, 5x5); forced here
    # on a few channels (and filters), with even and odd outputs (odd ones overhang the last tile), in one
    # block of tiles or one block per tile (every block boundary crossed).
    if k == 5:                                        # room for a 5x5 kernel
        shape = shape[:1] + (shape[1] + 2, shape[2] + 2) + shape[3:]
    x = np.random.default_rng(4).standard_normal(shape)
    layer = L.Conv2D(3, k, padding=padding, use_bias=use_bias)
    layer._algorithm = lambda channels: "winograd"
    if block_bytes:
        layer.WINOGRAD_BAND_BYTES = block_bytes
    errors = check_layer(layer, x)
    assert layer._cache[0] == "winograd"
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("shape,filters,kh,padding", [((2, 6, 7, 1), 3, 5, "same"), ((1, 7, 6, 2), 2, 5, "valid"),
                                                     ((2, 5, 6, 3), 1, 3, (2, 1)), ((1, 4, 8, 4), 4, 2, (1, 2)),
                                                     ((2, 5, 5, 2), 6, 3, "same")])
@pytest.mark.parametrize("kw", [3, 5])
def test_conv2d_direct_gradients(shape, filters, kh, padding, kw):
    # Layers with 3- or 5-wide kernels and few channels run the compiled direct convolution; its input
    # gradient is the same loop on dy with the kernel turned, its kernel gradient a loop of its own
    # (filters 2 or 4 at a time: the counts here leave every remainder).
    pytest.importorskip("numba")
    x = np.random.default_rng(5).standard_normal(shape)
    layer = L.Conv2D(filters, (kh, kw), padding=padding)
    errors = check_layer(layer, x)
    assert layer._cache[0] == "direct"
    assert set(errors) == {"input", "kernel", "bias"}
    assert max(errors.values()) < TOL, errors


POOL_CASES = [
    (L.MaxPool2D, dict(pool_size=2)),
    (L.MaxPool2D, dict(pool_size=3, strides=1)),
    (L.MaxPool2D, dict(pool_size=3, strides=2, padding="same")),
    (L.MaxPool2D, dict(pool_size=(2, 3), strides=(1, 2), padding=1)),
    (L.AvgPool2D, dict(pool_size=2)),
    (L.AvgPool2D, dict(pool_size=3, strides=1)),
    (L.AvgPool2D, dict(pool_size=3, strides=2, padding="same")),
    (L.AvgPool2D, dict(pool_size=(3, 2), strides=1, padding=(1, 1))),
    (L.Subsample, dict(stride=2)),
    (L.Subsample, dict(stride=(3, 2))),
    (L.GlobalAvgPool2D, dict()),
]


@pytest.mark.parametrize("cls,cfg", POOL_CASES)
@pytest.mark.parametrize("shape", [(1, 7, 7, 3), (2, 6, 9, 2)])
def test_pool_gradients(cls, cfg, shape, compiled_loops):
    x = np.random.default_rng(4).standard_normal(shape)
    errors = check_layer(cls(**cfg), x)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("layer", [L.ReLU(), L.LeakyReLU(0.1), L.Tanh(), L.Sigmoid(), L.ClippedReLU(1.0), L.Flatten()])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 7)])
def test_elementwise_and_flatten_gradients(layer, shape):
    x = np.random.default_rng(5).standard_normal(shape)
    x[(np.abs(x) < 1e-3) | (np.abs(x - 1) < 1e-3)] = 0.5     # keep away from the kinks of ReLU and ClippedReLU(1)
    errors = check_layer(type(layer)(**layer.get_config()), x)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("units,use_bias,n", [(5, True, 1), (3, False, 4), (1, True, 2)])
def test_dense_gradients(units, use_bias, n):
    x = np.random.default_rng(6).standard_normal((n, 7))
    errors = check_layer(L.Dense(units, use_bias=use_bias), x)
    assert max(errors.values()) < TOL, errors


def test_dropout_gradient_uses_the_same_mask():
    x = np.random.default_rng(7).standard_normal((4, 10))
    errors = check_layer(L.Dropout(0.4), x)
    assert errors["input"] < TOL


@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 5, 2), (1, 3, 3, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients(shape, training):
    x = np.random.default_rng(8).standard_normal(shape) * 3 + 1
    layer = L.BatchNorm(momentum=0.0)              # running stats frozen, so every call sees the same state
    layer.build(shape[1:], rng=np.random.default_rng(0), dtype=np.float64)
    layer.params["gamma"][...] = np.random.default_rng(9).uniform(0.5, 2, shape[-1])
    layer.params["beta"][...] = np.random.default_rng(10).standard_normal(shape[-1])
    layer.buffers["running_mean"][...] = 0.3
    layer.buffers["running_var"][...] = 2.0
    errors = check_layer(layer, x, training=training)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("loss", [losses.SoftmaxCrossEntropy(), losses.SoftmaxCrossEntropy(label_smoothing=0.1),
                                  losses.MulticlassHinge(), losses.MulticlassHinge(margin=0.5)])
@pytest.mark.parametrize("n,k", [(1, 3), (6, 10)])
def test_loss_gradients(loss, n, k):
    rng = np.random.default_rng(11)
    z = rng.standard_normal((n, k)) * 2
    y = rng.integers(0, k, n)
    loss.forward(z, y)
    analytic = loss.backward()
    numeric = numeric_gradient(lambda: loss.forward(z, y), z)
    assert relative_error(analytic, numeric) < TOL


def test_softmax_cross_entropy_is_stable_for_huge_scores():
    z = np.array([[1000.0, -1000.0, 0.0], [-5e4, 5e4, 0.0]])
    loss = losses.SoftmaxCrossEntropy()
    value = loss.forward(z, np.array([0, 0]))
    assert np.isfinite(value) and abs(value - 1e5 / 2) < 1e-6   # second row: -log p = 1e5
    assert np.isfinite(loss.backward()).all()


def test_hinge_loss_value_by_hand():
    z = np.array([[3.2, 5.1, -1.7]])                 # CS231n's example: loss 2.9 for true class 0
    assert abs(losses.MulticlassHinge().forward(z, np.array([0])) - 2.9) < 1e-9


def test_gradcheck_catches_a_wrong_backward():
    class Wrong(L.ReLU):
        def backward(self, dy):
            return dy * 0.5 * (self._y > 0)
    x = np.random.default_rng(12).standard_normal((2, 5)) + 3
    assert check_layer(Wrong(), x)["input"] > 0.1


@pytest.mark.parametrize("cfg", [dict(pool_size=2), dict(pool_size=3, strides=2, padding="same"),
                                 dict(pool_size=(2, 3), strides=1, padding=1)])
def test_relu_then_maxpool_run_pooled_first_gives_identical_results(cfg, compiled_loops):
    # Training runs ReLU + MaxPool2D as pool-then-ReLU; outputs and gradients must be exactly equal,
    # including windows whose values are all negative and windows with tied maxima.
    from cnnlab.stack import ReLUMaxPool, Stack
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 3, (3, 7, 8, 2)).astype(np.float64)      # small integers: many ties and dead windows
    dy_shape = L.MaxPool2D(**cfg).compute_output_shape(x.shape[1:])
    dy = rng.standard_normal((3, *dy_shape))
    relu, pool = L.ReLU(), L.MaxPool2D(**cfg)
    y_ref = pool.forward(relu.forward(x, True), True)
    dx_ref = relu.backward(pool.backward(dy))
    stack = Stack([L.Dense(3, name="d"), relu, pool, L.ReLU(name="r")])
    steps = [runner for runner, *_ in stack.plan().steps]
    assert [type(s) for s in steps] == [L.Dense, ReLUMaxPool, L.ReLU]
    y = steps[1].forward(x, True)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(steps[1].backward(dy), dx_ref)
