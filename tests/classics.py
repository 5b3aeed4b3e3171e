"""The nine classic CNNs the ``onnx`` package ships (``onnx/backend/test/data/light``), made testable.

Each file computes its weights with ``ConstantOfShape`` nodes (every weight one constant value), so
the shipped expected output is one number repeated. ``randomized`` rewrites those nodes as random
initializers of the same shapes, scaled so the activations neither vanish nor explode through
fifty layers: a kernel gets ``N(0, 1 / fan_in)``, a BatchNorm variance ``U(0.5, 1.5)``, every
other vector ``U(-0.1, 0.1)`` (a Caffe2 ``Mul`` scale ``U(0.5, 1.5)``).
"""
import os

import numpy as np

onnx = __import__("onnx")
from onnx import helper, numpy_helper  # noqa: E402

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
NAMES = ("bvlc_alexnet", "zfnet512", "vgg19", "inception_v1", "inception_v2", "resnet50", "squeezenet",
         "densenet121", "shufflenet")


def path_of(name):
    return os.path.join(LIGHT, f"light_{name}.onnx")


def expected_output(name):
    """The output shipped beside the file, and the input it was computed from (``onnx``'s dummy data)."""
    out = numpy_helper.to_array(onnx.load_tensor(os.path.join(LIGHT, f"light_{name}_output_0.pb")))
    n = 1 * 3 * 224 * 224
    return (np.arange(n).reshape(1, 3, 224, 224) / n).astype(np.float32), out


def _role(graph, name):
    """``(op_type, input index)`` of the first node reading tensor ``name``, through ``Unsqueeze``."""
    for node in graph.node:
        if name in node.input:
            if node.op_type == "Unsqueeze":
                return _role(graph, node.output[0])
            return node.op_type, list(node.input).index(name)
    return None, None


def randomized(name, seed=0):
    """The file with each ``ConstantOfShape`` weight replaced by a random initializer of its shape."""
    model = onnx.load(path_of(name))
    g = model.graph
    rng = np.random.default_rng(seed)
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep, new = [], []
    for node in g.node:
        if node.op_type != "ConstantOfShape":
            keep.append(node)
            continue
        shape = tuple(int(d) for d in consts[node.input[0]])
        op, index = _role(g, node.output[0])
        if len(shape) >= 2:
            fan_in = shape[0] if op in ("MatMul",) else int(np.prod(shape[1:]))
            value = rng.normal(0, 1 / np.sqrt(fan_in), shape)
        elif (op, index) in (("BatchNormalization", 4),) or op == "Mul":
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.uniform(-0.1, 0.1, shape)
        new.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
        g.input.append(helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, shape))  # IR 3
    shapes = {node.input[0] for node in g.node if node.op_type == "ConstantOfShape"}
    del g.node[:]
    g.node.extend(keep)
    for field in (g.initializer, g.input):
        kept = [t for t in field if t.name not in shapes]
        del field[:]
        field.extend(kept)
    g.initializer.extend(new)
    return model


def logits_of(model):
    """A copy of ``model`` whose output is the tensor its final ``Softmax`` reads (the model itself if none)."""
    last = model.graph.node[-1]
    if last.op_type != "Softmax":
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.node[-1]
    del copy.graph.output[:]
    copy.graph.output.append(helper.make_tensor_value_info(last.input[0], onnx.TensorProto.FLOAT, None))
    return copy
