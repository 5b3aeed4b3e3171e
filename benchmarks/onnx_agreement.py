"""How closely ONNX export and import agree with their references, on random weights and inputs.

    python benchmarks/onnx_agreement.py [--random 50] [--batch 256]

Export: every zoo model, ``--random`` random Sequential models (the generator of
tests/test_onnx_export.py: every layer type, every padding kind) and as many random graph models
(tests/test_onnx_graph.py: Add and Concatenate), onnxruntime against
``model.predict``. Import: the PyTorch networks of tests/test_onnx_import.py and test_onnx_graph.py exported with
``torch.onnx.export``, PyTorch against the imported cnnlab model. Prints the largest absolute
difference of the class probabilities over ``--batch`` random images per model.
"""
import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.filterwarnings("ignore")

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

import cnnlab  # noqa: E402
from cnnlab.onnx import export, load  # noqa: E402
from test_onnx_export import randomize, random_sequential  # noqa: E402
from test_onnx_graph import ResNet, random_graph  # noqa: E402
from test_onnx_import import GlobalPooled, VGGish, lenet5_torch, torch_export, torch_probabilities  # noqa: E402


def onnxruntime_difference(model, path, batch, seed):
    x = np.random.default_rng(seed).random((batch,) + tuple(model.input_shape), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
    return float(np.abs(theirs - model.predict(x)).max())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=50, help="random Sequential models (default 50)")
    parser.add_argument("--batch", type=int, default=256, help="random images per model (default 256)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    worst = {}
    for name, fn in cnnlab.models.ZOO.items():
        model = randomize(fn(), 1)
        worst[f"export {name}"] = onnxruntime_difference(model, export(model, tmp / f"{name}.onnx"), args.batch, 0)
    diffs = []
    for seed in range(args.random):
        model = random_sequential(seed)
        diffs.append(onnxruntime_difference(model, export(model, tmp / "r.onnx"), args.batch, seed))
    worst[f"export {args.random} random Sequential models"] = max(diffs)
    diffs = []
    for seed in range(args.random):
        model = random_graph(seed)
        diffs.append(onnxruntime_difference(model, export(model, tmp / "g.onnx"), args.batch, seed))
    worst[f"export {args.random} random graph models"] = max(diffs)
    nets = [("LeNet-5", lenet5_torch(), (1, 28, 28), False), ("VGG-style, BN folded", VGGish(), (3, 16, 16), False),
            ("VGG-style, BN kept", VGGish(), (3, 16, 16), True), ("global pooling", GlobalPooled(), (2, 9, 7), False),
            ("ResNet-20", ResNet(20), (3, 32, 32), True)]
    for name, net, shape, preserve in nets:
        model = load(torch_export(net, tmp / "t.onnx", shape, preserve=preserve))
        x = np.random.default_rng(0).random((args.batch,) + shape, dtype=np.float32)
        ours = model.predict(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        reference = torch_probabilities(net, x)
        if name == "global pooling":                     # it ends in log_softmax
            with torch.no_grad():
                reference = torch.exp(net(torch.from_numpy(x))).numpy()
        worst[f"import {name} from PyTorch"] = float(np.abs(ours - reference).max())
    width = max(map(len, worst))
    print(f"{'model'.ljust(width)}  max |difference| of probabilities")
    for k, v in worst.items():
        print(f"{k.ljust(width)}  {v:.2e}")


if __name__ == "__main__":
    main()
