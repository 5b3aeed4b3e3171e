"""The fast im2col convolution against the naive loop reference, and the output-size formula."""
import numpy as np
import pytest

from cnnlab import layers as L
from cnnlab.layers.geometry import resolve_padding
from conftest import random_conv_configs


@pytest.mark.parametrize("cfg,shape", random_conv_configs(30, seed=7, max_kernel=5, max_stride=3, sizes=(3, 13),
                                                             max_batch=3, max_channels_per_group=3))
@pytest.mark.parametrize("band_bytes", [None, 1], ids=["whole", "row-by-row"])
def test_fast_conv_equals_naive_loops(cfg, shape, band_bytes, compiled_loops):
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape)
    layer = L.Conv2D(**cfg)
    if band_bytes:
        layer.BAND_BYTES = band_bytes                 # every output row its own band
    layer.build(shape[1:], rng=rng, dtype=np.float64)
    bias = layer.params.get("bias")
    if bias is not None:
        bias[...] = rng.standard_normal(cfg["filters"])
    pads = resolve_padding(layer.padding, shape[1:3], layer.kernel_size, layer.strides, layer.dilation)
    expected = L.conv2d_naive(x, layer.params["kernel"], bias, layer.strides, pads, layer.dilation,
                              cfg["groups"])
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,padding", [((2, 8, 8, 3), "same"), ((3, 7, 9, 2), "valid"), ((1, 5, 4, 4), (2, 1)),
                                           ((2, 3, 3, 1), 0), ((1, 6, 11, 5), (0, 2))])
@pytest.mark.parametrize("block_bytes", [None, 1], ids=["one-block", "tile-by-tile"])
@pytest.mark.parametrize("k", [3, 5])
def test_winograd_conv_equals_naive_loops(shape, padding, block_bytes, k, compiled_loops):
    rng = np.random.default_rng(9)
    if k == 5:                                        # room for a 5x5 kernel
        shape = shape[:1] + (shape[1] + 2, shape[2] + 2) + shape[3:]
    x = rng.standard_normal(shape)
    layer = L.Conv2D(4, k, padding=padding)
    layer._algorithm = lambda channels: "winograd"   # Winograd F(2x2, kxk) on any number of channels
    if block_bytes:
        layer.WINOGRAD_BAND_BYTES = block_bytes       # every tile its own block
    layer.build(shape[1:], rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.standard_normal(4)
    pads = resolve_padding(layer.padding, shape[1:3], layer.kernel_size, layer.strides, layer.dilation)
    expected = L.conv2d_naive(x, layer.params["kernel"], layer.params["bias"], pads=pads)
    np.testing.assert_allclose(layer.forward(x, training=True), expected, rtol=1e-12, atol=1e-12)
    assert layer._cache[0] == "winograd"


DIRECT_CASES = [  # (N, H, W, C), filters, kernel rows, padding: odd filter counts, "same", "valid", asymmetric, tall kernels
    ((2, 7, 9, 1), 6, 5, "same"), ((3, 6, 8, 3), 5, 5, "valid"), ((1, 5, 6, 7), 1, 3, (2, 1)), ((2, 4, 5, 2), 3, 1, 0),
    ((1, 3, 5, 4), 4, 7, "same"), ((2, 9, 12, 6), 16, 5, (0, 2)),
    ((8, 4, 70, 2), 3, 3, "same")]                   # rows of 70 x 8 = 560 numbers: two blocks of the loop


@pytest.mark.parametrize("shape,filters,kh,padding", DIRECT_CASES)
@pytest.mark.parametrize("kw", [3, 5])
def test_direct_conv_equals_naive_loops(shape, filters, kh, padding, kw):
    """Layers with 3- or 5-wide kernels and few channels run the compiled direct convolution (numba): filters
    two (5 taps) or four (3 taps) at a time, the remainders included."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape)
    layer = L.Conv2D(filters, (kh, kw), padding=padding)
    layer.build(shape[1:], rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.standard_normal(filters)
    pads = resolve_padding(layer.padding, shape[1:3], layer.kernel_size, layer.strides, layer.dilation)
    expected = L.conv2d_naive(x, layer.params["kernel"], layer.params["bias"], pads=pads)
    np.testing.assert_allclose(layer.forward(x, training=True), expected, rtol=1e-12, atol=1e-12)
    assert layer._cache[0] == "direct"
    relu = layer.forward_folded(x, np.full(filters, 2.0), np.full(filters, -0.5), relu=True)   # the epilogue
    np.testing.assert_allclose(relu, np.maximum(expected * 2 - 0.5, 0), rtol=1e-12, atol=1e-12)


def reference_max_pool(y, ph, pw):
    """Max over ``ph`` x ``pw`` windows that tile ``y`` (N, H, W, C), the rows and columns past the last whole
    window dropped; a NaN wins (np.maximum)."""
    n, h, w, c = y.shape
    y = y[:, :h // ph * ph, :w // pw * pw]
    windows = y.reshape(n, h // ph, ph, w // pw, pw, c)
    return np.maximum.reduce(np.maximum.reduce(windows, axis=4), axis=2)


@pytest.mark.parametrize("shape,filters,kh,padding,pool", [
    ((2, 7, 9, 1), 6, 5, "same", (2, 2)),             # the rows and column past the last window dropped
    ((3, 9, 11, 3), 11, 5, "valid", (2, 3)),          # filters: a group of POOL_GROUP and an odd remainder
    ((1, 9, 9, 2), 3, 3, (1, 2), (3, 3)),
    ((8, 4, 70, 2), 4, 3, "same", (2, 2))])           # rows of two blocks of the loop
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("kw", [3, 5])
def test_direct_conv_pools_as_it_writes_at_inference(shape, filters, kh, padding, pool, relu, kw):
    """``forward_folded`` with a max pool whose windows tile the output: the direct loop keeps each window's
    maximum only (compiled.direct_max_pool), the same numbers as the convolution, the map, the ReLU and the pool."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(16)
    x = rng.standard_normal(shape)
    x[0, 1, 1, 0] = np.nan                            # a NaN wins the windows it reaches, as in MaxPool2D
    layer = L.Conv2D(filters, (kh, kw), padding=padding)
    layer.build(shape[1:], rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.standard_normal(filters)
    scale, shift = rng.uniform(-2, 2, filters), rng.standard_normal(filters)     # negative scales: minima win
    shift[-1] = -100                                  # a filter whose map the ReLU zeroes (but for the NaN)
    mp = L.MaxPool2D(pool)
    mp.build(layer.output_shape, dtype=np.float64)
    assert layer.pools_while_writing(mp)
    pads = resolve_padding(layer.padding, shape[1:3], layer.kernel_size, layer.strides, layer.dilation)
    mapped = L.conv2d_naive(x, layer.params["kernel"], layer.params["bias"], pads=pads) * scale + shift
    expected = reference_max_pool(np.maximum(mapped, 0) if relu else mapped, *pool)
    got = layer.forward_folded(x, scale, shift, relu=relu, pool=mp)
    assert np.isnan(got).any() and not np.isnan(got).all() and (not relu or (got == 0).any())
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, mp.forward(layer.forward_folded(x, scale, shift, relu=relu)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,padding", [((2, 8, 8, 3), "same"), ((3, 7, 9, 2), "same"), ((1, 9, 8, 4), "valid"),
                                           ((2, 6, 11, 2), (2, 1))])
@pytest.mark.parametrize("block_bytes", [None, 1], ids=["one-block", "tile-by-tile"])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("relu", [False, True])
def test_winograd_conv_pools_its_tiles_at_inference(shape, padding, block_bytes, k, relu, compiled_loops):
    """``forward_folded`` with a 2x2 max pool after Winograd: each 2x2 output tile is a window, so only the
    pooled output is written; odd outputs (the last tile overhangs, its window is dropped), blocks of tiles
    that end where windows do not, NaNs and negative scales give the layers' numbers."""
    rng = np.random.default_rng(18)
    if k == 5:                                        # room for a 5x5 kernel
        shape = shape[:1] + (shape[1] + 2, shape[2] + 2) + shape[3:]
    x = rng.standard_normal(shape)
    x[0, 1, 1, 0] = np.nan
    layer = L.Conv2D(5, k, padding=padding)
    layer._algorithm = lambda channels: "winograd"
    if block_bytes:
        layer.WINOGRAD_BAND_BYTES = block_bytes       # every tile its own block
    layer.build(shape[1:], rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.standard_normal(5)
    scale, shift = rng.uniform(-2, 2, 5), rng.standard_normal(5)
    shift[-1] = -100
    mp = L.MaxPool2D(2)
    mp.build(layer.output_shape, dtype=np.float64)
    assert layer.pools_while_writing(mp) and not layer.pools_while_writing(L.MaxPool2D(3))
    pads = resolve_padding(layer.padding, shape[1:3], layer.kernel_size, layer.strides, layer.dilation)
    mapped = L.conv2d_naive(x, layer.params["kernel"], layer.params["bias"], pads=pads) * scale + shift
    expected = reference_max_pool(np.maximum(mapped, 0) if relu else mapped, 2, 2)
    got = layer.forward_folded(x, scale, shift, relu=relu, pool=mp)
    assert np.isnan(got).any() and not np.isnan(got).all() and (not relu or (got == 0).any())
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_pools_that_do_not_tile_the_output_run_after_the_convolution():
    """Overlapping or padded windows, average pools, and windows other than 2x2 after Winograd: the pool runs
    after the convolution, with the same result as the two layers."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(17)
    for channels, pool in ((1, L.MaxPool2D(3, strides=2)), (1, L.MaxPool2D(2, padding="same")),
                           (1, L.AvgPool2D(2)), (16, L.MaxPool2D(3))):
        x = rng.standard_normal((2, 7, 7, channels))
        layer = L.Conv2D(4, 5, padding="same")
        layer.build(x.shape[1:], rng=rng, dtype=np.float64)
        pool.build(layer.output_shape, dtype=np.float64)
        assert not layer.pools_while_writing(pool)
        scale, shift = rng.uniform(-2, 2, 4), rng.standard_normal(4)
        expected = pool.forward(layer.forward_folded(x, scale, shift, relu=True))
        np.testing.assert_allclose(layer.forward_folded(x, scale, shift, relu=True, pool=pool), expected,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [3, 5])
def test_direct_conv_backward_equals_im2col_in_blocks(kw):
    """Rows longer than one block of the compiled loop (``compiled.DIRECT_BLOCK``): the kernel and input
    gradients of the direct path equal im2col's (checked against finite differences in test_gradients)."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(13)
    x = rng.standard_normal((9, 6, 75, 3))                           # rows of 75 x 9 = 675 numbers
    results = {}
    for name in ("direct", "im2col"):
        layer = L.Conv2D(5, (5, kw), padding=(1, 3))
        layer._algorithm = lambda channels, name=name: name
        layer.build(x.shape[1:], rng=np.random.default_rng(14), dtype=np.float64)
        y = layer.forward(x, training=True)
        dy = np.random.default_rng(15).standard_normal(y.shape)
        results[name] = (y, layer.backward(dy), layer.grads["kernel"].copy(), layer.grads["bias"].copy())
        assert layer._cache[0] == name
    for a, b in zip(results["direct"], results["im2col"]):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("k,c", [(5, 6), (3, 32)])
def test_direct_conv_float32_error_is_that_of_a_dot_product(k, c):
    """In float32 the direct sums (fused multiply-adds in any order) stay within k^2 C units of roundoff,
    scaled by the sum of |x| |w| per output, the bound of a dot product; measured against im2col's."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(12)
    x = rng.standard_normal((8, 20, 20, c))
    kernel = rng.standard_normal((k, k, c, 16)) / 10
    pads = (k // 2,) * 4
    expected = L.conv2d_naive(x, kernel, pads=pads)
    scale = L.conv2d_naive(np.abs(x), np.abs(kernel), pads=pads)
    errors = {}
    for name in ("direct", "im2col"):
        layer = L.Conv2D(16, k, padding="same", use_bias=False)
        layer._algorithm = lambda channels, name=name: name
        layer.build(x.shape[1:], dtype=np.float32)
        layer.params["kernel"][...] = kernel
        errors[name] = float(np.max(np.abs(layer.forward(x.astype(np.float32)) - expected) / scale))
    eps = np.finfo(np.float32).eps
    assert errors["direct"] < 4 * eps and errors["im2col"] < 4 * eps, errors


@pytest.mark.parametrize("k,bound", [(3, 4), (5, 6)])
def test_winograd_float32_error_bound(k, bound, compiled_loops):
    """In float32 Winograd F(2x2, 3x3) stays within 4 units of roundoff of the float64 result, and F(2x2, 5x5)
    within 6 (3.4-4.0 measured on three draws of this data, against 0.9-1.8 for 3x3), scaled by the sum of |x| |w| over each output's k^2 C taps (the bound of a direct dot product is
    k^2 C such units); its worst case here is measured against that of im2col (the direct sum) on the same data."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 16, 16, 64))
    kernel = rng.standard_normal((k, k, 64, 32)) / (8 * k)
    pads = (k // 2,) * 4
    expected = L.conv2d_naive(x, kernel, pads=pads)
    scale = L.conv2d_naive(np.abs(x), np.abs(kernel), pads=pads)   # sum |x| |w| per output
    errors = {}
    for name in ("winograd", "im2col"):
        layer = L.Conv2D(32, k, padding="same", use_bias=False)      # 64 -> 32 channels: Winograd by default
        if name == "im2col":
            layer._algorithm = lambda channels: "im2col"
        else:
            layer._algorithm = lambda channels: "winograd"         # (5x5 uses it by default with numba only)
        layer.build(x.shape[1:], dtype=np.float32)
        layer.params["kernel"][...] = kernel
        y = layer.forward(x.astype(np.float32))
        assert layer._cache[0] == name
        errors[name] = float(np.max(np.abs(y - expected) / scale))
    eps = np.finfo(np.float32).eps
    assert errors["winograd"] < bound * eps, errors
    assert errors["im2col"] < 4 * eps, errors


def test_naive_reference_on_the_textbook_example():
    # The classic 5x5 binary image and 3x3 kernel: 9 convolved features by hand.
    image = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], float)
    kernel = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], float)
    y = L.conv2d_naive(image[None, :, :, None], kernel[:, :, None, None])
    np.testing.assert_array_equal(y[0, :, :, 0], [[4, 3, 4], [2, 4, 3], [2, 3, 4]])


@pytest.mark.parametrize("h,k,s,d,padding,expected", [
    (28, 5, 1, 1, "same", 28), (28, 5, 1, 1, "valid", 24), (28, 5, 2, 1, "same", 14), (7, 3, 2, 1, "valid", 3),
    (10, 3, 1, 2, "valid", 6), (10, 3, 3, 1, 1, 4), (5, 2, 1, 1, "same", 5),
])
def test_output_size_formula(h, k, s, d, padding, expected):
    layer = L.Conv2D(1, k, strides=s, dilation=d, padding=padding)
    assert layer.compute_output_shape((h, h, 1)) == (expected, expected, 1)
    assert layer.forward(np.zeros((1, h, h, 1), np.float32)).shape == (1, expected, expected, 1)


def test_conv_is_fully_convolutional_but_checks_channels():
    layer = L.Conv2D(2, 3)
    layer.forward(np.zeros((1, 8, 8, 3), np.float32))
    assert layer.forward(np.zeros((2, 12, 9, 3), np.float32)).shape == (2, 10, 7, 2)
    with pytest.raises(ValueError, match=r"expected input \(N, H, W, 3\), received \(1, 8, 8, 4\)"):
        layer.forward(np.zeros((1, 8, 8, 4), np.float32))
