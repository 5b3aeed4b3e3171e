"""cnnlab.analysis.identities: the kernel gradient as a sum of patches, stacked convolutions, blur as jitter."""
import numpy as np
import pytest

from cnnlab.analysis import identities as I
from cnnlab.layers import Conv2D
from tests.conftest import random_conv_configs


@pytest.mark.parametrize("cfg,shape", random_conv_configs(12, seed=24, groups=(1,)))
def test_kernel_gradient_is_the_error_weighted_sum_of_patches(cfg, shape):
    rng = np.random.default_rng(7)
    layer = Conv2D(**cfg)
    layer.build(shape[1:], rng, dtype=np.float64)
    x = rng.standard_normal(shape)
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    layer.backward(dy)
    np.testing.assert_allclose(I.kernel_gradient_from_patches(layer, x, dy), layer.grads["kernel"],
                               rtol=1e-10, atol=1e-10)


def test_kernel_gradient_refuses_grouped_layers():
    layer = Conv2D(4, 3, groups=2)
    layer.build((6, 6, 2))
    with pytest.raises(ValueError, match="groups=1"):
        I.kernel_gradient_from_patches(layer, np.zeros((1, 6, 6, 2)), np.zeros((1, 4, 4, 4)))


@pytest.mark.parametrize("k1,k2,c,m,f", [((3, 3), (3, 3), 1, 1, 1), ((3, 2), (2, 4), 2, 3, 2), ((5, 5), (1, 3), 3, 1, 4)])
def test_two_linear_convolutions_are_one(k1, k2, c, m, f):
    rng = np.random.default_rng(sum(k1) + c)
    a = rng.standard_normal((*k1, c, m))
    b = rng.standard_normal((*k2, m, f))
    x = rng.standard_normal((2, 11, 12, c))
    first, second = Conv2D(m, k1, use_bias=False), Conv2D(f, k2, use_bias=False)
    first.build(x.shape[1:], dtype=np.float64)
    second.build(first.output_shape, dtype=np.float64)
    first.params["kernel"], second.params["kernel"] = a, b
    big = I.compose_kernels(a, b)
    assert big.shape == (k1[0] + k2[0] - 1, k1[1] + k2[1] - 1, c, f)   # a 3x3 after a 3x3 sees 5x5
    one = Conv2D(f, big.shape[:2], use_bias=False)
    one.build(x.shape[1:], dtype=np.float64)
    one.params["kernel"] = big
    np.testing.assert_allclose(one.forward(x), second.forward(first.forward(x)), rtol=1e-10, atol=1e-10)


def test_density_of_a_sum_of_two_dice_is_the_triangle():
    die = np.full(6, 1 / 6)
    two = I.density_of_sum(die, die)                     # sums 2..12
    np.testing.assert_allclose(two, np.convolve(die, die), atol=1e-15)
    np.testing.assert_allclose(two * 36, [1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1], atol=1e-12)
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(7))
    np.testing.assert_allclose(I.density_of_sum(p, q), np.convolve(p, q), atol=1e-15)


def test_blur_is_the_image_expected_after_random_jitter():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (2, 9, 10, 3))
    w = rng.uniform(0, 1, (3, 5))
    w /= w.sum()
    np.testing.assert_allclose(I.blur(x, w), I.expected_jitter(x, w), rtol=1e-12, atol=1e-12)
    # Monte Carlo: the average of many jittered copies approaches the blur
    rh, rw = 1, 2
    xp = np.pad(x, ((0, 0), (rh, rh), (rw, rw), (0, 0)))
    draws = rng.choice(w.size, size=4000, p=w.ravel())
    mc = np.mean([xp[:, i:i + 9, j:j + 10] for i, j in zip(*np.unravel_index(draws, w.shape))], axis=0)
    assert np.abs(mc - I.blur(x, w)).max() < 0.05


def test_blur_refuses_what_is_not_a_density():
    with pytest.raises(ValueError, match="displacement density"):
        I.blur(np.zeros((1, 5, 5, 1)), np.array([[0.5, -0.1, 0.6]]))
    with pytest.raises(ValueError, match="displacement density"):
        I.blur(np.zeros((1, 5, 5, 1)), np.ones((2, 2)) / 4)
