"""cnnlab.analysis.filters: orientation tuning, the random-filter null, patch components, top patches."""
import numpy as np
import pytest

from cnnlab.analysis import filters as F
from cnnlab.layers import Conv2D


def edge_kernel(size, degrees):
    """A step edge along ``degrees`` drawn by hand: +1 on one side of the line through the centre, -1 on the other."""
    a = np.deg2rad(degrees)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    return np.sign(-np.sin(a) * xx + np.cos(a) * yy + 1e-9)[:, :, None, None]


def test_selectivity_of_flat_and_single_angle_curves():
    a = F.ANGLES
    assert F.selectivity(np.ones(len(a))) == pytest.approx(0.0, abs=1e-12)
    one = np.zeros(len(a))
    one[5] = 3.0
    assert F.selectivity(one) == pytest.approx(1.0)
    assert F.preferred_angle(one) == pytest.approx(a[5])


@pytest.mark.parametrize("degrees", [0.0, 45.0, 90.0, 135.0])
def test_an_edge_kernel_prefers_its_own_angle(degrees):
    k = edge_kernel(5, degrees)
    curve = F.tuning_curves(k)[0]
    assert F.ANGLES[np.argmax(curve)] == degrees
    for tuning in (F.tuning_curves(k), F.fourier_tuning(k)):
        gap = abs((F.preferred_angle(tuning)[0] - degrees + 90) % 180 - 90)
        assert gap < 0.5
    assert F.oriented(k)["count"] == 1


def test_rotating_a_kernel_rotates_its_tuning_curve():
    rng = np.random.default_rng(3)
    k = rng.standard_normal((5, 5, 2, 6))
    half = len(F.ANGLES) // 2                                   # 90 degrees: half the period of a tuning curve
    for tuning in (F.tuning_curves, F.fourier_tuning):
        c = tuning(k)
        np.testing.assert_allclose(tuning(np.rot90(k, 1, axes=(0, 1))), np.roll(c, half, axis=1), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(tuning(np.rot90(k, 2, axes=(0, 1))), c, rtol=1e-9, atol=1e-12)


def test_tuning_is_the_best_response_of_conv2d_over_positions():
    """Conv2D on large images of a vertical edge and a bar at every half-pixel position never beats R(90), and reaches it."""
    rng = np.random.default_rng(0)
    kern = rng.standard_normal((5, 5, 1, 3))
    layer = Conv2D(3, 5, use_bias=False)
    layer.build((21, 21, 1), dtype=np.float64)
    layer.params["kernel"] = kern - kern.mean(axis=(0, 1, 2))     # the tuning leaves the kernel's mean out
    xx = np.arange(21.0)[None, :].repeat(21, 0)
    imgs = []
    for t in np.arange(8.0, 13.0, 0.5):
        d = xx - t
        imgs += [np.clip(d, -0.5, 0.5) * 2, np.clip(F.BAR_WIDTH / 2 + 0.5 - np.abs(d), 0, 1)]
    best = np.abs(layer.forward(np.stack(imgs)[..., None])).max(axis=(0, 1, 2))
    r90 = F.tuning_curves(kern)[:, list(F.ANGLES).index(90.0)]
    np.testing.assert_allclose(best, r90, rtol=1e-9)


def test_random_filters_and_blobs_are_not_oriented():
    thr = F.null_threshold(5, 5)
    assert 0.1 < thr < 0.6 and thr == np.quantile(F.null_selectivity(5, 5), 0.95)   # fixed seed: the same null
    null = F.null_selectivity(5, 5, samples=4000, seed=1)
    assert 0.03 < np.mean(null > thr) < 0.07                      # an independent draw: about 5% above it
    yy, xx = np.mgrid[-2:3, -2:3]
    blob = np.exp(-(xx ** 2 + yy ** 2) / 2.0)[:, :, None, None]
    assert F.oriented(blob)["count"] == 0
    edge = edge_kernel(5, 90.0)
    assert F.oriented(edge)["count"] == 1
    assert F.oriented(edge, initial=edge)["count"] == 0           # not more oriented than at its start


def test_patch_components_of_vertical_stripes_are_vertical():
    """Images that vary only along x: every component with variance is constant down each column."""
    rng = np.random.default_rng(0)
    rows = rng.uniform(0, 1, (50, 1, 20, 1))
    images = np.repeat(rows, 20, axis=1)
    comps, ratio = F.patch_components(images, 5, 5, n=3000)
    assert ratio.sum() == pytest.approx(1.0)
    strong = ratio > 1e-6
    assert strong.sum() == 5                                      # 5 columns: 5 directions of variance
    c = comps[..., 0, strong]
    np.testing.assert_allclose(c, np.broadcast_to(c[:1], c.shape), atol=1e-6)
    flat = comps.reshape(25, -1)
    np.testing.assert_allclose(flat.T @ flat, np.eye(25), atol=1e-8)  # orthonormal
    peak = flat[np.argmax(np.abs(flat), axis=0), np.arange(25)]
    assert np.all(peak > 0)


def test_patch_components_match_the_singular_vectors():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (20, 12, 12, 1))
    comps, ratio = F.patch_components(images, 3, 3, n=2000, seed=4, skip_flat=0.0)
    p = F.random_patches(images, 3, 3, n=2000, seed=4).reshape(2000, -1)
    p = p - p.mean(axis=0)
    _, s, vt = np.linalg.svd(p, full_matrices=False)
    np.testing.assert_allclose(ratio, s ** 2 / (s ** 2).sum(), rtol=1e-8)
    np.testing.assert_allclose(np.abs(comps.reshape(9, 9).T @ vt.T), np.eye(9), atol=1e-6)


def test_top_patch_average_is_the_best_patch():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (4, 9, 9, 2)).astype(np.float32)
    layer = Conv2D(3, 3, strides=2, padding=1, dilation=1)
    layer.build((9, 9, 2))
    avg = F.top_patch_average(layer, x, k=1)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    k = layer.params["kernel"]
    for f in range(3):
        best, patch = -np.inf, None
        for n in range(4):
            for u in range(5):
                for v in range(5):
                    p = xp[n, 2 * u:2 * u + 3, 2 * v:2 * v + 3]
                    r = float((p * k[..., f]).sum())
                    if r > best:
                        best, patch = r, p
        np.testing.assert_allclose(avg[f], patch, rtol=1e-6)


def test_oriented_by_either_tuning_and_a_clear_error_otherwise():
    edge = edge_kernel(5, 45.0)
    for tuning in ("fourier", "stimulus"):
        o = F.oriented(edge, tuning=tuning)
        assert o["count"] == 1 and o["threshold"] == F.null_threshold(5, 5, tuning=tuning)
    with pytest.raises(ValueError, match="tuning is one of"):
        F.oriented(edge, tuning="wavelet")
    with pytest.raises(ValueError, match="initial kernel has shape"):
        F.oriented(edge, initial=np.zeros((3, 3, 1, 1)))
