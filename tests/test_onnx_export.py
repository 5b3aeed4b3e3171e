"""ONNX export: every zoo model and random models pass the full ONNX checker, and onnxruntime
computes the same probabilities as cnnlab (1e-5 absolute)."""
import json

import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cnnlab.onnx import export  # noqa: E402

TOL = 1e-5


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"input": x})[0]


def randomize(model, seed):
    """Random weights (scaled by fan-in, so that the probabilities are not all 0 or 1) and BatchNorm
    statistics, so that a wrong layout or formula shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for k, v in layer.params.items():
            if k == "kernel":
                fan_in = v.shape[-2] if isinstance(layer, L.LocallyConnected2D) else int(np.prod(v.shape[:-1]))
                v[...] = rng.normal(0, 1.5 / np.sqrt(fan_in), v.shape)
            else:
                v[...] = rng.uniform(0.5, 1.5, v.shape) if k == "gamma" else rng.normal(0, 0.3, v.shape)
        if "running_var" in layer.buffers:
            layer.buffers["running_mean"][...] = rng.normal(0, 0.3, layer.buffers["running_mean"].shape)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2, layer.buffers["running_var"].shape)
    return model


def check_agreement(model, path, channels_last=False, batch=3, seed=0):
    """Full checker, then onnxruntime against ``model.predict``; returns the largest difference."""
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    x = np.random.default_rng(seed).random((batch,) + tuple(model.input_shape), dtype=np.float32)
    ours = model.predict(x, workers=1)
    fed = x if channels_last or len(model.input_shape) != 3 else x.transpose(0, 3, 1, 2)
    theirs = run_onnx(path, np.ascontiguousarray(fed))
    assert theirs.shape == ours.shape
    diff = float(np.abs(theirs - ours).max())
    assert diff <= TOL, diff
    return diff


@pytest.mark.parametrize("name", sorted(cnnlab.models.ZOO))
def test_zoo_models_agree_with_onnxruntime(name, tmp_path):
    model = randomize(cnnlab.models.ZOO[name](), seed=1)
    path = export(model, tmp_path / f"{name}.onnx")
    check_agreement(model, path, batch=5)


def random_sequential(seed):
    """A random valid chain over every layer type: convolutions of every geometry, pooling, norms."""
    rng = np.random.default_rng(seed)
    pick = lambda options: options[int(rng.integers(len(options)))]          # noqa: E731
    while True:
        h, w, c = int(rng.integers(6, 13)), int(rng.integers(6, 13)), int(rng.integers(1, 4))
        layers = []
        for _ in range(int(rng.integers(1, 4))):
            groups = pick([g for g in (1, 2, 3) if c % g == 0]) if not layers else 1
            filters = groups * int(rng.integers(1, 4))
            layers.append(L.Conv2D(filters, (int(rng.integers(1, 4)), int(rng.integers(1, 4))),
                                   strides=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                                   padding=pick(["valid", "same", 1, (0, 1)]),
                                   dilation=(int(rng.integers(1, 3)), 1), groups=groups,
                                   use_bias=bool(rng.integers(2))))
            layers.append(pick([L.ReLU(), L.LeakyReLU(0.2), L.Tanh(), L.Sigmoid(), L.ClippedReLU(0.7), L.BatchNorm(),
                                L.LocalResponseNorm(3, 0.5, 0.75, 1.5), L.ChannelShuffle(next((d for d in (2, 3) if filters % d == 0 and d < filters), 1))]))
            layers.append(pick([L.MaxPool2D(2), L.AvgPool2D(2), L.AvgPool2D(3, strides=2, padding="same"),
                                L.MaxPool2D(3, strides=1, padding=1), L.AvgPool2D((3, 2), strides=1, padding=(1, 1)),
                                L.Subsample(2), L.Dropout(0.3), L.BatchNorm()]))
        if rng.integers(3) == 0:
            layers.append(L.LocallyConnected2D(2, 2, padding=pick(["valid", "same"])))
        if rng.integers(2):
            layers += [L.Flatten(), L.Dense(int(rng.integers(3, 9))), pick([L.BatchNorm(), L.ReLU(), L.Dropout(0.5)])]
        else:
            layers.append(L.GlobalAvgPool2D())
        layers.append(L.Dense(int(rng.integers(2, 6))))
        try:
            model = cnnlab.Sequential(layers, input_shape=(h, w, c), seed=seed)
        except ValueError:                                  # a kernel did not fit: draw again
            continue
        return randomize(model, seed)


@pytest.mark.parametrize("seed", range(12))
def test_random_sequential_models_agree_with_onnxruntime(seed, tmp_path):
    model = random_sequential(seed)
    channels_last = seed % 3 == 0
    path = export(model, tmp_path / "m.onnx", channels_last=channels_last)
    check_agreement(model, path, channels_last=channels_last, batch=1 + seed % 4, seed=seed)


def test_every_layer_type_is_exported_by_the_random_models():
    seen = {type(layer).__name__ for seed in range(12) for layer in random_sequential(seed).layers}
    chain_layers = set(L.LAYERS) - {"Add", "Concatenate"}       # the join layers: tests/test_onnx_graph.py
    assert seen == chain_layers, sorted(chain_layers - seen)


def test_the_graph_names_its_input_and_output_with_a_dynamic_batch_and_stores_class_names(tmp_path):
    model = cnnlab.models.tiny_cnn(input_shape=(12, 10, 3), num_classes=4)
    path = export(model, tmp_path / "m.onnx", class_names=["cat", "dog", "eel", "fox"])
    m = onnx.load(str(path))
    (inp,), (out,) = m.graph.input, m.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]   # noqa: E731
    assert (inp.name, dims(inp)) == ("input", ["batch", 3, 12, 10])
    assert (out.name, dims(out)) == ("probabilities", ["batch", 4])
    assert m.graph.node[-1].op_type == "Softmax"
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["class_names"]) == ["cat", "dog", "eel", "fox"]
    assert meta["input_layout"] == "NCHW"
    for batch in (1, 7):
        probs = run_onnx(path, np.random.default_rng(batch).random((batch, 3, 12, 10), dtype=np.float32))
        assert probs.shape == (batch, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-6)


def test_channels_last_keeps_nhwc_input(tmp_path):
    model = randomize(cnnlab.models.lenet5(), 3)
    path = export(model, tmp_path / "m.onnx", channels_last=True)
    inp = onnx.load(str(path)).graph.input[0]
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 28, 28, 1]
    check_agreement(model, path, channels_last=True)


def test_a_run_directory_exports_with_its_class_names(tmp_path):
    config = cnnlab.runs.make_config(dataset="shapes", dataset_options={"n_train": 64, "n_test": 16}, model="tiny_cnn",
                                     epochs=1, batch_size=32, workers=1)
    cnnlab.runs.run_training(config, tmp_path / "run", verbose=0, plot=False)
    path = export(tmp_path / "run", tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    names = json.loads(meta["class_names"])
    assert names == cnnlab.runs.read_config(tmp_path / "run")["data"]["class_names"] and len(names) > 2
    check_agreement(cnnlab.load(tmp_path / "run"), path)


def test_bad_arguments_are_refused_with_the_value(tmp_path):
    model = cnnlab.models.tiny_cnn()
    with pytest.raises(ValueError, match=r"opset must be an integer from 13 to \d+, received 7"):
        export(model, tmp_path / "m.onnx", opset=7)
    with pytest.raises(ValueError, match="3 class names for a model with 10 classes"):
        export(model, tmp_path / "m.onnx", class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"must end in \(N, classes\) scores"):
        export(cnnlab.Sequential([L.Conv2D(2, 3)], input_shape=(5, 5, 1)), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_import_cnnlab_gives_cnnlab_onnx_without_loading_the_onnx_package():
    import subprocess
    import sys
    code = "import sys, cnnlab; assert callable(cnnlab.onnx.export) and callable(cnnlab.onnx.load); " \
           "assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
