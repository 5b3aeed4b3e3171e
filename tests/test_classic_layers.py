"""``LocalResponseNorm`` and ``ChannelShuffle``: finite differences (float64), PyTorch, and ONNX's LRN.

The configurations are randomized (sizes, constants, channel counts); PyTorch's ``LocalResponseNorm``
agrees with ONNX's definition for odd window sizes, onnxruntime's ``LRN`` is the reference for every size.
"""
import numpy as np
import pytest

import cnnlab
from cnnlab.gradcheck import check_layer
from cnnlab.layers import ChannelShuffle, LocalResponseNorm
from cnnlab.layers.lrn import window_sum

CONFIGS = [(int(s), float(a), float(b), float(k)) for s, a, b, k in
           zip([1, 2, 3, 4, 5, 7], *np.random.default_rng(0).uniform([0.05, 0.3, 0.5], [2.0, 1.2, 2.5], (6, 3)).T)]


def test_window_sum_is_the_clipped_sum_of_neighbours():
    a = np.random.default_rng(1).standard_normal((3, 9))
    for before, after in ((0, 0), (1, 2), (2, 1), (4, 0), (0, 11)):
        naive = np.stack([a[:, max(0, c - before):c + after + 1].sum(1) for c in range(9)], 1)
        np.testing.assert_allclose(window_sum(a, before, after), naive, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, alpha, beta, k", CONFIGS)
def test_local_response_norm_gradient(size, alpha, beta, k):
    x = np.random.default_rng(size).standard_normal((2, 3, 4, 7))
    errors = check_layer(LocalResponseNorm(size, alpha, beta, k), x)
    assert errors["input"] < 1e-6, errors


@pytest.mark.parametrize("groups, channels", [(1, 5), (2, 6), (3, 12), (4, 8), (6, 6)])
def test_channel_shuffle_gradient(groups, channels):
    x = np.random.default_rng(groups).standard_normal((2, 3, 2, channels))
    assert check_layer(ChannelShuffle(groups), x)["input"] < 1e-6


def test_channel_shuffle_is_the_grid_read_by_columns():
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 1, 12)
    # groups 3, m = 4: channel i*3 + j of the output is channel j*4 + i of the input
    assert ChannelShuffle(3).forward(x).ravel().tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]


@pytest.mark.parametrize("seed", range(4))
def test_against_pytorch_forward_and_backward(seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    groups, m = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    size = int(rng.choice([1, 3, 5, 7]))                            # odd: PyTorch's window is ONNX's
    alpha, beta, k = rng.uniform(0.01, 2), rng.uniform(0.3, 1.2), rng.uniform(0.5, 2.5)
    x = rng.standard_normal((2, int(rng.integers(3, 7)), int(rng.integers(3, 7)), groups * m))
    dy = rng.standard_normal(x.shape)
    for ours, theirs in ((LocalResponseNorm(size, alpha, beta, k), torch.nn.LocalResponseNorm(size, alpha, beta, k)),
                         (ChannelShuffle(groups), torch.nn.ChannelShuffle(groups))):
        y = ours.forward(x)
        dx = ours.backward(dy)
        t = torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)
        ty = theirs(t)
        ty.backward(torch.from_numpy(dy.transpose(0, 3, 1, 2)))
        np.testing.assert_allclose(y, ty.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dx, t.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size, alpha, beta, k", CONFIGS)
def test_every_window_size_follows_the_onnx_formula(size, alpha, beta, k):
    """ONNX's text, as a loop: channels c - floor((n-1)/2) to c + ceil((n-1)/2), clipped (onnxruntime takes only
    odd n, and the onnx package's reference evaluator loops over the batch instead of the channels)."""
    x = np.random.default_rng(size).standard_normal((2, 3, 2, 6))
    expected = np.empty_like(x)
    for c in range(6):
        lo, hi = max(0, c - (size - 1) // 2), min(5, c + int(np.ceil((size - 1) / 2)))
        expected[..., c] = x[..., c] / (k + alpha / size * (x[..., lo:hi + 1] ** 2).sum(-1)) ** beta
    np.testing.assert_allclose(LocalResponseNorm(size, alpha, beta, k).forward(x), expected, rtol=1e-12)


@pytest.mark.parametrize("size, alpha, beta, k", [c for c in CONFIGS if c[0] % 2])
def test_local_response_norm_is_onnxruntime_lrn(size, alpha, beta, k, tmp_path):
    """onnxruntime's LRN and ChannelShuffle's Reshape/Transpose/Reshape, via cnnlab's export and back."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from cnnlab.onnx import export, load
    model = cnnlab.Sequential([cnnlab.layers.Conv2D(6, 3), LocalResponseNorm(size, alpha, beta, k),
                               ChannelShuffle(3), cnnlab.layers.Flatten(), cnnlab.layers.Dense(4)],
                              input_shape=(7, 6, 5), seed=size)
    path = export(model, tmp_path / "lrn.onnx")
    x = np.random.default_rng(size).standard_normal((3, 7, 6, 5)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
    np.testing.assert_allclose(model.predict(x, workers=1), reference, rtol=1e-4, atol=1e-6)
    again = load(path)                                   # and back in: the same layers, the same numbers
    assert [type(layer).__name__ for layer in again.layers][1:3] == ["LocalResponseNorm", "ChannelShuffle"]
    np.testing.assert_allclose(again.predict(x, workers=1), reference, rtol=1e-4, atol=1e-6)


def test_saved_and_loaded(tmp_path):
    model = cnnlab.Sequential([cnnlab.layers.Conv2D(4, 3), LocalResponseNorm(3, 0.2, 0.6, 1.5), ChannelShuffle(2),
                               cnnlab.layers.GlobalAvgPool2D(), cnnlab.layers.Dense(3)], input_shape=(6, 6, 2), seed=0)
    model.save(tmp_path / "m.safetensors")
    again = cnnlab.load(tmp_path / "m.safetensors")
    assert again.layers[1].get_config() == {"size": 3, "alpha": 0.2, "beta": 0.6, "k": 1.5}
    assert again.layers[2].get_config() == {"groups": 2}
    x = np.random.default_rng(0).random((2, 6, 6, 2), dtype=np.float32)
    np.testing.assert_array_equal(again.predict(x, workers=1), model.predict(x, workers=1))


@pytest.mark.parametrize("make, message", [
    (lambda: LocalResponseNorm(0), "size must be a positive integer"),
    (lambda: LocalResponseNorm(5, alpha=-1.0), "alpha must be a finite number >= 0"),
    (lambda: LocalResponseNorm(5, alpha=0.0, k=0.0), "divides by zero"),
    (lambda: ChannelShuffle(0), "groups must be a positive integer"),
    (lambda: ChannelShuffle(4).build((3, 3, 6)), "6 channels do not split into 4 groups"),
    (lambda: LocalResponseNorm().build((8,)), "expects images"),
])
def test_bad_arguments_are_refused_quoting_them(make, message):
    with pytest.raises(ValueError, match=message):
        make()
