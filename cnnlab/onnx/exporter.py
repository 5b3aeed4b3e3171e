r"""Write a cnnlab model as an ONNX graph that any ONNX runtime can run.

The graph takes ``input``: float32 images ``(batch, C, H, W)`` as a model exported from
PyTorch does (or ``(batch, H, W, C)`` with ``channels_last=True``; the graph then begins with
one ``Transpose``), and returns ``probabilities``: ``softmax`` of the class scores,
``(batch, classes)``. The batch dimension is symbolic, so any batch size runs.

Inside, every image tensor is NCHW, the layout ONNX's ``Conv`` and pooling operators take,
while cnnlab computes on ``(N, H, W, C)``. Three things change with the layout:

* a conv kernel ``(kh, kw, C/g, F)`` becomes ONNX's ``(F, C/g, kh, kw)``;
* cnnlab's ``Flatten`` orders features ``(h, w, c)`` (channels fastest); an NCHW tensor flattens
  as ``(c, h, w)``, so the exported ``Flatten`` is preceded by a ``Transpose`` to NHWC, and the
  next ``Dense`` keeps its kernel as it is;
* padding becomes explicit ``pads = [top, left, bottom, right]`` computed for the model's input
  size (``"same"`` puts an odd extra row at the bottom, which ONNX allows).

Every layer of ``cnnlab.layers`` has a translation (``Dropout`` is the identity at inference and
is left out; ``BatchNorm`` is ``BatchNormalization`` with the running statistics);
``LocalResponseNorm`` is ``LRN``, ``ChannelShuffle`` the ``Reshape``, ``Transpose``, ``Reshape`` ShuffleNet's
files use; ``LocallyConnected2D`` becomes a ``Conv`` with 0/1 weights that copies each patch out, then one
batched ``MatMul`` with the per-position weights. In graph models (``cnnlab.Model``) every layer
reads the tensors its inbound list names; ``Add`` and ``Concatenate`` become ``Add`` and ``Concat``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._extras import require
from .._io import atomic_write
from ..checks import is_int
from ..layers.geometry import resolve_padding

DEFAULT_OPSET = 17
MIN_OPSET = 13                       # Softmax over one axis, Clip with min/max inputs, Squeeze with axes input
INPUT, OUTPUT = "input", "probabilities"
METADATA_CLASS_NAMES = "class_names"     # JSON list of the class names, in output order


class _Graph:
    """The nodes and initializers of the graph being written, with unique tensor names."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers, self.names = onnx, [], [], set()

    def unique(self, name):
        base, i = name, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def const(self, name, array, dtype=np.float32):
        """An initializer holding ``array``; returns its name."""
        name = self.unique(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.array(array, dtype=dtype, order="C"), name))
        return name

    def node(self, op, inputs, name, **attrs):
        """Append ``op`` reading ``inputs``; returns the name of its (single) output."""
        out = self.unique(name)
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out


def _pads_attr(layer, kernel, strides, dilation):
    """ONNX ``pads`` ``[top, left, bottom, right]`` for the layer's input size."""
    h, w = layer.input_shape[:2]
    t, b, l, r = resolve_padding(layer.padding, (h, w), kernel, strides, dilation, layer.label)
    return [t, l, b, r]


# ---------------------------------------------------------------------------
# One function per layer: (graph, layer, input tensor name) -> output tensor name.
# Image tensors are NCHW; flat tensors (N, D) are as in cnnlab.
# ---------------------------------------------------------------------------
def _conv2d(g, layer, x):
    p = layer.params
    inputs = [x, g.const(f"{layer.name}.kernel", p["kernel"].transpose(3, 2, 0, 1))]   # (kh, kw, C/g, F) -> (F, C/g, kh, kw)
    if layer.use_bias:
        inputs.append(g.const(f"{layer.name}.bias", p["bias"]))
    return g.node("Conv", inputs, layer.name, kernel_shape=list(layer.kernel_size), strides=list(layer.strides),
                  dilations=list(layer.dilation), group=layer.groups,
                  pads=_pads_attr(layer, layer.kernel_size, layer.strides, layer.dilation))


def _dense(g, layer, x):
    inputs = [x, g.const(f"{layer.name}.kernel", layer.params["kernel"])]                # (in, units): y = x @ W + b
    if layer.use_bias:
        inputs.append(g.const(f"{layer.name}.bias", layer.params["bias"]))
    return g.node("Gemm", inputs, layer.name)


def _flatten(g, layer, x):
    if len(layer.input_shape) == 3:                      # NCHW -> NHWC first: cnnlab's features run (h, w, c)
        x = g.node("Transpose", [x], f"{layer.name}.to_nhwc", perm=[0, 2, 3, 1])
    return g.node("Flatten", [x], layer.name, axis=1)


def _pool(op, **extra):
    def export_pool(g, layer, x):
        return g.node(op, [x], layer.name, kernel_shape=list(layer.pool_size), strides=list(layer.strides),
                      pads=_pads_attr(layer, layer.pool_size, layer.strides, (1, 1)), **extra)
    return export_pool


def _subsample(g, layer, x):
    # every s-th pixel = a 1x1 max pool with stride s: ceil(H / s) outputs, as Subsample gives
    return g.node("MaxPool", [x], layer.name, kernel_shape=[1, 1], strides=list(layer.stride))


def _global_avg_pool(g, layer, x):
    pooled = g.node("GlobalAveragePool", [x], f"{layer.name}.pool")                     # (N, C, 1, 1)
    return g.node("Flatten", [pooled], layer.name, axis=1)                               # (N, C)


def _batch_norm(g, layer, x):
    if len(layer.input_shape) not in (1, 3):
        raise ValueError(f"ONNX export: {layer.label} normalizes inputs of per-example shape {layer.input_shape}; "
                         f"only images (H, W, C) and flat features (D,) can be exported")
    p, b = layer.params, layer.buffers
    names = [g.const(f"{layer.name}.{k}", v) for k, v in
             (("gamma", p["gamma"]), ("beta", p["beta"]), ("running_mean", b["running_mean"]),
              ("running_var", b["running_var"]))]
    return g.node("BatchNormalization", [x, *names], layer.name, epsilon=layer.eps, momentum=1 - layer.momentum)


def _clipped_relu(g, layer, x):
    lo, hi = g.const(f"{layer.name}.min", np.float32(0)), g.const(f"{layer.name}.max", np.float32(layer.max_value))
    return g.node("Clip", [x, lo, hi], layer.name)


def _locally_connected(g, layer, x):
    """Patches by a 0/1 convolution, then one batched product with the per-position weights.

    The patch convolution has ``K = kh*kw*C`` output channels; channel ``(p*kw + q)*C + c``
    copies input channel ``c`` at tap ``(p, q)``: the ``(p, q, c)`` order of the layer's kernel.
    """
    (kh, kw), c = layer.kernel_size, layer.input_shape[2]
    ho, wo, f = layer.output_shape
    k, positions = kh * kw * c, ho * wo
    eye = np.zeros((k, c, kh, kw), np.float32)
    for p in range(kh):
        for q in range(kw):
            for ch in range(c):
                eye[(p * kw + q) * c + ch, ch, p, q] = 1
    patches = g.node("Conv", [x, g.const(f"{layer.name}.patch_selector", eye)], f"{layer.name}.patches",
                     kernel_shape=[kh, kw], strides=list(layer.strides), dilations=list(layer.dilation),
                     pads=_pads_attr(layer, layer.kernel_size, layer.strides, layer.dilation))   # (N, K, Ho, Wo)
    cols = g.node("Reshape", [patches, g.const(f"{layer.name}.cols_shape", [0, k, positions], np.int64)],
                  f"{layer.name}.cols")                                                  # (N, K, L)
    cols = g.node("Transpose", [cols], f"{layer.name}.by_position", perm=[2, 0, 1])      # (L, N, K)
    y = g.node("MatMul", [cols, g.const(f"{layer.name}.kernel", layer.params["kernel"].reshape(positions, k, f))],
               f"{layer.name}.products")                                                 # (L, N, F)
    if layer.use_bias:
        y = g.node("Add", [y, g.const(f"{layer.name}.bias", layer.params["bias"].reshape(positions, 1, f))],
                   f"{layer.name}.biased")
    y = g.node("Transpose", [y], f"{layer.name}.by_image", perm=[1, 2, 0])               # (N, F, L)
    return g.node("Reshape", [y, g.const(f"{layer.name}.out_shape", [0, f, ho, wo], np.int64)], layer.name)


def _add(g, layer, xs):
    y = xs[0]
    for k, x in enumerate(xs[1:], 1):
        y = g.node("Add", [y, x], layer.name if k == len(xs) - 1 else f"{layer.name}.partial")
    return y


def _concatenate(g, layer, xs):
    rank = len(layer.input_shape[0])           # cnnlab joins the last axis: channels (ONNX axis 1 of NCHW) or features
    return g.node("Concat", xs, layer.name, axis=1 if rank == 3 else rank)


def _local_response_norm(g, layer, x):
    return g.node("LRN", [x], layer.name, size=layer.size, alpha=layer.alpha, beta=layer.beta, bias=layer.k)


def _channel_shuffle(g, layer, x):
    """ShuffleNet's own form: ``Reshape (N, g, C/g, H, W)``, swap the two channel axes, ``Reshape (N, C, H, W)``."""
    h, w, c = layer.input_shape
    grid = g.node("Reshape", [x, g.const(f"{layer.name}.grid", [0, layer.groups, c // layer.groups, h, w], np.int64)],
                  f"{layer.name}.grid")
    grid = g.node("Transpose", [grid], f"{layer.name}.transposed", perm=[0, 2, 1, 3, 4])
    return g.node("Reshape", [grid, g.const(f"{layer.name}.shape", [0, c, h, w], np.int64)], layer.name)


def _simple(op, **attrs):
    return lambda g, layer, x: g.node(op, [x], layer.name, **attrs)


EXPORTERS = {
    "Conv2D": _conv2d,
    "Dense": _dense,
    "Flatten": _flatten,
    "MaxPool2D": _pool("MaxPool"),
    "AvgPool2D": _pool("AveragePool", count_include_pad=0),      # cnnlab averages over the real pixels only
    "Subsample": _subsample,
    "GlobalAvgPool2D": _global_avg_pool,
    "BatchNorm": _batch_norm,
    "ReLU": _simple("Relu"),
    "Tanh": _simple("Tanh"),
    "Sigmoid": _simple("Sigmoid"),
    "ClippedReLU": _clipped_relu,
    "Dropout": lambda g, layer, x: x,                            # the identity at inference
    "LocallyConnected2D": _locally_connected,
    "Add": _add,                                                 # graph models: these two read a list of tensors
    "Concatenate": _concatenate,
    "LocalResponseNorm": _local_response_norm,
    "ChannelShuffle": _channel_shuffle,
}
EXPORTERS["LeakyReLU"] = lambda g, layer, x: g.node("LeakyRelu", [x], layer.name, alpha=layer.alpha)


def export_layer(g, layer, x):
    """The ONNX nodes of one layer reading tensor ``x``; returns the output tensor's name."""
    fn = EXPORTERS.get(type(layer).__name__)
    if fn is None:
        raise ValueError(f"ONNX export: {layer.label} ({type(layer).__name__}) has no ONNX translation; "
                         f"exportable layers: {', '.join(sorted(EXPORTERS))}")
    return fn(g, layer, x)


# ---------------------------------------------------------------------------
# The whole model
# ---------------------------------------------------------------------------
def to_onnx(model, channels_last=False, opset=DEFAULT_OPSET, class_names=None):
    """The ``onnx.ModelProto`` of ``model`` (see the module docstring for its inputs and outputs)."""
    onnx = require("onnx", extra="onnx", feature="ONNX export")
    from onnx import TensorProto, helper
    opset = _check_opset(opset, onnx)
    model._require_built()
    if len(model.output_shape) != 1:
        raise ValueError(f"ONNX export: a classifier must end in (N, classes) scores; {model.name} ends in "
                         f"{(None,) + tuple(model.output_shape)}")
    num_classes = model.output_shape[0]
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            raise ValueError(f"ONNX export: {len(class_names)} class names for a model with {num_classes} classes")
    g = _Graph(onnx)
    g.names.update({INPUT, OUTPUT})
    shape = list(model.input_shape)
    image = len(shape) == 3
    if image and not channels_last:
        in_shape = ["batch", shape[2], shape[0], shape[1]]
    else:
        in_shape = ["batch", *shape]
    x = INPUT
    if image and channels_last:
        x = g.node("Transpose", [x], "input_to_nchw", perm=[0, 3, 1, 2])
    with np.errstate(all="ignore"):
        x = _export_body(g, model, x)
    g.nodes.append(helper.make_node("Softmax", [x], [OUTPUT], name="softmax", axis=1))
    graph = helper.make_graph(
        g.nodes, model.name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", num_classes])],
        initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="cnnlab",
                              producer_version=_version(), doc_string=f"cnnlab model {model.name!r}")
    proto.ir_version = min(proto.ir_version, _max_ir_version(onnx, opset))
    meta = {"input_layout": "NHWC" if channels_last or not image else "NCHW"}
    if class_names is not None:
        meta[METADATA_CLASS_NAMES] = json.dumps(class_names)
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _export_body(g, model, x):
    """The layers' nodes in order, each reading the tensors its inbound list names (0: the input,
    ``i + 1``: the output of layer ``i``); returns the name of the model's output tensor."""
    tensors = [x]
    for layer, sources in zip(model.layers, model.stack.inbound):
        inputs = [tensors[t] for t in sources]
        tensors.append(export_layer(g, layer, inputs if layer.joins else inputs[0]))
    return tensors[model.stack.output]


def export(model, path, channels_last=False, opset=DEFAULT_OPSET, class_names=None) -> Path:
    """Write ``model`` (a cnnlab model, a run directory or a ``.safetensors`` file) as ONNX to ``path``.

    With a run directory the class names come from its configuration; otherwise give
    ``class_names`` to store them in the file's metadata (``metadata_props["class_names"]``, JSON).
    """
    if isinstance(model, (str, Path)):
        model, names = _load_with_class_names(model)
        class_names = names if class_names is None else class_names
    proto = to_onnx(model, channels_last=channels_last, opset=opset, class_names=class_names)
    onnx = require("onnx", extra="onnx", feature="ONNX export")
    return atomic_write(path, lambda tmp: onnx.save_model(proto, tmp))


def _load_with_class_names(source):
    """A model from a run directory or a model file, and the class names its run recorded (or None)."""
    from ..runs.resolve import resolve_model
    resolved = resolve_model(source, untrained=False)
    return resolved.model, resolved.class_names


def _check_opset(opset, onnx):
    newest = onnx.defs.onnx_opset_version()
    if not is_int(opset) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"ONNX export: opset must be an integer from {MIN_OPSET} to {newest}, received {opset!r}")
    return int(opset)


def _max_ir_version(onnx, opset):
    """The IR version that came with ``opset``: runtimes older than the onnx package can then read the file."""
    for entry in onnx.helper.VERSION_TABLE:          # (release, ir_version, ai.onnx opset, ...)
        if entry[2] == opset:
            return entry[1]
    return onnx.IR_VERSION


def _version():
    from ..runs.files import cnnlab_version
    return cnnlab_version()
