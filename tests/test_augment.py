"""Tests for cnnlab.augment: each transform against a naive per-image reference."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from cnnlab.augment import (
    PRESETS,
    SPEC_HELP,
    Augmenter,
    Step,
    _sample_bilinear,
    affine,
    affine_matrices,
    cutout,
    elastic_distortion,
    gaussian_blur,
    random_affine,
    random_crop,
    random_flip_horizontal,
    random_rotate,
    random_scale,
    random_translate,
    warp_displacement,
)


def images(n=6, h=9, w=11, c=3, seed=0):
    """Random float32 images, strictly positive so zeroed pixels are easy to spot."""
    return np.random.default_rng(seed).uniform(0.1, 1.0, size=(n, h, w, c)).astype(np.float32)


def rng(seed=0):
    return np.random.default_rng(seed)


# Every random transform, with arguments that make it actually change the images.
RANDOM_TRANSFORMS = {
    "translate": lambda x, g: random_translate(x, g, 2),
    "translate_fraction": lambda x, g: random_translate(x, g, 0.2),
    "rotate": lambda x, g: random_rotate(x, g, 30),
    "scale": lambda x, g: random_scale(x, g, 0.8, 1.2),
    "affine": lambda x, g: random_affine(x, g, degrees=20, translate=1, scale=(0.9, 1.1), shear=10),
    "elastic": lambda x, g: elastic_distortion(x, g, alpha=8.0, sigma=2.0),
    "flip": lambda x, g: random_flip_horizontal(x, g, 0.5),
    "crop": lambda x, g: random_crop(x, g, 3),
    "cutout": lambda x, g: cutout(x, g, 4),
    "augmenter": lambda x, g: Augmenter.from_spec("mnist,elastic,cifar,cutout=3")(x, g),
}


# ---------------------------------------------------------------------------
# Naive references
# ---------------------------------------------------------------------------

def naive_bilinear(x, src_y, src_x):
    """Bilinear sampling one output pixel at a time, zero outside the image."""
    n, h, w, c = x.shape
    out = np.zeros(src_y.shape + (c,), dtype=np.float64)
    for b in range(n):
        for i in range(src_y.shape[1]):
            for j in range(src_y.shape[2]):
                sy, sx = src_y[b, i, j], src_x[b, i, j]
                y0, x0 = int(np.floor(sy)), int(np.floor(sx))
                fy, fx = sy - y0, sx - x0
                for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
                    for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                        if 0 <= yy < h and 0 <= xx < w:
                            out[b, i, j] += wy * wx * x[b, yy, xx]
    return out


def naive_shift(image, shift_y, shift_x):
    """np.roll one image, then zero what wrapped around."""
    out = np.roll(image, (shift_y, shift_x), axis=(0, 1))
    if shift_y > 0:
        out[:shift_y] = 0
    elif shift_y < 0:
        out[shift_y:] = 0
    if shift_x > 0:
        out[:, :shift_x] = 0
    elif shift_x < 0:
        out[:, shift_x:] = 0
    return out


def naive_blur(image, sigma):
    """2-D Gaussian blur of one (H, W) image by direct summation over the kernel,
    mirroring out-of-range indices (period 2 * size, second half reversed)."""
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()

    def mirror(i, size):
        i %= 2 * size
        return i if i < size else 2 * size - 1 - i

    h, w = image.shape
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for a, ta in enumerate(taps):
                for b, tb in enumerate(taps):
                    out[i, j] += ta * tb * image[mirror(i + a - radius, h), mirror(j + b - radius, w)]
    return out


# ---------------------------------------------------------------------------
# The sampler and the affine mechanism
# ---------------------------------------------------------------------------

def test_sample_bilinear_matches_naive_loop():
    x = images(n=3, h=5, w=6, c=2).astype(np.float64)
    g = rng(1)
    # coordinates well inside, on the border and fully outside the image
    src_y = g.uniform(-2.5, 6.5, size=(3, 4, 7))
    src_x = g.uniform(-2.5, 7.5, size=(3, 4, 7))
    src_y[0, 0, :3] = [0.0, 4.0, -1.0]  # exact integers, including just outside
    src_x[0, 0, :3] = [5.0, 0.0, 2.0]
    got = _sample_bilinear(x, src_y, src_x)
    assert got.shape == (3, 4, 7, 2)
    np.testing.assert_allclose(got, naive_bilinear(x, src_y, src_x), rtol=0, atol=1e-12)


def test_sample_bilinear_integer_positions_are_exact():
    x = images()
    n, h, w, _ = x.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    got = _sample_bilinear(x, np.broadcast_to(ys, (n, h, w)), np.broadcast_to(xs, (n, h, w)))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x)


def test_sample_bilinear_float32_matches_naive_loop():
    # float32 images: positions and weights in float32, within float32 rounding of the reference
    x = images(n=3, h=5, w=6, c=2)
    g = rng(2)
    src_y = g.uniform(-2.5, 6.5, size=(3, 4, 7))
    src_x = g.uniform(-2.5, 7.5, size=(3, 4, 7))
    got = _sample_bilinear(x, src_y, src_x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, naive_bilinear(x, src_y, src_x), rtol=0, atol=1e-5)
    # one channel takes the single-channel path of the sampler
    got = _sample_bilinear(x[..., :1], src_y, src_x)
    np.testing.assert_allclose(got, naive_bilinear(x[..., :1], src_y, src_x), rtol=0, atol=1e-5)


def test_sample_bilinear_far_outside_reads_zero():
    x = images(n=2, h=4, w=5, c=1)
    src = np.array([-1e6, -3.0, -1.0, 4.0, 5.0, 7.5, 1e6])
    src_y = np.broadcast_to(src[:, None], (2, 7, 7))
    src_x = np.full((2, 7, 7), 2.0)
    got = _sample_bilinear(x, src_y, src_x)
    np.testing.assert_array_equal(got, 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whole_pixel_shifts_equal_sampler_and_clear_beyond_the_size(dtype):
    x = images(n=6, h=5, w=7).astype(dtype)
    shift_y = np.array([0, 1, -2, 5, -9, 3])
    shift_x = np.array([0, -3, 2, 1, 0, 7])
    out = affine(x, shift_y=shift_y, shift_x=shift_x)
    assert out.dtype == dtype
    ys, xs = np.mgrid[0:5, 0:7].astype(np.float64)
    via_sampler = _sample_bilinear(x, ys - shift_y[:, None, None], xs - shift_x[:, None, None])
    np.testing.assert_array_equal(out, via_sampler)
    for i in range(len(x)):
        np.testing.assert_array_equal(out[i], naive_shift(x[i], shift_y[i], shift_x[i]))
    np.testing.assert_array_equal(out[3:5], 0.0)  # shifted by the height or more
    np.testing.assert_array_equal(out[5], 0.0)  # shifted by the width


def test_affine_matrices_identity_and_shape():
    m = affine_matrices(4, 9, 11)
    assert m.shape == (4, 2, 3)
    np.testing.assert_array_equal(m, np.broadcast_to([[1, 0, 0], [0, 1, 0]], (4, 2, 3)))


@pytest.mark.parametrize(
    "transform",
    [
        lambda x: random_translate(x, rng(), 0),
        lambda x: random_rotate(x, rng(), 0),
        lambda x: random_scale(x, rng(), 1.0, 1.0),
        lambda x: random_affine(x, rng()),
        lambda x: affine(x),
        lambda x: random_crop(x, rng(), 0),
        lambda x: random_flip_horizontal(x, rng(), 0.0),
        lambda x: cutout(x, rng(), 3, p=0.0),
        lambda x: elastic_distortion(x, rng(), alpha=0.0),
        lambda x: Augmenter.from_spec("none")(x, rng()),
    ],
    ids=["translate0", "rotate0", "scale1", "affine", "affine_det", "crop0", "flip0", "cutout0",
         "elastic0", "none"],
)
def test_identity_parameters_return_input_exactly(transform):
    x = images()
    np.testing.assert_array_equal(transform(x), x)


def test_integer_translation_equals_roll_with_zero_fill():
    x = images(n=8)
    out, params = random_translate(x, rng(3), 3, return_params=True)
    shifts_y = params["shift_y"].astype(int)
    shifts_x = params["shift_x"].astype(int)
    np.testing.assert_array_equal(params["shift_y"], shifts_y)  # whole pixels
    assert np.all(np.abs(shifts_y) <= 3) and np.all(np.abs(shifts_x) <= 3)
    assert np.any(shifts_y != 0) and np.any(shifts_x != 0)
    for i in range(len(x)):
        np.testing.assert_array_equal(out[i], naive_shift(x[i], shifts_y[i], shifts_x[i]))


def test_fractional_translation_is_bounded_by_fraction_of_size():
    x = images(n=50, h=10, w=20)
    _, params = random_translate(x, rng(), 0.25, return_params=True)
    assert np.all(np.abs(params["shift_y"]) <= 2.5)
    assert np.all(np.abs(params["shift_x"]) <= 5.0)
    assert np.any(params["shift_x"] != np.round(params["shift_x"]))  # continuous shifts
    assert np.abs(params["shift_x"]).max() > 2.5  # x uses the width, not the height


@pytest.mark.parametrize("degrees, k", [(90, 1), (-90, -1), (180, 2), (270, 3)])
def test_right_angle_rotation_equals_rot90(degrees, k):
    x = images(h=7, w=7)
    out = affine(x, degrees=degrees)
    np.testing.assert_allclose(out, np.rot90(x, k, axes=(1, 2)), rtol=0, atol=1e-6)


def test_positive_rotation_is_counter_clockwise():
    x = np.zeros((1, 9, 9, 1), dtype=np.float32)
    x[0, 4, 6] = 1.0  # right of the centre (4, 4)
    out = affine(x, degrees=90)
    assert out[0, 2, 4, 0] == pytest.approx(1.0)  # now above the centre
    assert out.sum() == pytest.approx(1.0)


def test_scale_above_one_enlarges_about_centre():
    x = np.zeros((1, 9, 9, 1), dtype=np.float32)
    x[0, 4, 5] = 1.0  # one pixel right of the centre
    out = affine(x, scale=2.0)
    assert out[0, 4, 6, 0] == 1.0  # now two pixels right of it
    assert out[0, 4, 5, 0] == pytest.approx(0.5)  # halfway between centre and dot
    assert out[0, 4, 4, 0] == 0.0


def test_positive_shear_moves_lower_rows_right():
    x = np.zeros((1, 9, 9, 1), dtype=np.float32)
    x[0, 5, 4] = 1.0  # one row below the centre
    x[0, 3, 4] = 1.0  # one row above
    out = affine(x, shear=45)
    assert out[0, 5, 5, 0] == pytest.approx(1.0)
    assert out[0, 3, 3, 0] == pytest.approx(1.0)


def test_random_rotate_and_scale_draw_within_range():
    x = images(n=200, h=4, w=4, c=1)
    _, p = random_rotate(x, rng(), 15, return_params=True)
    assert np.all(np.abs(p["degrees"]) <= 15) and np.abs(p["degrees"]).max() > 10
    _, p = random_scale(x, rng(), 0.8, 1.3, return_params=True)
    assert np.all((p["scale"] >= 0.8) & (p["scale"] <= 1.3))


def test_specialised_functions_share_random_affine_draws():
    x = images()
    np.testing.assert_array_equal(random_rotate(x, rng(5), 12), random_affine(x, rng(5), degrees=12))
    np.testing.assert_array_equal(random_translate(x, rng(5), 2), random_affine(x, rng(5), translate=2))
    np.testing.assert_array_equal(
        random_scale(x, rng(5), 0.9, 1.1), random_affine(x, rng(5), scale=(0.9, 1.1))
    )


def test_affine_image_alone_equals_image_in_batch():
    x = images(n=5)
    out, params = random_affine(
        x, rng(2), degrees=30, translate=0.2, scale=(0.8, 1.2), shear=15, return_params=True
    )
    for i in range(len(x)):
        alone = affine(x[i : i + 1], **{k: v[i] for k, v in params.items()})
        np.testing.assert_allclose(alone[0], out[i], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "transform",
    [
        lambda x, g: random_affine(x, g, degrees=40, translate=0.2, scale=(0.7, 1.3), shear=20),
        lambda x, g: elastic_distortion(x, g, alpha=20.0, sigma=2.0),
        lambda x, g: Augmenter.from_spec("mnist,elastic,cutout=3")(x, g),
    ],
    ids=["affine", "elastic", "augmenter"],
)
def test_float32_result_matches_float64_computation(transform):
    # float64 images are resampled in float64: the float32 result must agree to float32 rounding
    x = images(n=8, h=12, w=10, c=2)
    got = transform(x, rng(13))
    reference = transform(x.astype(np.float64), rng(13))
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------
# Elastic distortion and blur
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sigma, shape", [(1.0, (6, 7)), (2.5, (4, 5)), (0.4, (3, 3))])
def test_gaussian_blur_matches_naive_summation(sigma, shape):
    # sigma=2.5 on a 4x5 image reaches further than the image: mirroring repeats
    a = rng(4).normal(size=(3,) + shape + (2,))
    got = gaussian_blur(a, sigma)
    for n in range(3):
        for c in range(2):
            np.testing.assert_allclose(got[n, :, :, c], naive_blur(a[n, :, :, c], sigma), atol=1e-12)


def test_gaussian_blur_keeps_constants_and_zero_sigma_copies():
    a = np.full((2, 5, 6), 3.0)
    np.testing.assert_allclose(gaussian_blur(a, 2.0), a, atol=1e-12)
    b = rng().normal(size=(2, 5, 6))
    same = gaussian_blur(b, 0.0)
    np.testing.assert_array_equal(same, b)
    assert same is not b


def test_gaussian_blur_any_axes_and_float32():
    a = rng(5).normal(size=(3, 6, 7))
    expected = gaussian_blur(a, 1.5)  # axes (1, 2), checked against the naive sum above
    moved = gaussian_blur(a.transpose(1, 2, 0), 1.5, axes=(0, -2)).transpose(2, 0, 1)
    np.testing.assert_allclose(moved, expected, rtol=0, atol=1e-12)
    single = gaussian_blur(gaussian_blur(a, 1.5, axes=(2,)), 1.5, axes=(1,))
    np.testing.assert_allclose(single, expected, rtol=0, atol=1e-12)
    blurred32 = gaussian_blur(a.astype(np.float32), 1.5)
    assert blurred32.dtype == np.float32 and blurred32.flags.c_contiguous
    np.testing.assert_allclose(blurred32, expected, rtol=0, atol=1e-5)


def test_elastic_is_deterministic_and_roughly_preserves_mass():
    # a centred blob, like a digit: little of it can be pushed off the image
    ys, xs = np.mgrid[0:28, 0:28]
    blob = np.exp(-((ys - 13.5) ** 2 + (xs - 13.5) ** 2) / (2 * 4.0**2))
    x = np.broadcast_to(blob[None, :, :, None], (4, 28, 28, 1)).astype(np.float32)
    a = elastic_distortion(x, rng(7), alpha=34.0, sigma=4.0)
    b = elastic_distortion(x, rng(7), alpha=34.0, sigma=4.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, x)
    ratio = a.sum(axis=(1, 2, 3)) / x.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(ratio, 1.0, atol=0.1)


def test_elastic_fields_are_smooth_and_scaled_by_alpha():
    x = images(n=2, h=20, w=20, c=1)
    _, p1 = elastic_distortion(x, rng(8), alpha=1.0, sigma=3.0, return_params=True)
    _, p10 = elastic_distortion(x, rng(8), alpha=10.0, sigma=3.0, return_params=True)
    np.testing.assert_allclose(p10["dx"], 10 * p1["dx"], rtol=1e-12)
    # raw uniform noise has std ~0.58; after blurring with sigma=3 it is far smaller
    assert p1["dx"].std() < 0.15 and p1["dy"].std() < 0.15
    assert p1["dx"].shape == (2, 20, 20)


def test_elastic_fields_are_the_blurred_uniform_draws():
    x = images(n=3, h=9, w=8, c=1)
    _, p = elastic_distortion(x, rng(10), alpha=6.0, sigma=1.5, return_params=True)
    assert p["dy"].dtype == np.float32 and p["dy"].flags.c_contiguous
    # the same numbers as rng.uniform(-1, 1), blurred with gaussian_blur, times alpha
    field = rng(10).uniform(-1.0, 1.0, size=(3, 9, 8, 2))
    expected = 6.0 * gaussian_blur(field, 1.5)
    np.testing.assert_allclose(p["dy"], expected[..., 0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(p["dx"], expected[..., 1], rtol=0, atol=1e-5)


def test_elastic_image_alone_equals_image_in_batch():
    x = images(n=4)
    out, p = elastic_distortion(x, rng(9), alpha=5.0, sigma=2.0, return_params=True)
    for i in range(len(x)):
        alone = warp_displacement(x[i : i + 1], p["dy"][i : i + 1], p["dx"][i : i + 1])
        np.testing.assert_array_equal(alone[0], out[i])


# ---------------------------------------------------------------------------
# Flip, crop, cutout
# ---------------------------------------------------------------------------

def test_flip_always_equals_reversed_columns():
    x = images()
    np.testing.assert_array_equal(random_flip_horizontal(x, rng(), p=1.0), x[:, :, ::-1])


def test_flip_half_follows_drawn_mask():
    x = images(n=40)
    out, p = random_flip_horizontal(x, rng(), return_params=True)
    assert 0 < p["flipped"].sum() < 40
    for i in range(len(x)):
        np.testing.assert_array_equal(out[i], x[i, :, ::-1] if p["flipped"][i] else x[i])


def test_random_crop_windows_match_padded_input():
    x = images(n=30)
    pad = 3
    out, p = random_crop(x, rng(4), pad, return_params=True)
    assert out.shape == x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    for i in range(len(x)):
        oy, ox = p["offset_y"][i], p["offset_x"][i]
        assert 0 <= oy <= 2 * pad and 0 <= ox <= 2 * pad
        np.testing.assert_array_equal(out[i], padded[i, oy : oy + x.shape[1], ox : ox + x.shape[2]])
    assert len(set(p["offset_x"].tolist())) > 3  # offsets actually vary


@pytest.mark.parametrize("size", [3, 4])
def test_cutout_zeroes_exactly_a_square_when_inside(size):
    x = images(n=200, h=12, w=12)
    out, p = cutout(x, rng(6), size, return_params=True)
    zeros = (out == 0).all(axis=-1).sum(axis=(1, 2))
    top = p["center_y"] - size // 2
    left = p["center_x"] - size // 2
    inside = (top >= 0) & (left >= 0) & (top + size <= 12) & (left + size <= 12)
    assert inside.sum() > 50 and (~inside).sum() > 10
    np.testing.assert_array_equal(zeros[inside], size * size)
    assert np.all(zeros[~inside] < size * size)  # clipped at the border
    for i in np.flatnonzero(inside)[:10]:
        expected = x[i].copy()
        expected[top[i] : top[i] + size, left[i] : left[i] + size] = 0
        np.testing.assert_array_equal(out[i], expected)


def test_cutout_probability_leaves_some_images_untouched():
    x = images(n=50)
    out, p = cutout(x, rng(), 3, p=0.5, return_params=True)
    assert 0 < p["applied"].sum() < 50
    np.testing.assert_array_equal(out[~p["applied"]], x[~p["applied"]])


# ---------------------------------------------------------------------------
# Seeding, shape, dtype, input handling
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(RANDOM_TRANSFORMS))
def test_same_seed_same_output_different_seed_different(name):
    transform = RANDOM_TRANSFORMS[name]
    x = images(n=8)
    a = transform(x, rng(11))
    np.testing.assert_array_equal(a, transform(x, rng(11)))
    assert not np.array_equal(a, transform(x, rng(12)))


@pytest.mark.parametrize("name", list(RANDOM_TRANSFORMS))
def test_shape_and_float32_kept_and_input_untouched(name):
    x = images(n=5, h=8, w=10, c=2)
    before = x.copy()
    out = RANDOM_TRANSFORMS[name](x, rng())
    assert out.shape == x.shape and out.dtype == np.float32
    assert out is not x
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("name", list(RANDOM_TRANSFORMS))
def test_results_stay_valid_after_later_calls(name):
    # nothing handed out may share memory with buffers reused by the next call
    transform = RANDOM_TRANSFORMS[name]
    first = transform(images(n=5, seed=1), rng(1))
    kept = first.copy()
    transform(images(n=5, seed=2), rng(2))
    transform(images(n=3, h=7, w=8, seed=3), rng(3))
    np.testing.assert_array_equal(first, kept)


def test_returned_params_stay_valid_after_later_calls():
    _, params = elastic_distortion(images(n=4), rng(1), alpha=5.0, return_params=True)
    kept = {k: v.copy() for k, v in params.items()}
    elastic_distortion(images(n=4, seed=5), rng(2), alpha=9.0)
    for k in params:
        np.testing.assert_array_equal(params[k], kept[k])


def test_threads_give_the_sequential_results():
    augmenter = Augmenter.from_spec("mnist,elastic,cifar,cutout=3")
    x = images(n=32, h=20, w=20, c=1)
    expected = [augmenter(x, rng(seed)) for seed in range(6)]
    got = [[] for _ in range(6)]
    start = threading.Barrier(6)

    def work(seed):
        start.wait()
        for _ in range(20):
            got[seed].append(augmenter(x, rng(seed)))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed in range(6):
        for result in got[seed]:
            np.testing.assert_array_equal(result, expected[seed])


def test_empty_batch():
    x = np.zeros((0, 5, 5, 1), dtype=np.float32)
    assert Augmenter.from_spec("mnist,elastic,cifar,cutout")(x, rng()).shape == (0, 5, 5, 1)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (np.zeros((5, 5, 1), np.float32), "(5, 5, 1)"),
        (np.zeros((2, 1, 5, 5, 1), np.float32), "(2, 1, 5, 5, 1)"),
        (np.zeros((2, 5, 5, 1), np.uint8), "(2, 5, 5, 1)"),
    ],
)
def test_bad_input_raises_with_shape(bad, fragment):
    for call in (
        lambda: random_affine(bad, rng()),
        lambda: random_crop(bad, rng()),
        lambda: cutout(bad, rng(), 2),
        lambda: Augmenter.from_spec("cifar")(bad, rng()),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert fragment in str(info.value)


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError, match="Generator"):
        random_rotate(images(), 0, 10)
    with pytest.raises(TypeError, match="Generator"):
        random_flip_horizontal(images(), np.random.RandomState(0))


@pytest.mark.parametrize(
    "call",
    [
        lambda x: random_translate(x, rng(), 1.5),
        lambda x: random_translate(x, rng(), -1),
        lambda x: random_rotate(x, rng(), -5),
        lambda x: random_scale(x, rng(), 1.2, 0.8),
        lambda x: random_scale(x, rng(), 0.0, 1.0),
        lambda x: random_affine(x, rng(), shear=90),
        lambda x: random_flip_horizontal(x, rng(), 1.5),
        lambda x: random_crop(x, rng(), -1),
        lambda x: cutout(x, rng(), 0),
        lambda x: elastic_distortion(x, rng(), sigma=-1.0),
    ],
)
def test_bad_parameters_raise(call):
    with pytest.raises(ValueError):
        call(images())


# ---------------------------------------------------------------------------
# Augmenter and spec strings
# ---------------------------------------------------------------------------

def test_spec_parsing_defaults_and_values():
    a = Augmenter.from_spec("translate=2,rotate=10,elastic")
    assert [s.name for s in a.steps] == ["translate", "rotate", "elastic"]
    assert a.steps[0].kwargs == {"max_shift": 2}
    assert a.steps[1].kwargs == {"max_degrees": 10.0}
    assert a.steps[2].kwargs == {"alpha": 34.0, "sigma": 4.0}
    assert Augmenter.from_spec(" Elastic=20 , cutout=16:0.5 ").steps == (
        Step("elastic", (20.0, 4.0)),
        Step("cutout", (16, 0.5)),
    )
    # an int shift is pixels, a float shift a fraction of the size
    assert isinstance(Augmenter.from_spec("translate=0.1").steps[0].values[0], float)


@pytest.mark.parametrize(
    "spec",
    ["none", "mnist", "cifar", "mnist,elastic", "translate=0.1,shear=5.5,scale=0.95:1",
     "translate=0.0", "translate=1.0", "cutout=16:0.5,hflip=1,crop=2", "rotate=1e-05"],
)
def test_spec_round_trip(spec):
    a = Augmenter.from_spec(spec)
    text = a.to_spec()
    assert Augmenter.from_spec(text) == a
    assert Augmenter.from_spec(text).to_spec() == text


def test_to_spec_is_explicit():
    assert Augmenter.from_spec("none").to_spec() == "none"
    assert Augmenter().to_spec() == "none"
    assert Augmenter.from_spec("mnist").to_spec() == "rotate=10,translate=2,scale=0.9:1.1"
    assert Augmenter.from_spec("cifar").to_spec() == "crop=4,hflip=0.5"
    assert Augmenter.from_spec("elastic=20").to_spec() == "elastic=20:4"
    assert Augmenter.from_spec("translate=0.1").to_spec() == "translate=0.1"
    assert Augmenter(["hflip", Step("crop", (2,))]).to_spec() == "hflip=0.5,crop=2"
    assert eval(repr(Augmenter.from_spec("cifar")), {"Augmenter": Augmenter}) == Augmenter.from_spec("cifar")


def test_presets_expand_in_place():
    for name, expansion in PRESETS.items():
        if expansion:
            assert Augmenter.from_spec(name) == Augmenter.from_spec(expansion)
            assert name in SPEC_HELP
    assert len(Augmenter.from_spec("mnist,elastic")) == 4


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("bogus", "'bogus'"),
        ("rotate=10,blur=3", "'blur=3'"),
        ("rotate=abc", "'rotate=abc'"),
        ("scale=1.2:0.9", "'scale=1.2:0.9'"),
        ("translate=2.5", "'translate=2.5'"),
        ("elastic=1:2:3", "'elastic=1:2:3'"),
        ("crop=4.5", "'crop=4.5'"),
        ("hflip=2", "'hflip=2'"),
        ("shear=90", "'shear=90'"),
        ("rotate=nan", "'rotate=nan'"),
        ("mnist=1", "'mnist=1'"),
        ("rotate=10,,hflip", "'rotate=10,,hflip'"),
        ("none,rotate", "'none,rotate'"),
        ("", "none"),
    ],
)
def test_spec_errors_quote_the_token(spec, fragment):
    with pytest.raises(ValueError) as info:
        Augmenter.from_spec(spec)
    assert fragment in str(info.value)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        Augmenter.from_spec("rotate,blur")
    message = str(info.value)
    for name in ("translate", "rotate", "scale", "shear", "elastic", "hflip", "crop", "cutout",
                 "none", "mnist", "cifar"):
        assert name in message


def test_adjacent_geometric_steps_resample_once():
    x = images()
    fused = Augmenter.from_spec("rotate=10,translate=2,scale=0.9:1.1")(x, rng(3))
    direct = random_affine(x, rng(3), degrees=10.0, translate=2, scale=(0.9, 1.1))
    np.testing.assert_array_equal(fused, direct)
    # order inside a run of geometric steps does not matter
    swapped = Augmenter.from_spec("scale=0.9:1.1,translate=2,rotate=10")(x, rng(3))
    np.testing.assert_array_equal(swapped, direct)


def test_augmenter_applies_steps_in_order():
    x = images()
    got = Augmenter.from_spec("crop=2,hflip=0.5,rotate=5,cutout=3,rotate=5,rotate=5")(x, rng(4))
    g = rng(4)
    expected = random_crop(x, g, 2)
    expected = random_flip_horizontal(expected, g, 0.5)
    expected = random_affine(expected, g, degrees=5.0)
    expected = cutout(expected, g, 3, 1.0)
    expected = random_affine(expected, g, degrees=5.0)  # a repeated name starts a new warp
    expected = random_affine(expected, g, degrees=5.0)
    np.testing.assert_array_equal(got, expected)


def test_augmenter_returns_new_float32_from_float64():
    x = images().astype(np.float64)
    before = x.copy()
    out = Augmenter.from_spec("mnist")(x, rng())
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(x, before)
    none = Augmenter.from_spec("none")(x, rng())
    assert none.dtype == np.float32
    np.testing.assert_array_equal(none, x.astype(np.float32))


@pytest.mark.parametrize(
    "spec", ["hflip=1", "cutout=4", "hflip=0.5,cutout=3", "crop=2,hflip=1,cutout=5"]
)
def test_augmenter_in_place_steps_never_touch_the_input(spec):
    # flip and cutout change the pipeline's own array in place, never the caller's
    x = images(n=10)
    before = x.copy()
    got = Augmenter.from_spec(spec)(x, rng(6))
    np.testing.assert_array_equal(x, before)
    assert not np.shares_memory(got, x)
    g = rng(6)
    expected = x
    for step in Augmenter.from_spec(spec).steps:
        kw = step.kwargs
        if step.name == "hflip":
            expected = random_flip_horizontal(expected, g, kw["p"])
        elif step.name == "cutout":
            expected = cutout(expected, g, kw["size"], kw["p"])
        else:
            expected = random_crop(expected, g, kw["padding"])
    np.testing.assert_array_equal(got, expected)
