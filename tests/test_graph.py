"""Graph models: Add and Concatenate, Model(inputs, outputs), residual networks."""
import json
import os

import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L
from cnnlab.gradcheck import numeric_gradient, relative_error
from cnnlab.parallel import DataParallel


def residual_graph(seed=0, bn=True):
    """input -> conv -> [BN] -> ReLU -> conv, added to a 1x1 conv of the input; ReLU; concatenated with the
    first ReLU's maps; max-pool; dense. The input and the first ReLU are each read by two layers."""
    inputs = cnnlab.Input((6, 6, 2))
    h = L.Conv2D(3, 3, padding="same", use_bias=not bn)(inputs)     # before BatchNorm a bias has no effect
    h = L.ReLU()(L.BatchNorm()(h) if bn else h)
    y = L.Add()([L.Conv2D(3, 3, padding="same")(h), L.Conv2D(3, 1)(inputs)])
    z = L.Concatenate()([L.ReLU()(y), h])
    out = L.Dense(4)(L.Flatten()(L.MaxPool2D(2)(z)))
    return cnnlab.Model(inputs, out, seed=seed)


@pytest.mark.parametrize("cls,shapes", [(L.Add, [(2, 3, 4, 5)] * 2), (L.Add, [(2, 7)] * 3),
                                        (L.Concatenate, [(2, 3, 4, 2), (2, 3, 4, 5)]),
                                        (L.Concatenate, [(3, 4), (3, 1), (3, 2)])])
def test_join_layer_gradients_match_finite_differences(cls, shapes):
    rng = np.random.default_rng(len(shapes))
    xs = [rng.standard_normal(s) for s in shapes]
    layer = cls()
    y = layer.forward(xs)
    r = rng.standard_normal(y.shape)
    dxs = layer.backward(r)
    assert len(dxs) == len(xs)
    for k, x in enumerate(xs):
        numeric = numeric_gradient(lambda: float(np.sum(layer.forward(xs) * r)), x)
        assert relative_error(dxs[k], numeric) < 1e-8


def test_join_layers_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        L.Add().build([(4, 4, 3), (4, 4, 2)])
    with pytest.raises(ValueError, match="every axis but the last"):
        L.Concatenate().build([(4, 4, 3), (2, 2, 3)])
    inputs = cnnlab.Input((4, 4, 3))
    with pytest.raises(ValueError, match="same shape"):
        L.Add()([inputs, L.Conv2D(2, 1)(inputs)])          # at the call: where the graph is written


def test_residual_graph_gradients_match_finite_differences():
    model = residual_graph().astype(np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 6, 2))
    r = rng.standard_normal((3, 4))
    loss = lambda: float(np.sum(model.forward(x, training=True) * r))   # noqa: E731
    model.forward(x, training=True)
    model.backward(r)
    analytic = {k: g.copy() for k, _, g in model.parameters()}
    for k, p, _ in model.parameters():
        assert relative_error(analytic[k], numeric_gradient(loss, p)) < 1e-6, k
    # The input is read by two convolutions: its gradient is the sum of both branches'.
    dx = model.input_gradient(x, r)
    infer = lambda: float(np.sum(model.forward(x) * r))                # noqa: E731
    assert relative_error(dx, numeric_gradient(infer, x)) < 1e-7


def test_graph_captures_and_backward_to_a_layer_read_by_two_branches():
    model = residual_graph(bn=False).astype(np.float64)
    model["conv2d"].params["bias"][...] = 5.0        # the first ReLU's outputs all positive: no max-pool ties at 0
    x = np.random.default_rng(2).standard_normal((2, 6, 6, 2))
    r = np.random.default_rng(3).standard_normal((2, 4))
    out, caught = model.forward(x, capture=["relu", "add"])
    np.testing.assert_array_equal(caught["add"], model["conv2d_1"].forward(caught["relu"]) +
                                  model["conv2d_2"].forward(x))
    g = model.input_gradient(x, r, at="relu")                  # relu feeds conv2d_1 and the concatenation

    def loss():
        y = model["conv2d_1"].forward(h) + model["conv2d_2"].forward(x)
        z = np.concatenate([np.maximum(y, 0), h], axis=-1)
        return float(np.sum(model["dense"].forward(model["flatten"].forward(model["max_pool2d"].forward(z))) * r))
    h = caught["relu"].copy()
    assert relative_error(g, numeric_gradient(loss, h)) < 1e-7


def test_summary_lists_each_layers_inputs_and_the_architecture_records_the_graph(tmp_path):
    model = residual_graph()
    text = model.summary(print_fn=None)
    assert "Inputs" in text and "conv2d_1, conv2d_2" in text and "relu_1, relu" in text
    config = model.get_config()
    assert config["layers"][0]["inbound"] == ["input"] and config["output"] == "dense"
    again = cnnlab.Model.from_config(json.loads(json.dumps(config)))
    assert type(again) is cnnlab.Model and again.inbound_names() == model.inbound_names()
    assert "inbound" not in cnnlab.models.tiny_cnn().get_config()["layers"][0]     # Sequential: as before
    path = model.save(tmp_path / "g.safetensors")
    loaded = cnnlab.load(path)
    assert type(loaded) is cnnlab.Model and sorted(loaded.state_dict()) == sorted(model.state_dict())
    x = np.random.default_rng(4).random((5, 6, 6, 2), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_bad_graph_architectures_are_refused_with_the_reason():
    config = residual_graph().get_config()
    config["layers"][2]["inbound"] = ["nowhere"]
    with pytest.raises(cnnlab.CnnlabFileError, match=r"layer 2 reads \['nowhere'\]"):
        cnnlab.Model.from_config(config)
    config = residual_graph().get_config()
    config["layers"][1]["inbound"] = ["relu"]                  # a later layer: not a graph written in order
    with pytest.raises(cnnlab.CnnlabFileError, match="neither the input nor earlier layers"):
        cnnlab.Model.from_config(config)
    config = residual_graph().get_config()
    config["output"] = "missing"
    with pytest.raises(cnnlab.CnnlabFileError, match="output 'missing'"):
        cnnlab.Model.from_config(config)


def test_graph_construction_errors_are_clear():
    inputs = cnnlab.Input((4, 4, 1))
    conv = L.Conv2D(2, 3)
    conv(inputs)
    with pytest.raises(ValueError, match="called once"):
        conv(inputs)
    with pytest.raises(ValueError, match="takes a list"):
        L.Add()(inputs)
    with pytest.raises(ValueError, match="input .other., which is not the model.s input"):
        cnnlab.Model(inputs, L.Flatten()(cnnlab.Input((4, 4, 1), name="other")))
    with pytest.raises(ValueError, match="belongs in a graph model"):
        cnnlab.Sequential([L.Flatten(), L.Add()], input_shape=(4, 4, 1))
    with pytest.raises(ValueError, match="shape must be positive ints"):
        cnnlab.Input((0, 4))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="worker processes need os.fork")
def test_graph_training_with_two_workers_equals_one_process():
    rng = np.random.default_rng(5)
    x, y = rng.random((96, 6, 6, 2)), rng.integers(0, 4, 96)
    models = []
    for workers in (1, 2):
        model = residual_graph(bn=False).astype(np.float64)
        model.fit(x, y, epochs=2, batch_size=48, verbose=0, workers=workers,
                  optimizer=cnnlab.optim.SGD(lr=0.05, momentum=0.9))
        models.append(model)
    for k, v in models[0].state_dict().items():
        np.testing.assert_allclose(models[1].state_dict()[k], v, rtol=1e-9, atol=1e-12)
    model = residual_graph()                                   # BatchNorm: each shard's statistics, ghost-batch style
    with DataParallel(model, workers=2) as dp:
        loss, scores = dp.train_step(x.astype(np.float32), y)
    assert np.isfinite(loss) and scores.shape == (96, 4)


def test_resnets_are_in_the_zoo_with_the_papers_size():
    r20 = cnnlab.models.get("resnet20")()
    assert type(r20) is cnnlab.Model and r20.output_shape == (10,)
    assert 0.26e6 < r20.num_params < 0.28e6                    # He et al.: 0.27 M
    assert sum(type(layer).__name__ == "Add" for layer in r20.layers) == 9
    r8 = cnnlab.models.resnet8(input_shape=(16, 16, 3), num_classes=5)
    assert sum(type(layer).__name__ == "Add" for layer in r8.layers) == 3
    x = np.random.default_rng(6).random((2, 16, 16, 3), dtype=np.float32)
    assert r8.predict(x).shape == (2, 5)
