"""The one path that runs a model's layers: fused steps, captures, backward to a layer, input gradients."""
import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L
from cnnlab.gradcheck import numeric_gradient, relative_error
from cnnlab.stack import BatchNormAddReLU, BatchNormReLU, BatchNormReLUMaxPool, ReLUMaxPool


def small_model(seed=0):
    """conv -> ReLU -> max-pool -> conv -> BatchNorm -> ReLU -> max-pool -> flatten -> dense, in float64."""
    model = cnnlab.Sequential([L.Conv2D(3, 3, padding="same"), L.ReLU(), L.MaxPool2D(2),
                               L.Conv2D(4, 3, padding="same"), L.BatchNorm(), L.ReLU(), L.MaxPool2D(2),
                               L.Flatten(), L.Dense(5)], input_shape=(8, 8, 2), seed=seed).astype(np.float64)
    rng = np.random.default_rng(seed + 1)
    bn = model["batch_norm"]
    bn.buffers["running_mean"][...] = rng.standard_normal(bn.buffers["running_mean"].shape)
    bn.buffers["running_var"][...] = rng.uniform(0.5, 2, bn.buffers["running_var"].shape)
    return model


def by_hand(model, x, training=False):
    """Every layer's output, running the layers one after another."""
    outs = {}
    for layer in model.layers:
        x = outs[layer.name] = layer.forward(x, training)
    return outs


def test_plain_forward_fuses_relu_and_max_pool_and_capturing_the_relu_unfuses_it(compiled_loops):
    model = small_model()
    kinds = lambda *names: [type(r).__name__ for r, *_ in model.stack.plan(  # noqa: E731
        frozenset(model.stack.tensor(n) for n in names)).steps]
    if compiled_loops == "numpy":
        assert kinds() == ["Conv2D", "ReLUMaxPool", "Conv2D", "BatchNorm", "ReLUMaxPool", "Flatten", "Dense"]
    else:                                    # BatchNorm -> ReLU -> MaxPool: one step
        assert kinds() == ["Conv2D", "ReLUMaxPool", "Conv2D", "BatchNormReLUMaxPool", "Flatten", "Dense"]
        assert kinds("batch_norm")[3:5] == ["BatchNorm", "ReLUMaxPool"]     # capturing BatchNorm unfuses it
        assert kinds("relu_1")[3:5] == ["BatchNormReLU", "MaxPool2D"]      # ... capturing its ReLU, the pair stays
    assert kinds("relu").count("ReLUMaxPool") == kinds().count("ReLUMaxPool") - 1 and "ReLU" in kinds("relu")
    # Capturing the pool keeps the fused step: its output is the pool's exact output.
    assert kinds("max_pool2d") == kinds()


def test_fused_and_unfused_passes_are_bit_identical():
    """Outputs bit for bit; gradients too, but for BatchNorm's sums, which the BatchNorm -> ReLU -> MaxPool step
    (compiled) adds over the pool's winners only: the same terms in another order."""
    model = small_model()
    x = np.random.default_rng(3).integers(-2, 3, (4, 8, 8, 2)).astype(np.float64)   # ties and dead windows
    dy = np.random.default_rng(4).standard_normal((4, 5))
    for training in (False, True):
        y_fused = model.forward(x, training)
        model.backward(dy)
        g_fused = {k: g.copy() for k, _, g in model.parameters()}
        y_exact, caught = model.forward(x, training, capture=["relu", "relu_1"])
        model.backward(dy)
        np.testing.assert_array_equal(y_fused, y_exact)
        for k, _, g in model.parameters():
            if not k.startswith("dense"):                       # BatchNorm and the layers below it
                np.testing.assert_allclose(g, g_fused[k], rtol=1e-13, atol=1e-13)
            else:
                np.testing.assert_array_equal(g, g_fused[k])
        assert caught["relu"].shape == (4, 8, 8, 3) and caught["relu_1"].shape == (4, 4, 4, 4)


@pytest.mark.parametrize("training", [False, True])
def test_capture_returns_exactly_what_each_layer_computes(training):
    model = small_model()
    x = np.random.default_rng(5).standard_normal((3, 8, 8, 2))
    ref = by_hand(model, x, training)
    out, caught = model.forward(x, training, capture=True)
    assert list(caught) == [layer.name for layer in model.layers]
    for name, a in ref.items():
        np.testing.assert_array_equal(caught[name], a)
    np.testing.assert_array_equal(out, ref["dense"])
    out2, some = model.forward(x, training, capture=("conv2d_1", "flatten"))
    assert list(some) == ["conv2d_1", "flatten"]
    np.testing.assert_array_equal(some["conv2d_1"], ref["conv2d_1"])
    # BatchNorm + ReLU run fused now (with the compiled loops): a batch's statistics are summed in another order
    np.testing.assert_allclose(out2, out, rtol=1e-12, atol=1e-12)


def test_capture_refuses_unknown_names():
    model = small_model()
    x = np.zeros((1, 8, 8, 2))
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        model.forward(x, capture=["nope"])
    with pytest.raises(ValueError, match="the string 'dense'"):
        model.forward(x, capture="dense")


@pytest.mark.parametrize("at", ["conv2d", "relu", "max_pool2d", "batch_norm", "flatten"])
def test_backward_to_a_layer_matches_finite_differences(at):
    model = small_model()
    model["conv2d"].params["bias"][...] = 5.0     # the first ReLU's outputs all positive: no max-pool ties at 0
    x = np.random.default_rng(6).standard_normal((2, 8, 8, 2))
    r = np.random.default_rng(7).standard_normal((2, 5))
    _, caught = model.forward(x, capture=[at])
    analytic = model.backward(r, stop_at=at)
    h = caught[at].copy()
    after = model.layers[[layer.name for layer in model.layers].index(at) + 1:]

    def loss():
        a = h
        for layer in after:
            a = layer.forward(a, False)
        return float(np.sum(a * r))
    assert analytic.shape == h.shape
    assert relative_error(analytic, numeric_gradient(loss, h)) < 1e-7


def test_backward_to_a_fused_relu_asks_for_a_capture():
    model = small_model()
    model.forward(np.zeros((1, 8, 8, 2)))
    with pytest.raises(ValueError, match=r"capture=\['relu'\]"):
        model.backward(np.ones((1, 5)), stop_at="relu")


def test_backward_without_a_trainable_layer_below_returns_none_as_before():
    model = small_model()
    model.forward(np.zeros((1, 8, 8, 2)), training=True)
    assert model.backward(np.ones((1, 5))) is None
    assert not model["conv2d"].needs_input_grad and model["relu"].needs_input_grad


@pytest.mark.parametrize("at", [None, "conv2d", "relu_1"])
def test_input_gradient_equals_the_layer_by_layer_computation(at):
    model = small_model()
    x = np.random.default_rng(8).standard_normal((2, 8, 8, 2))
    dy = np.random.default_rng(9).standard_normal((2, 5))
    saved = [layer.needs_input_grad for layer in model.layers]
    got = model.input_gradient(x, dy, at=at)
    assert [layer.needs_input_grad for layer in model.layers] == saved
    idx = -1 if at is None else [layer.name for layer in model.layers].index(at)
    for layer in model.layers:
        layer.needs_input_grad = True
    by_hand(model, x)
    g = dy
    for layer in reversed(model.layers[idx + 1:]):
        g = layer.backward(g)
    np.testing.assert_array_equal(got, g)
    assert got.shape == (x.shape if at is None else (2,) + model[at].output_shape)


def test_training_runs_the_fused_steps_of_the_stack(compiled_loops):
    model = small_model()
    steps = model.stack.plan().steps
    fused = 1 if compiled_loops == "compiled" else 0
    assert sum(isinstance(runner, ReLUMaxPool) for runner, *_ in steps) == 2 - fused
    assert sum(isinstance(runner, BatchNormReLUMaxPool) for runner, *_ in steps) == fused
    x = np.random.default_rng(10).standard_normal((32, 8, 8, 2))
    y = np.random.default_rng(11).integers(0, 5, 32)
    before = model["conv2d"].params["kernel"].copy()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, workers=1)
    assert not np.array_equal(before, model["conv2d"].params["kernel"])


def assert_step_matches(step, norm, x, dy, training, y_ref, dx_ref, g_ref, running_after):
    """A fused step's output, input gradient, BatchNorm gradients and running estimates against the layers'
    (float64); returns the step's input gradient."""
    y = step.forward(x, training)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    dx = step.backward(dy)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    for k, g in norm.grads.items():
        np.testing.assert_allclose(g, g_ref[k], rtol=1e-10, atol=1e-12)
    for k, v in norm.buffers.items():
        np.testing.assert_allclose(v, running_after[k], rtol=1e-12)
    return dx


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (7, 3)], ids=["images", "features"])
def test_fused_batchnorm_relu_matches_the_two_layers_and_finite_differences(training, shape):
    """The fused step against BatchNorm then ReLU (float64), and its gradients against central differences."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal(shape) + 0.3
    dy = rng.standard_normal(shape)
    norm, relu = L.BatchNorm(), L.ReLU()
    for layer in (norm, relu):
        layer.build(shape[1:], rng=rng, dtype=np.float64)
        layer.needs_input_grad = True
    norm.params["gamma"][...] = rng.uniform(0.5, 2, shape[-1])
    norm.params["beta"][...] = rng.standard_normal(shape[-1]) * 0.5
    norm.buffers["running_mean"][...] = rng.standard_normal(shape[-1]) * 0.2
    norm.buffers["running_var"][...] = rng.uniform(0.5, 2, shape[-1])
    running = {k: v.copy() for k, v in norm.buffers.items()}
    y_ref = relu.forward(norm.forward(x, training), training)
    dx_ref = norm.backward(relu.backward(dy))
    g_ref = {k: g.copy() for k, g in norm.grads.items()}
    after = {k: v.copy() for k, v in norm.buffers.items()}
    for k, v in running.items():                   # the fused step updates the running estimates once, the same way
        norm.buffers[k][...] = v
    step = BatchNormReLU(norm, relu)
    dx = assert_step_matches(step, norm, x, dy, training, y_ref, dx_ref, g_ref, after)

    def loss():                                    # sum(dy * step(x)); the running estimates are put back each time
        for k, v in after.items():
            norm.buffers[k][...] = v
        return float(np.sum(dy * step.forward(x, training)))
    assert relative_error(numeric_gradient(loss, x), dx) < 1e-6
    for k in ("gamma", "beta"):
        assert relative_error(numeric_gradient(loss, norm.params[k]), g_ref[k]) < 1e-6


def test_input_gradient_through_a_winograd_layer_matches_finite_differences(compiled_loops):
    """Saliency runs backward after an inference-mode forward: a Winograd layer must keep its input for it."""
    model = cnnlab.Sequential([L.Conv2D(8, 3, padding="same"), L.ReLU(), L.Conv2D(4, 3, padding="same"),
                               L.Flatten(), L.Dense(3)], input_shape=(6, 6, 2), seed=3).astype(np.float64)
    model["conv2d_1"]._algorithm = lambda channels: "winograd"
    x = np.random.default_rng(13).standard_normal((1, 6, 6, 2))
    dy = np.random.default_rng(14).standard_normal((1, 3))
    got = model.input_gradient(x, dy)
    assert model["conv2d_1"]._cache[0] == "winograd"
    numeric = numeric_gradient(lambda: float(np.sum(dy * model.forward(x))), x)
    assert relative_error(got, numeric) < 1e-6


def folded_model(seed=0, dtype=np.float64):
    """BatchNorm after convolutions (with and without ReLU, Winograd's with the compiled loops) and a dense layer."""
    model = cnnlab.Sequential([
        L.Conv2D(4, 3, padding="same"), L.BatchNorm(), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(8, 3, padding="same", use_bias=False), L.BatchNorm(), L.ReLU(),
        L.Conv2D(8, 3, padding="same"), L.BatchNorm(), L.MaxPool2D(2),
        L.Flatten(), L.Dense(6), L.BatchNorm(), L.ReLU(), L.Dense(3)], input_shape=(8, 8, 2), seed=seed).astype(dtype)
    rng = np.random.default_rng(seed + 1)
    for bn in (layer for layer in model.layers if isinstance(layer, L.BatchNorm)):
        c = bn.params["gamma"].shape
        bn.params["gamma"][...] = rng.uniform(-1.5, 1.5, c)              # negative scales too
        bn.params["beta"][...] = rng.standard_normal(c)
        bn.buffers["running_mean"][...] = rng.standard_normal(c)
        bn.buffers["running_var"][...] = rng.uniform(0.2, 3, c)
    for name in ("conv2d_1", "conv2d_2"):                                # the Winograd output loops' epilogue
        model[name]._algorithm = lambda channels: "winograd" if cnnlab.layers.compiled.enabled() else "im2col"
    model["conv2d"]._algorithm = lambda channels: "im2col"               # (a direct loop would take the pool in)
    return model


def test_inference_folds_batchnorm_into_the_layer_before_it_with_the_same_outputs(compiled_loops):
    model = folded_model()
    steps = model.stack.plan(frozenset(), inference=True).steps
    kinds = [type(r).__name__ for r, *_ in steps]
    tail = ["FoldedBatchNorm", "FoldedBatchNorm", "MaxPool2D", "Flatten", "FoldedBatchNorm", "Dense"]
    if compiled_loops == "numpy":
        assert kinds == ["FoldedBatchNorm", "MaxPool2D"] + tail
    else:                                    # BatchNorm -> ReLU -> MaxPool is one pass already: not folded
        assert kinds == ["Conv2D", "BatchNormReLUMaxPool"] + tail
    relus = [r.relu is not None for r, *_ in steps if type(r).__name__ == "FoldedBatchNorm"]
    assert relus == ([True] if compiled_loops == "numpy" else []) + [True, False, True]
    assert "FoldedBatchNorm" not in [type(r).__name__ for r, *_ in model.stack.plan(frozenset()).steps]
    x = np.random.default_rng(2).standard_normal((5, 8, 8, 2))
    expected, caught = model.forward(x, capture=["batch_norm", "batch_norm_1", "relu_1"])
    assert (caught["batch_norm"] < 0).any() and (caught["relu_1"] == 0).any()   # the ReLUs clip something
    np.testing.assert_allclose(model.stack.infer(x), expected, rtol=1e-12, atol=1e-12)
    f32 = folded_model(dtype=np.float32)
    np.testing.assert_allclose(f32.stack.infer(x.astype(np.float32)), expected, rtol=1e-4, atol=1e-4)
    # predict and evaluate run the folded pass, in every worker too
    np.testing.assert_allclose(model.logits(x, workers=2, batch_size=4), expected, rtol=1e-12, atol=1e-12)


def test_inference_pools_inside_a_direct_convolution_with_the_same_outputs(compiled_loops):
    """A 5-wide convolution on few channels (the direct loop), BatchNorm, ReLU and a 2x2 max pool at inference:
    one step that writes only the pooled output (Conv2D.pools_while_writing), where the loops are compiled."""
    model = cnnlab.Sequential([
        L.Conv2D(6, 5, padding="same"), L.BatchNorm(), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(4, 5, padding="same"), L.BatchNorm(), L.ReLU(), L.MaxPool2D(2, strides=1),   # windows overlap
        L.Flatten(), L.Dense(3)], input_shape=(9, 10, 1), seed=3).astype(np.float64)
    rng = np.random.default_rng(4)
    for bn in (layer for layer in model.layers if isinstance(layer, L.BatchNorm)):
        c = bn.params["gamma"].shape
        bn.params["gamma"][...] = rng.uniform(-1.5, 1.5, c)              # negative scales: window minima win
        bn.params["beta"][...] = rng.standard_normal(c)
        bn.buffers["running_mean"][...] = rng.standard_normal(c)
        bn.buffers["running_var"][...] = rng.uniform(0.2, 3, c)
    steps = model.stack.plan(frozenset(), inference=True).steps
    kinds = [type(r).__name__ for r, *_ in steps]
    if compiled_loops == "numpy":
        assert kinds == ["FoldedBatchNorm", "MaxPool2D", "FoldedBatchNorm", "MaxPool2D", "Flatten", "Dense"]
        assert steps[0][0].pool is None
    else:
        assert kinds == ["FoldedBatchNorm", "FoldedBatchNorm", "MaxPool2D", "Flatten", "Dense"]
        assert steps[0][0].pool is model["max_pool2d"] and steps[0][0].relu is model["relu"]
        assert steps[1][0].pool is None
    x = rng.standard_normal((5, 9, 10, 1))
    expected, caught = model.forward(x, capture=["batch_norm"])
    assert (caught["batch_norm"] < 0).any()                              # the ReLU clips something
    np.testing.assert_allclose(model.stack.infer(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.logits(x, workers=2, batch_size=3), expected, rtol=1e-12, atol=1e-12)
    # a captured ReLU output is the layer's own: the pool is not taken into the convolution
    first = model.stack.plan(frozenset([model.stack.tensor("relu")]), inference=True).steps[0][0]
    assert type(first).__name__ == "FoldedBatchNorm" and first.pool is None


@pytest.mark.parametrize("slice_bytes", [1, 8 * 8 * 4 * 8 * 17])
def test_inference_runs_a_large_batch_in_slices_with_the_same_outputs(slice_bytes, compiled_loops):
    """``Stack.infer`` runs a batch whose tensors exceed INFER_SLICE_BYTES in slices of ``infer_slice`` images
    (at least 8; the last slice shorter): the outputs equal the unsliced forward pass's, image by image."""
    model = folded_model()
    model.stack.INFER_SLICE_BYTES = slice_bytes          # the largest tensor: 8 x 8 x 4 float64 per image
    x = np.random.default_rng(5).standard_normal((21, 8, 8, 2))
    assert model.stack.infer_slice(x) == (8 if slice_bytes == 1 else 16)           # 17 fit: a multiple of 8
    np.testing.assert_allclose(model.stack.infer(x), model.forward(x), rtol=1e-12, atol=1e-12)
    assert model.stack.infer(x).shape == (21, 3)


def test_inference_only_pass_has_no_backward():
    model = folded_model()
    x = np.zeros((2, 8, 8, 2))
    model.stack.infer(x)
    with pytest.raises(ValueError, match="backward needs a forward pass first"):
        model.stack.backward(np.ones((2, 3)))
    folded = [r for r, *_ in model.stack.plan(frozenset(), inference=True).steps if type(r).__name__ == "FoldedBatchNorm"]
    with pytest.raises(ValueError, match="inference only"):
        folded[0].forward(x, training=True)
    # a captured BatchNorm output is the layer's own: no folding where a forward pass keeps it
    assert model.stack.plan(frozenset([model.stack.tensor("batch_norm")])).steps[1][0] is model["batch_norm"]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("pool", [dict(pool_size=2), dict(pool_size=(2, 3), padding="same"), dict(pool_size=3, strides=3)],
                         ids=["2x2", "2x3-same", "3x3"])
def test_fused_batchnorm_relu_max_pool_matches_the_three_layers_and_finite_differences(training, pool):
    """BatchNorm -> ReLU -> MaxPool as one compiled step, against the three layers one by one (float64)."""
    if not cnnlab.layers.compiled.enabled():
        pytest.skip("needs the compiled loops (numba)")
    shape = (3, 7, 8, 4)
    rng = np.random.default_rng(13)
    x = rng.standard_normal(shape) + 0.3
    x[0, :2, :2] = 1.0                                   # ties inside a window: the first maximum wins
    norm, relu, mp = L.BatchNorm(), L.ReLU(), L.MaxPool2D(**pool)
    for layer, s in ((norm, shape[1:]), (relu, shape[1:]), (mp, shape[1:])):
        layer.build(s, rng=rng, dtype=np.float64)
        layer.needs_input_grad = True
    dy = rng.standard_normal((3, *mp.output_shape))
    norm.params["gamma"][...] = rng.uniform(-2, 2, shape[-1])          # a negative scale: the window's minimum wins
    norm.params["beta"][...] = rng.uniform(-3, 0.5, shape[-1])              # some windows clipped to 0
    norm.buffers["running_mean"][...] = rng.standard_normal(shape[-1]) * 0.2
    norm.buffers["running_var"][...] = rng.uniform(0.5, 2, shape[-1])
    running = {k: v.copy() for k, v in norm.buffers.items()}
    y_ref = mp.forward(relu.forward(norm.forward(x, training), training), training)
    dx_ref = norm.backward(relu.backward(mp.backward(dy)))
    g_ref = {k: g.copy() for k, g in norm.grads.items()}
    after = {k: v.copy() for k, v in norm.buffers.items()}
    for k, v in running.items():
        norm.buffers[k][...] = v
    assert (y_ref == 0).any() and (y_ref > 0).any()
    step = BatchNormReLUMaxPool(norm, relu, mp)
    assert_step_matches(step, norm, x, dy, training, y_ref, dx_ref, g_ref, after)

    x = rng.standard_normal(shape) + 0.3                 # central differences need an input without ties

    def loss():
        for k, v in after.items():
            norm.buffers[k][...] = v
        return float(np.sum(dy * step.forward(x, training)))
    loss()
    dx = step.backward(dy)
    grads = {k: g.copy() for k, g in norm.grads.items()}
    assert relative_error(numeric_gradient(loss, x), dx) < 1e-6
    for k in ("gamma", "beta"):
        assert relative_error(numeric_gradient(loss, norm.params[k]), grads[k]) < 1e-6


def test_overlapping_pools_and_captures_are_not_fused_with_batchnorm(compiled_loops):
    model = cnnlab.Sequential([L.Conv2D(3, 3), L.BatchNorm(), L.ReLU(), L.MaxPool2D(3, strides=2),
                               L.Conv2D(3, 3), L.BatchNorm(), L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dense(2)],
                              input_shape=(16, 16, 1))
    kinds = lambda *names: [type(r).__name__ for r, *_ in model.stack.plan(  # noqa: E731
        frozenset(model.stack.tensor(n) for n in names)).steps]
    if compiled_loops == "numpy":
        assert kinds() == ["Conv2D", "BatchNorm", "ReLUMaxPool", "Conv2D", "BatchNorm", "ReLUMaxPool", "Flatten", "Dense"]
    else:
        assert kinds() == ["Conv2D", "BatchNormReLU", "MaxPool2D", "Conv2D", "BatchNormReLUMaxPool", "Flatten", "Dense"]
        assert kinds("relu_1")[4:6] == ["BatchNormReLU", "MaxPool2D"]


@pytest.mark.parametrize("training", [False, True])
def test_fused_batchnorm_add_relu_matches_the_three_layers_and_finite_differences(training, compiled_loops):
    """The end of a residual block, relu(BatchNorm(x) + r), as one step against the three layers (float64), and
    its gradients (x, the branch r, gamma, beta) against central differences."""
    rng = np.random.default_rng(20)
    shape = (3, 5, 4, 6)
    x, r, dy = rng.standard_normal(shape) + 0.3, rng.standard_normal(shape), rng.standard_normal(shape)
    norm, add, relu = L.BatchNorm(), L.Add(), L.ReLU()
    norm.build(shape[1:], rng=rng, dtype=np.float64)
    add.build([shape[1:], shape[1:]], rng=rng, dtype=np.float64)
    relu.build(shape[1:], rng=rng, dtype=np.float64)
    for layer in (norm, add, relu):
        layer.needs_input_grad = True
    norm.params["gamma"][...] = rng.uniform(-1.5, 2, shape[-1])              # negative scales too
    norm.params["beta"][...] = rng.standard_normal(shape[-1]) * 0.5
    norm.buffers["running_mean"][...] = rng.standard_normal(shape[-1]) * 0.2
    norm.buffers["running_var"][...] = rng.uniform(0.5, 2, shape[-1])
    running = {k: v.copy() for k, v in norm.buffers.items()}
    y_ref = relu.forward(add.forward([norm.forward(x, training), r], training), training)
    assert 0.2 < np.mean(y_ref == 0) < 0.8                                      # the ReLU clips some, not all
    g = relu.backward(dy)
    dbn, dr_ref = add.backward(g)
    dx_ref = norm.backward(dbn)
    g_ref = {k: v.copy() for k, v in norm.grads.items()}
    after = {k: v.copy() for k, v in norm.buffers.items()}
    for k, v in running.items():                   # the fused step updates the running estimates once, the same way
        norm.buffers[k][...] = v
    step = BatchNormAddReLU(norm, add, relu)
    y = step.forward([x, r], training)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    dx, dr = step.backward(dy)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dr, dr_ref, rtol=1e-12, atol=1e-12)
    for k, v in norm.grads.items():
        np.testing.assert_allclose(v, g_ref[k], rtol=1e-10, atol=1e-12)
    for k, v in norm.buffers.items():
        np.testing.assert_allclose(v, after[k], rtol=1e-12)

    def loss():                                    # sum(dy * step(x, r)); the running estimates are put back each time
        for k, v in after.items():
            norm.buffers[k][...] = v
        return float(np.sum(dy * step.forward([x, r], training)))
    for a, grad in ((x, dx), (r, dr), (norm.params["gamma"], g_ref["gamma"]), (norm.params["beta"], g_ref["beta"])):
        assert relative_error(numeric_gradient(loss, a), grad) < 1e-6


def test_residual_blocks_end_in_one_fused_step_unless_a_tensor_is_captured(compiled_loops):
    """ResNet-8's three blocks each end in BatchNormAddReLU (reading the block's shortcut too); capturing the Add
    or the BatchNorm before it keeps the layers apart. Fused and unfused passes agree (bit for bit without the
    compiled loops, which compute BatchNorm's statistics in float64)."""
    model = cnnlab.models.resnet8(input_shape=(8, 8, 3), seed=5).astype(np.float64)
    kinds = lambda *names: [type(r).__name__ for r, *_ in model.stack.plan(  # noqa: E731
        frozenset(model.stack.tensor(n) for n in names)).steps]
    assert kinds().count("BatchNormAddReLU") == 3 and "Add" not in kinds()
    assert kinds("add").count("BatchNormAddReLU") == 2 and kinds("batch_norm_2").count("BatchNormAddReLU") == 2
    steps = [s for s in model.stack.plan().steps if isinstance(s[0], BatchNormAddReLU)]
    first = steps[0]                               # block 1: the conv's BatchNorm input, then the stem's output
    assert first[1] == (model.stack.tensor("conv2d_2"), model.stack.tensor("relu")) and first[3] is True
    for layer in model.layers:
        layer.needs_input_grad = True
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 8, 8, 3))
    for training in (True, False):
        y = model.forward(x, training)
        dy = rng.standard_normal(y.shape)
        dx = model.backward(dy)
        grads = {k: g.copy() for k, _, g in model.parameters()}
        y_ref, _ = model.forward(x, training, capture=["add", "add_1", "add_2"])
        dx_ref = model.backward(dy)
        tol = dict(rtol=0, atol=0) if compiled_loops == "numpy" else dict(rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(y, y_ref, **tol)
        np.testing.assert_allclose(dx, dx_ref, **tol)
        for k, _, g in model.parameters():
            np.testing.assert_allclose(grads[k], g, rtol=tol["rtol"], atol=1e-10 if tol["atol"] else 0)
