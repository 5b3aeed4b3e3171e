"""The compiled Winograd loops (numba) against the NumPy functions of conv.py they replace.

The forward transforms add the same terms in the same order, so they must agree to the last bit; the input
adjoint adds overlapping tiles onto shared pixels in another order, so it agrees to rounding. The layers
with either implementation are checked against the naive loops and finite differences in
test_conv_reference.py and test_gradients.py (the ``compiled_loops`` fixture runs them with both).
"""
import numpy as np
import pytest

from cnnlab.layers import compiled, conv, winograd


def blocks(rng, tiles):
    """A random block of tiles and the whole range, as (r0, r1, c0, c1)."""
    r0, c0 = rng.integers(0, tiles[0]), rng.integers(0, tiles[1])
    return [(0, tiles[0], 0, tiles[1]),
            (int(r0), int(rng.integers(r0 + 1, tiles[0] + 1)), int(c0), int(rng.integers(c0 + 1, tiles[1] + 1)))]


CASES = [(c, f, ty, tx, n, dtype) for c, f, ty, tx, n in [(3, 2, 1, 1, 1), (5, 4, 3, 2, 7), (16, 8, 4, 5, 3),
                                                          (2, 6, 6, 6, 32)]
         for dtype in (np.float32, np.float64)]


@pytest.mark.parametrize("r", [3, 5], ids=["F(2x2,3x3)", "F(2x2,5x5)"])
@pytest.mark.parametrize("c,f,ty,tx,n,dtype", CASES)
def test_compiled_winograd_matches_numpy(c, f, ty, tx, n, dtype, r):
    tf = winograd.TRANSFORMS[r]
    nn, h = tf.n, tf.halo
    loop_input, loop_output, loop_output_adjoint, loop_input_adjoint = compiled.WINOGRAD[r]
    rng = np.random.default_rng([c, f, ty, tx, n, r])
    xq = rng.standard_normal((c, 2, 2, ty + h, tx + h, n)).astype(dtype)
    dyq = rng.standard_normal((f, 2, 2, ty, tx, n)).astype(dtype)
    for r0, r1, c0, c1 in blocks(rng, (ty, tx)):
        block, k = (r1 - r0, c1 - c0), (r1 - r0) * (c1 - c0) * n
        v = np.empty((nn, nn, c, *block, n), dtype)
        expected = winograd.winograd_input(tf, xq[:, :, :, r0:r1 + h, c0:c1 + h], block)
        got = loop_input(xq, r0, r1, c0, c1, v).reshape(nn * nn, c, k)
        assert np.array_equal(got, expected)

        m = rng.standard_normal((nn * nn, f, k)).astype(dtype)
        bias = rng.standard_normal(f).astype(dtype)
        for epilogue in (None, "bias", "bias+relu"):              # what a folded BatchNorm (+ ReLU) adds as y is written
            y, y_ref = np.zeros((f, 2 * ty, 2 * tx, n), dtype), np.zeros((f, 2 * ty, 2 * tx, n), dtype)
            out = winograd.winograd_output(tf, m, y_ref[:, 2 * r0:2 * r1, 2 * c0:2 * c1], block)
            if epilogue:
                out += bias[:, None, None, None]
            if epilogue == "bias+relu":
                np.maximum(out, 0, out=out)
            loop_output(m.reshape(nn, nn, f, *block, n), y, r0, r1, c0, c1,
                        bias if epilogue else np.zeros(0, dtype), epilogue == "bias+relu")
            assert np.array_equal(y, y_ref)
        assert (y == 0).any() and (y < 0).sum() == 0                # the last one had its negatives clipped

        dm = np.empty((nn, nn, f, *block, n), dtype)
        expected = winograd.winograd_output_adjoint(tf, dyq[:, :, :, r0:r1, c0:c1], block)
        got = loop_output_adjoint(dyq, r0, r1, c0, c1, dm).reshape(nn * nn, f, k)
        assert np.array_equal(got, expected)

        dv = rng.standard_normal((nn * nn, c, k)).astype(dtype)
        start = rng.standard_normal(xq.shape).astype(dtype)          # the adjoint adds onto what is there
        dxq, dxq_ref = start.copy(), start.copy()
        winograd.winograd_input_adjoint(tf, dv, dxq_ref[:, :, :, r0:r1 + h, c0:c1 + h], block)
        loop_input_adjoint(dv.reshape(nn, nn, c, *block, n), dxq, r0, r1, c0, c1)
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(dxq, dxq_ref, rtol=tol, atol=tol * 10)
        assert not np.array_equal(dxq, start)


@pytest.mark.parametrize("r", [3, 5])
def test_winograd_matrices_compute_a_correlation(r):
    """``A^T [(G g) * (B^T d)]`` is the valid correlation of a tile d (n numbers) with g (r numbers), in 1-D."""
    tf = winograd.TRANSFORMS[r]
    rng = np.random.default_rng(r)
    d, g = rng.standard_normal(tf.n), rng.standard_normal(r)
    expected = [d[i:i + r] @ g for i in range(2)]
    np.testing.assert_allclose(tf.at @ ((tf.g @ g) * (tf.bt @ d)), expected, rtol=1e-13, atol=1e-13)


def test_compiled_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("CNNLAB_COMPILED", "0")
    assert not compiled.enabled()
    monkeypatch.setenv("CNNLAB_COMPILED", "1")
    assert compiled.enabled()


POOLS = [dict(pool_size=2), dict(pool_size=3, strides=2, padding="same"), dict(pool_size=(2, 3), strides=1, padding=1),
         dict(pool_size=3, strides=1), dict(pool_size=(3, 2), strides=(2, 1))]


@pytest.mark.parametrize("cfg", POOLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_max_pool_matches_numpy(cfg, dtype, monkeypatch):
    """Same outputs and gradients, bit for bit, with ties (small integers) and overlapping or padded windows."""
    from cnnlab import layers as L
    rng = np.random.default_rng(len(str(cfg)))
    x = rng.integers(-3, 4, (3, 7, 8, 5)).astype(dtype)
    results = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("CNNLAB_COMPILED", flag)
        pool = L.MaxPool2D(**cfg)
        pool.build(x.shape[1:], dtype=dtype)
        y = pool.forward(x, training=True)
        assert pool._cache[0] == ("compiled" if flag == "1" else "numpy")
        dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
        results[flag] = (y, pool.backward(dy))
    np.testing.assert_array_equal(results["1"][0], results["0"][0])
    if pool.strides == pool.pool_size and pool.padding == "valid":
        np.testing.assert_array_equal(results["1"][1], results["0"][1])
    else:                                       # overlapping windows: a pixel's shares are added in another order
        tol = 1e-12 if dtype == np.float64 else 1e-6
        np.testing.assert_allclose(results["1"][1], results["0"][1], rtol=tol, atol=tol)


@pytest.mark.parametrize("seed", range(6))
def test_compiled_col2im_matches_numpy(seed, monkeypatch):
    """Random kernels, strides, dilations and a band's row offset; the sums reach a pixel in another order."""
    rng = np.random.default_rng(seed)
    kh, kw, sh, sw, dh, dw = (int(v) for v in rng.integers(1, 4, 6))
    c, n, ho, wo, row0 = (int(v) for v in rng.integers(1, 5, 5))
    hp, wp = row0 + (ho - 1) * sh + (kh - 1) * dh + 1 + int(rng.integers(0, 3)), (wo - 1) * sw + (kw - 1) * dw + 1
    dcols = rng.standard_normal((c * kh * kw, ho * wo * n))
    start = rng.standard_normal((c, hp, wp, n))
    out = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("CNNLAB_COMPILED", flag)
        out[flag] = conv.col2im(dcols, start.copy(), (kh, kw), (ho, wo), (sh, sw), (dh, dw), row0=row0)
    np.testing.assert_allclose(out["1"], out["0"], rtol=1e-12, atol=1e-12)
    assert np.array_equal(out["1"][:, :row0], start[:, :row0])      # rows above the band are left alone
