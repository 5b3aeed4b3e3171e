"""ONNX import: networks built in PyTorch here, exported with torch.onnx.export, give the same
probabilities in cnnlab (1e-4), train, and pass the finite-difference gradient check; cnnlab's own
exports come back identical; everything else is refused with one line naming the operator and node."""
import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
nn = torch.nn

from cnnlab.onnx import export, load  # noqa: E402
from cnnlab.onnx.importer import Unsupported  # noqa: E402
from test_onnx_export import randomize, random_sequential  # noqa: E402

TOL = 1e-4
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")     # torch's legacy exporter says it is legacy


@pytest.fixture(autouse=True)
def float32_torch():
    """Networks in float32, as they are exported, whatever default another test module has set."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(previous)


def torch_export(net, path, shape, preserve=False, dynamic=True):
    """Export ``net`` (in eval mode) as PyTorch users do; ``preserve`` keeps BatchNorm as its own node."""
    net.eval()
    kw = {"training": torch.onnx.TrainingMode.PRESERVE} if preserve else {}
    torch.onnx.export(net, torch.zeros((2,) + shape), str(path), dynamo=False, input_names=["input"],
                      output_names=["out"], dynamic_axes={"input": {0: "batch"}} if dynamic else None, **kw)
    return path


def torch_probabilities(net, x_nchw):
    with torch.no_grad():
        out = net(torch.from_numpy(x_nchw))
    return torch.softmax(out, 1).numpy() if not torch.allclose(out.sum(1), torch.ones(len(out))) else out.numpy()


def agreement(net, model, shape, seed=0, batch=5):
    x = np.random.default_rng(seed).random((batch,) + shape, dtype=np.float32)
    ours = model.predict(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), workers=1)
    diff = float(np.abs(ours - torch_probabilities(net, x)).max())
    assert diff <= TOL, diff
    return diff


def lenet5_torch():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                         nn.Sigmoid(), nn.Dropout(0.5), nn.Linear(84, 10), nn.Softmax(dim=1))


class VGGish(nn.Module):
    """conv-BN-ReLU blocks with every padding kind, pooling kinds, a view-flatten and a BN'd classifier."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.ZeroPad2d(1), nn.Conv2d(8, 8, 3, groups=2), nn.BatchNorm2d(8), nn.ReLU6(), nn.MaxPool2d(3, 2, padding=1),
            nn.Conv2d(8, 12, 3, stride=2, padding=(1, 2), dilation=(1, 2)), nn.BatchNorm2d(12), nn.LeakyReLU(0.1),
            nn.AvgPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(12 * 2 * 2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                                        nn.Linear(16, 5))
        for m in self.modules():                   # statistics away from their initial values
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.5, 0.5)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class GlobalPooled(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(2, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.nn.functional.hardtanh(self.conv(x), 0, 6)       # Clip(0, 6)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return torch.log_softmax(self.fc(torch.flatten(x, 1)), 1)


def test_lenet5_from_pytorch_gives_pytorch_probabilities(tmp_path):
    net = lenet5_torch()
    model = load(torch_export(net, tmp_path / "lenet.onnx", (1, 28, 28)))
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "ReLU", "MaxPool2D", "Conv2D", "Tanh", "MaxPool2D", "Flatten", "Dense", "ReLU", "Dense", "Sigmoid",
        "Dense"]
    assert model.input_shape == (28, 28, 1) and model.num_params == sum(p.numel() for p in net.parameters())
    agreement(net, model, (1, 28, 28))


@pytest.mark.parametrize("preserve", [False, True])
def test_vgg_style_net_with_batchnorm_from_pytorch(tmp_path, preserve):
    net = VGGish()
    model = load(torch_export(net, tmp_path / "vgg.onnx", (3, 16, 16), preserve=preserve))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("BatchNorm") == (4 if preserve else 1)   # in eval mode PyTorch folds a conv's BN into it
    assert "ClippedReLU" in kinds and "LeakyReLU" in kinds and "AvgPool2D" in kinds
    agreement(net, model, (3, 16, 16), batch=4)


def test_global_pooling_clip_and_log_softmax_from_pytorch(tmp_path):
    net = GlobalPooled()
    model = load(torch_export(net, tmp_path / "g.onnx", (2, 9, 7), dynamic=False))
    assert "GlobalAvgPool2D" in [type(layer).__name__ for layer in model.layers]
    x = np.random.default_rng(3).random((2, 2, 9, 7), dtype=np.float32)
    with torch.no_grad():
        expected = torch.exp(net(torch.from_numpy(x))).numpy()
    assert np.abs(model.predict(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), workers=1) - expected).max() <= TOL


def model_gradient_errors(model, x, y, samples=12, seed=0):
    """Relative errors of the model's backward pass (loss gradient) against float64 finite differences,
    on ``samples`` random entries of the input and of every parameter."""
    model.astype(np.float64)
    x = x.astype(np.float64)
    for layer in model.layers:
        layer.needs_input_grad = True

    def loss():
        return model.loss.forward(model.forward(x, training=True), y)

    loss()
    dx = model.backward(model.loss.backward())
    rng = np.random.default_rng(seed)
    errors = {}
    for name, arr, grad in [("input", x, dx)] + model.parameters():
        idx = rng.choice(arr.size, size=min(samples, arr.size), replace=False)
        flat = arr.reshape(-1)
        numeric = []
        for i in idx:
            old = flat[i]
            flat[i] = old + 1e-6
            up = loss()
            flat[i] = old - 1e-6
            down = loss()
            flat[i] = old
            numeric.append((up - down) / 2e-6)
        analytic = grad.reshape(-1)[idx]
        # relative; a gradient that vanishes (a bias before BatchNorm in training) is compared with 1e-4: rounding noise
        errors[name] = float(np.linalg.norm(analytic - numeric) /
                             max(np.linalg.norm(analytic), np.linalg.norm(numeric), 1e-4))
    return errors


def test_imported_models_train_and_pass_the_gradient_check(tmp_path):
    net = VGGish()
    path = torch_export(net, tmp_path / "vgg.onnx", (3, 16, 16), preserve=True)
    rng = np.random.default_rng(0)
    x = rng.random((48, 16, 16, 3), dtype=np.float32)
    y = (x[:, :8].mean(axis=(1, 2, 3)) > x[:, 8:].mean(axis=(1, 2, 3))).astype(np.int64)   # top brighter than bottom?

    def trained(lr):
        """The imported model, its loss before, and after 3 epochs of SGD at ``lr`` (BatchNorm's statistics move too)."""
        model = load(path)
        before = model.evaluate(x, y, workers=1)["loss"]
        model.fit(x, y, epochs=3, batch_size=16, optimizer=cnnlab.optim.SGD(lr=lr, momentum=0.9), verbose=0, workers=1)
        return model, before, model.evaluate(x, y, workers=1)["loss"]

    # loss after / before, measured by benchmarks/measure_thresholds.py (seeds 0-4 x compiled loops on/off x OpenBLAS
    # kernels; benchmarks/README.md): 0.47-0.70; threshold 0.8 (margin 0.1). With a learning
    # rate of ~0 only BatchNorm's running statistics move: 0.96, above it.
    model, before, after = trained(0.05)
    assert after < 0.8 * before, (before, after)
    _, before, after = trained(1e-30)
    assert not after < 0.8 * before, (before, after)
    # the whole imported network, backward against finite differences (ReLU kinks avoided by a smooth input)
    errors = model_gradient_errors(model, x[:3], y[:3])
    assert max(errors.values()) < 1e-5, errors
    lenet = load(torch_export(lenet5_torch(), tmp_path / "lenet.onnx", (1, 28, 28)))
    errors = model_gradient_errors(lenet, rng.random((2, 28, 28, 1)), np.array([3, 7]))
    assert max(errors.values()) < 1e-5, errors


def test_model_gradient_check_catches_a_wrong_weight_layout():
    model = randomize(cnnlab.models.tiny_cnn(input_shape=(8, 8, 1), num_classes=3), 0)
    dense = model.layers[-1]
    dense.backward = lambda dy, f=dense.backward: f(dy) * 1.5 if f(dy) is not None else None   # a wrong input gradient
    errors = model_gradient_errors(model, np.random.default_rng(1).random((2, 8, 8, 1)), np.array([0, 2]))
    assert errors["input"] > 0.1


@pytest.mark.parametrize("seed", range(12))
def test_cnnlab_exports_come_back_identical(seed, tmp_path):
    model = random_sequential(seed)
    if any(isinstance(layer, L.LocallyConnected2D) for layer in model.layers):
        with pytest.raises(Unsupported, match=r"Reshape \(node .*\) reshapes"):
            load(export(model, tmp_path / "m.onnx"))
        return
    back = load(export(model, tmp_path / "m.onnx", channels_last=seed % 2 == 0))
    assert back.input_shape == model.input_shape and back.num_params == model.num_params
    x = np.random.default_rng(seed).random((3,) + model.input_shape, dtype=np.float32)
    assert np.abs(back.predict(x, workers=1) - model.predict(x, workers=1)).max() <= 1e-6


@pytest.mark.parametrize("name", sorted(cnnlab.models.ZOO))
def test_zoo_models_come_back_identical(name, tmp_path):
    model = randomize(cnnlab.models.ZOO[name](), 4)
    back = load(export(model, tmp_path / "m.onnx"))
    assert [type(a) for a in back.layers] == [type(b) for b in model.layers if not isinstance(b, L.Dropout)]
    x = np.random.default_rng(0).random((2,) + model.input_shape, dtype=np.float32)
    assert np.abs(back.predict(x, workers=1) - model.predict(x, workers=1)).max() <= 1e-6


# ---------------------------------------------------------------------------
# Refusals and damaged files
# ---------------------------------------------------------------------------
def one_node_model(path, op, **attrs):
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="the_node", **attrs)], "g", [x], [y])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_an_unsupported_operator_is_refused_naming_it_and_its_node(tmp_path):
    with pytest.raises(Unsupported, match=r"Erf \(node 'the_node'\) is not supported by cnnlab's ONNX import; "
                                          r"supported: Conv, "):
        load(one_node_model(tmp_path / "erf.onnx", "Erf"))


@pytest.mark.parametrize("make,message", [
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 36, 2), nn.Hardswish()),
     r"HardSwish \(node '/3/HardSwish'\) is not supported"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AvgPool2d(3, 1, padding=1), nn.Flatten(), nn.Linear(128, 2)),
     r"AveragePool \(node .*\) counts padded zeros in the average \(count_include_pad=1\)"),
    (lambda: nn.Sequential(nn.ZeroPad2d((0, 1, 2, 0)), nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 56, 2)),
     r"Conv \(node '/1/Conv'\) pads top/bottom 2/0 and left/right 0/1: cnnlab takes symmetric padding or 'same'"),
    (lambda: nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(25, 2)),
     r"MaxPool \(node .*\) follows a Pad; cnnlab folds zero padding only into the Conv"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 36, 2), nn.Hardtanh(-1, 1)),
     r"Clip \(node .*\) clips to \[-1.0, 1.0\]"),
])
def test_pytorch_models_beyond_cnnlab_are_refused_in_one_line(tmp_path, make, message):
    with pytest.raises(Unsupported, match=message) as e:
        load(torch_export(make(), tmp_path / "m.onnx", (1, 8, 8)))
    assert "\n" not in str(e.value) and str(tmp_path / "m.onnx") in str(e.value)


@pytest.mark.parametrize("content,message", [
    (b"", r"is not an ONNX model \(no graph in it\)"),
    (b"hello, I am a text file\n", r"is not a readable ONNX model \(damaged or truncated\?\)"),
])
def test_files_that_are_not_onnx_are_refused(tmp_path, content, message):
    (tmp_path / "m.onnx").write_bytes(content)
    with pytest.raises(cnnlab.CnnlabFileError, match=message):
        load(tmp_path / "m.onnx")


def test_truncated_and_missing_files_and_absent_external_data_are_refused(tmp_path):
    good = export(cnnlab.models.lenet5(), tmp_path / "good.onnx").read_bytes()
    for cut in (len(good) // 2, len(good) - 7, 200):
        (tmp_path / "cut.onnx").write_bytes(good[:cut])
        with pytest.raises(cnnlab.CnnlabFileError, match=r"cut.onnx"):
            load(tmp_path / "cut.onnx")
    with pytest.raises(cnnlab.CnnlabFileError, match=r"ONNX file .*nothing.onnx does not exist"):
        load(tmp_path / "nothing.onnx")
    proto = onnx.load(str(tmp_path / "good.onnx"))
    onnx.save_model(proto, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.weights",
                    size_threshold=0)
    assert load(tmp_path / "ext.onnx").num_params == cnnlab.models.lenet5().num_params     # with its data: fine
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(cnnlab.CnnlabFileError, match=r"ext.onnx: its external weights cannot be read"):
        load(tmp_path / "ext.onnx")
