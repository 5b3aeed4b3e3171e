"""The nine classic CNNs of the ONNX model zoo, from the copies the ``onnx`` package ships (no download).

Each file (AlexNet, ZFNet-512, VGG-19, GoogLeNet, Inception v2, ResNet-50, SqueezeNet, DenseNet-121,
ShuffleNet) is given random weights of its own shapes (``classics.randomized``), imported, and
compared with onnxruntime on a random 224x224 picture to 1e-4; the untouched file must reproduce
the output shipped beside it; the imported model is exported back out, explained and served.
One model is imported once per module (the fixture is parametrized by model, module-scoped).
"""
import io
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from PIL import Image  # noqa: E402

from classics import NAMES, expected_output, logits_of, path_of, randomized  # noqa: E402
from cnnlab import cli  # noqa: E402
from cnnlab.images import prepare_input  # noqa: E402
from cnnlab.losses import softmax  # noqa: E402
from cnnlab.onnx import export, load  # noqa: E402
from cnnlab.onnx.importer import Unsupported  # noqa: E402

TOL = 1e-4
HEAVY = {"vgg19", "bvlc_alexnet", "zfnet512"}          # 500 MB and 240 MB of weights: slow to write and read
MARKED = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in NAMES]
LAYERS = {"bvlc_alexnet": "LocalResponseNorm", "zfnet512": "LocalResponseNorm", "inception_v1": "LocalResponseNorm",
          "resnet50": "Add", "shufflenet": "ChannelShuffle", "densenet121": "Concatenate",
          "inception_v2": "Concatenate", "squeezenet": "Concatenate", "vgg19": "Dense"}


def session(proto):
    options = ort.SessionOptions()
    options.log_severity_level = 3                      # the files carry unused inputs; onnxruntime says so
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(proto, x_nchw):
    s = session(proto)
    return s.run(None, {s.get_inputs()[0].name: x_nchw})[0].reshape(len(x_nchw), -1)


def nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


@pytest.fixture(scope="module", params=MARKED)
def classic(request, tmp_path_factory):
    """``(name, path, proto, model)``: the file with random weights, written out and imported."""
    name = request.param
    proto = randomized(name, seed=NAMES.index(name))
    path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
    onnx.save(proto, str(path))
    return name, path, proto, load(path)


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    """A random 224x224 RGB picture (PNG) and the model input cnnlab's one picture reader makes of it."""
    path = tmp_path_factory.mktemp("picture") / "picture.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(path)
    return path, prepare_input(path, (224, 224, 3))[0]


def test_imports_and_matches_onnxruntime(classic):
    name, _, proto, model = classic
    assert model.input_shape == (224, 224, 3) and model.num_classes == 1000
    assert LAYERS[name] in {type(layer).__name__ for layer in model.layers}
    x = np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)
    reference = run(logits_of(proto), x)
    assert reference.std() > 0.01                      # the random weights give scores that differ by class
    ours = model.logits(nhwc(x), workers=1)
    assert np.abs(ours - reference).max() <= TOL


def test_exported_back_out_runs_in_onnxruntime(classic, tmp_path):
    _, _, _, model = classic
    x = np.random.default_rng(2).random((1, 3, 224, 224), dtype=np.float32)
    out = export(model, tmp_path / "again.onnx")
    probabilities = run(onnx.load(str(out)), x)
    assert np.abs(np.log(probabilities) - log_softmax(model.logits(nhwc(x), workers=1))).max() <= TOL


def test_serve_predicts_with_the_imported_model(classic, picture, tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient
    from cnnlab.serve.app import create_app
    _, _, _, model = classic
    path, x = picture
    app = create_app(model, runs_root=tmp_path / "runs", allowed_hosts=("testserver",), max_upload=1_000_000)
    with TestClient(app) as client:
        assert client.get("/").status_code == 200            # the page: the server's secret cookie, as a browser holds it
        described = client.get("/api/model")
        r = client.post("/api/predict", content=path.read_bytes())
    assert described.status_code == 200 and len(described.json()["layers"]) == len(model.layers)
    assert r.status_code == 200, r.text
    p = np.array(r.json()["probabilities"])
    np.testing.assert_allclose(p, model.predict(x[None], workers=1)[0], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_explain_features_pass(classic, picture, tmp_path):
    from cnnlab.explain.features import explain_features
    _, _, _, model = classic
    path, x = picture
    r = explain_features(tmp_path / "out", model=model, image=path, max_maps=4)
    assert [s["name"] for s in r["layers"]] == [layer.name for layer in model.layers]
    probabilities = model.predict(x[None], workers=1)[0]
    assert r["prediction"]["class"] == int(probabilities.argmax())
    assert r["prediction"]["probability"] == pytest.approx(float(probabilities.max()), rel=1e-4)
    saved = json.loads((tmp_path / "out" / "features.json").read_text())["prediction"]
    assert saved["class"] == r["prediction"]["class"]
    assert saved["probability"] == pytest.approx(r["prediction"]["probability"], rel=1e-6)


@pytest.mark.parametrize("name", MARKED)
def test_the_shipped_file_gives_the_shipped_output(name):
    """As shipped, every weight comes from a ``ConstantOfShape``: folded as constants, they give the stored output."""
    x, expected = expected_output(name)
    model = load(path_of(name))
    ends_in_softmax = onnx.load(path_of(name)).graph.node[-1].op_type == "Softmax"
    scores, expected = model.logits(nhwc(x), workers=1), expected.reshape(1, -1)
    if not ends_in_softmax:
        np.testing.assert_allclose(scores, expected, rtol=TOL, atol=1e-7)
        return
    # Constant weights make every class's score equal but huge (SqueezeNet's are 9.5e9): float32 holds them to
    # a relative 1e-7, so the log-probabilities are compared to within that part of the scores' size.
    slack = TOL + 1e-6 * float(np.abs(scores).max())
    assert np.abs(log_softmax(scores) - np.log(expected)).max() <= slack


def test_summary_and_predict_commands_read_an_onnx_file(tmp_path, picture, capsys):
    proto = randomized("squeezenet")
    path = tmp_path / "squeezenet.onnx"
    onnx.save(proto, str(path))
    assert cli.main(["summary", str(path)]) == 0
    text = capsys.readouterr().out
    model = load(path)
    assert "(Concatenate)" in text and f"Total params: {model.num_params:,}" in text
    image, x = picture
    assert cli.main(["predict", str(path), str(image), "--top-k", "1"]) == 0
    best = int(model.predict(x[None], workers=1)[0].argmax())
    assert f"1. {best}" in capsys.readouterr().out
    from cnnlab.serve.cli import resolve_model
    served, names, config = resolve_model(str(path), tmp_path / "runs")
    assert served.num_params == model.num_params and names is None and config is None


def test_a_constant_node_the_evaluator_cannot_compute_is_refused_in_one_line(tmp_path):
    """Constant folding failures name the operator and node; no evaluator exception text reaches the user."""
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("Unsqueeze", ["c"], ["u"], name="bad_unsqueeze", axes=[7]),
             helper.make_node("Add", ["x", "u"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(np.ones(3, np.float32), "c")])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    with pytest.raises(Unsupported) as e:
        load(path)
    message = str(e.value)
    assert "\n" not in message and "Unsqueeze" in message and "'bad_unsqueeze'" in message and "opset 11" in message
    assert "Error" not in message and "attributes" not in message
