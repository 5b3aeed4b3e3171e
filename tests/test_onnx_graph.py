"""ONNX and graph models: random graphs with Add and Concatenate and the zoo's ResNets export and
agree with onnxruntime (1e-5); a ResNet-20 built in PyTorch imports as a graph model with
PyTorch's probabilities (1e-4), trains, and passes the finite-difference gradient check."""
import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
nn = torch.nn

from cnnlab.onnx import export, load  # noqa: E402
from test_onnx_export import check_agreement, randomize  # noqa: E402
from test_onnx_import import agreement, float32_torch, model_gradient_errors, torch_export  # noqa: E402,F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def random_graph(seed):
    """A random graph model: a stem, then residual (Add) and branching (Concatenate) blocks."""
    rng = np.random.default_rng(seed)
    pick = lambda options: options[int(rng.integers(len(options)))]          # noqa: E731
    size, c = int(rng.integers(6, 11)), int(rng.integers(1, 4))
    inputs = cnnlab.Input((size, size + int(rng.integers(0, 3)), c))
    x = pick([L.ReLU(), L.BatchNorm(), L.Tanh()])(L.Conv2D(4, 3, padding="same")(inputs))
    for _ in range(int(rng.integers(1, 4))):
        if rng.integers(2):                                                   # residual: x + F(x)
            y = L.Conv2D(x.shape[-1], pick([1, 3]), padding="same", use_bias=bool(rng.integers(2)))(x)
            x = pick([L.ReLU(), L.LeakyReLU(0.1), L.ClippedReLU(0.8)])(L.Add()([L.BatchNorm()(y), x]))
        else:                                                                 # two branches, channels joined
            a = L.Conv2D(int(rng.integers(1, 4)), 3, padding=1)(x)
            b = pick([L.MaxPool2D(3, strides=1, padding=1), L.AvgPool2D(3, strides=1, padding="same"), L.Sigmoid()])(x)
            x = L.Concatenate()([a, b])
        if rng.integers(2):
            x = pick([L.MaxPool2D(2), L.AvgPool2D(2), L.Subsample(2)])(x)
    if rng.integers(2):
        x = L.GlobalAvgPool2D()(x)
    else:
        x = L.Flatten()(x)
        x = L.Concatenate()([L.Dense(3)(x), L.Dense(2)(x)]) if rng.integers(2) else L.Dense(4)(x)
    return randomize(cnnlab.Model(inputs, L.Dense(int(rng.integers(2, 6)))(x), seed=seed), seed)


@pytest.mark.parametrize("seed", range(8))
def test_random_graph_models_agree_with_onnxruntime_and_come_back_identical(seed, tmp_path):
    model = random_graph(seed)
    path = export(model, tmp_path / "g.onnx")
    check_agreement(model, path, batch=3, seed=seed)
    back = load(path)
    x = np.random.default_rng(seed).random((3,) + model.input_shape, dtype=np.float32)
    assert np.abs(back.predict(x, workers=1) - model.predict(x, workers=1)).max() <= 1e-6


@pytest.mark.parametrize("name", ["resnet8", "resnet20"])
def test_the_zoo_resnets_agree_with_onnxruntime(name, tmp_path):
    model = randomize(cnnlab.models.ZOO[name](), 2)
    path = export(model, tmp_path / f"{name}.onnx")
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("Add") == {"resnet8": 3, "resnet20": 9}[name]
    check_agreement(model, path, batch=4)
    assert isinstance(load(path), cnnlab.Model)


class BasicBlock(nn.Module):
    """He et al.'s basic block; a strided 1x1 conv with BN on the shortcut where the shape changes."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNets (depth 6n + 2): 3 stages of n blocks with 16, 32, 64 filters."""

    def __init__(self, depth=20, num_classes=10):
        super().__init__()
        torch.manual_seed(depth)
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, c = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for b in range(n):
                blocks.append(BasicBlock(c, width, 2 if stage and not b else 1))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.0)
                m.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("preserve", [False, True])
def test_resnet20_from_pytorch_imports_as_a_graph_model(tmp_path, preserve):
    net = ResNet(20)
    model = load(torch_export(net, tmp_path / "resnet20.onnx", (3, 32, 32), preserve=preserve))
    assert isinstance(model, cnnlab.Model)
    assert sum(isinstance(layer, L.Add) for layer in model.layers) == 9
    if preserve:                                   # BatchNorm kept: the very parameters of cnnlab's own resnet20
        assert model.num_params == sum(p.numel() for p in net.parameters()) == cnnlab.models.resnet20().num_params
    agreement(net, model, (3, 32, 32), batch=4)


def test_an_imported_resnet_trains_and_passes_the_gradient_check(tmp_path):
    net = ResNet(8, num_classes=3)
    model = load(torch_export(net, tmp_path / "resnet8.onnx", (3, 12, 12), preserve=True))
    assert isinstance(model, cnnlab.Model)
    rng = np.random.default_rng(0)
    x = rng.random((32, 12, 12, 3), dtype=np.float32)
    y = rng.integers(0, 3, 32)
    kernel = model.layers[0].params["kernel"].copy()
    history = model.fit(x, y, epochs=1, batch_size=8, optimizer=cnnlab.optim.SGD(lr=0.02, momentum=0.9), verbose=0,
                        workers=1)
    assert np.isfinite(history["loss"][0]) and not np.array_equal(kernel, model.layers[0].params["kernel"])
    errors = model_gradient_errors(model, x[:2], y[:2], samples=6)
    assert max(errors.values()) < 1e-5, errors
