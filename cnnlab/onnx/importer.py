r"""Read an ONNX classification CNN into a cnnlab model that takes ``(N, H, W, C)`` images.

The graph is walked node by node in its (topological) order. Every ONNX tensor gets a
``_Value``: which cnnlab step computes it and how the ONNX tensor is laid out relative to the
cnnlab one:

* ``nchw``: an ONNX image ``(N, C, H, W)``; cnnlab holds the same numbers as ``(N, H, W, C)``.
* ``nhwc``: an ONNX image already channels-last (a ``channels_last`` input, or after the
  ``Transpose`` that precedes a flatten in cnnlab's own exports).
* ``pooled``: ONNX ``(N, C, 1, 1)`` after global pooling; cnnlab holds ``(N, C)``.
* ``flat``: ONNX ``(N, D)``; cnnlab holds the same features in another order, ``perm``:
  ``onnx[:, i] = cnnlab[:, perm[i]]``. Flattening an NCHW tensor orders features
  ``(c, h, w)``, cnnlab's ``Flatten`` orders them ``(h, w, c)``; the ``Dense`` that reads them
  gets its kernel rows permuted instead (``W_cnnlab[perm] = W_onnx``), so no transpose runs.
* ``grouped`` and ``shuffled``: inside a channel shuffle, ONNX ``(N, g, C/g, H, W)`` after the first
  ``Reshape`` and ``(N, C/g, g, H, W)`` after the ``Transpose``; cnnlab still holds the NCHW
  input's numbers, and the ``Reshape`` back to ``(N, C, H, W)`` becomes one ``ChannelShuffle(g)``.

Constants (initializers, ``Constant`` nodes, and whatever is computed from constants only, such
as the ``Shape -> Gather -> Concat`` chain PyTorch writes for ``x.view(x.size(0), -1)``) are
folded with ``onnx``'s reference evaluator; the batch size is a marker value in those shapes.

Supported operators: ``Conv`` (strides, pads, dilations, group; a preceding zero ``Pad`` is
folded into it; a 1x1 ``Conv`` on globally pooled features is a ``Dense``), ``Gemm``, ``MatMul``,
``Add``/``Mul`` of a per-channel constant (folded into the Conv, Dense or BatchNorm before it:
Caffe2 writes its BatchNorm as ``BatchNormalization``, ``Mul``, ``Add``), ``Relu``, ``LeakyRelu``,
``Sigmoid``, ``Tanh``, ``Clip`` (``[0, m]``: ``ClippedReLU``), ``MaxPool``, ``AveragePool`` (a
window covering the whole image is global pooling), ``GlobalAveragePool`` (and ``ReduceMean`` over H, W),
``BatchNormalization`` (inference form), ``LRN`` (``LocalResponseNorm``), ``Flatten`` and
``Reshape`` to ``(N, D)``, the channel shuffle (``Reshape`` to ``(N, g, C/g, H, W)``, ``Transpose
[0, 2, 1, 3, 4]``, ``Reshape`` back: a layout of its own between the three nodes), ``Add``, ``Sum``
and ``Concat`` of branches (graph models), ``Softmax``/``LogSoftmax`` at the end, also over
``(N, C, 1, 1)`` (dropped: ``predict`` applies the softmax), ``Dropout``, ``Identity`` and the
layout ``Transpose``\ s. Constant folding evaluates a node under the file's own opset, so the
opset 1-12 forms (``Unsqueeze`` with an ``axes`` attribute...) fold as they were written. Anything
else is refused with one line naming the operator and the node.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import layers as L
from .._extras import require
from .._io import CnnlabFileError
from ..layers.geometry import resolve_padding

BATCH = 2 ** 40 + 7          # stands for the (unknown) batch size inside constant-folded shapes
SUPPORTED = ("Conv", "Pad", "Gemm", "MatMul", "Add", "Sum", "Mul", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip",
             "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "BatchNormalization", "LRN", "Flatten",
             "Reshape", "Concat", "Softmax", "LogSoftmax", "Dropout", "Identity", "Transpose", "Constant")


class Unsupported(CnnlabFileError):
    """The ONNX graph uses an operator, or an operator setting, that cnnlab cannot represent."""


@dataclass
class _Step:
    """One cnnlab layer: its inputs (step indices, -1 is the model input) and the weights to load."""
    layer: object
    inputs: list
    shape: tuple                                  # cnnlab per-example output shape
    params: dict = field(default_factory=dict)
    buffers: dict = field(default_factory=dict)
    op: str = ""


@dataclass
class _Value:
    step: int                                     # the step computing it (-1: the input)
    layout: str                                   # "nchw", "nhwc", "pooled" or "flat"
    shape: tuple                                  # cnnlab per-example shape
    perm: np.ndarray | None = None                # flat only: onnx[:, i] = cnnlab[:, perm[i]]
    pads: tuple = (0, 0, 0, 0)                    # a zero Pad waiting for the next Conv: (top, left, bottom, right)
    groups: int = 0                               # grouped/shuffled only: the g of a channel shuffle under way


class _Importer:
    def __init__(self, model, source):
        from onnx import numpy_helper
        self.onnx_model, self.source = model, source
        self.graph = model.graph
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.values: dict[str, _Value] = {}
        self.steps: list[_Step] = []
        self.consumers: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        for out in self.graph.output:
            self.consumers[out.name] = self.consumers.get(out.name, 0) + 1
        self.final = None                         # the tensor the model's scores are (before a final softmax)

    # ---- errors ----------------------------------------------------------
    def refuse(self, node, why):
        raise Unsupported(f"{self.source}: {node.op_type} (node {node.name or node.output[0]!r}) {why}")

    # ---- inputs ----------------------------------------------------------
    def add_input(self):
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise Unsupported(f"{self.source}: cnnlab models take one input; this graph has {len(inputs)} "
                              f"({', '.join(i.name for i in inputs)})")
        inp = inputs[0]
        t = inp.type.tensor_type
        if t.elem_type != 1:
            raise Unsupported(f"{self.source}: input {inp.name!r} has element type "
                              f"{_type_name(t.elem_type)}; cnnlab imports float32 models")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if len(dims) not in (2, 4) or any(d is None or d < 1 for d in dims[1:]):
            raise Unsupported(f"{self.source}: input {inp.name!r} has shape {_dims_text(t.shape.dim)}; cnnlab imports "
                              f"images (N, C, H, W) or (N, H, W, C), or features (N, D), with fixed sizes")
        self.batch = dims[0]
        if len(dims) == 2:
            self.values[inp.name] = _Value(-1, "flat", (dims[1],))
            return (dims[1],)
        readers = [n for n in self.graph.node if inp.name in n.input]
        channels_last = readers and all(n.op_type == "Transpose" and _perm(n) == [0, 3, 1, 2] for n in readers)
        if channels_last:
            shape = tuple(dims[1:])
            self.values[inp.name] = _Value(-1, "nhwc", shape)
        else:
            shape = (dims[2], dims[3], dims[1])
            self.values[inp.name] = _Value(-1, "nchw", shape)
        return shape

    # ---- helpers ---------------------------------------------------------
    def value(self, node, name, layouts=("nchw", "nhwc", "pooled", "flat")):
        if name not in self.values:
            if name in self.consts:
                self.refuse(node, f"reads the constant {name!r} where cnnlab needs the data flowing through the network")
            self.refuse(node, f"reads {name!r}, which no supported node computes")
        v = self.values[name]
        if v.layout not in layouts:
            self.refuse(node, f"needs {' or '.join(layouts)} input; {name!r} is {_describe(v)}")
        if any(v.pads) and node.op_type != "Conv":
            self.refuse(node, "follows a Pad; cnnlab folds zero padding only into the Conv that follows it")
        return v

    def const(self, node, index, required=True):
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            if required:
                self.refuse(node, f"needs input {index}")
            return None
        if name not in self.consts:
            self.refuse(node, f"needs input {index} ({name!r}) to be a constant (an initializer)")
        return self.consts[name]

    def add_step(self, node, layer, inputs, shape, params=None, buffers=None):
        self.steps.append(_Step(layer, list(inputs), tuple(shape), params or {}, buffers or {}, node.op_type))
        return len(self.steps) - 1

    def same(self, node, v, **changes):
        """The output is the input's numbers under another ONNX name (identity, layout change)."""
        self.values[node.output[0]] = _Value(**{**v.__dict__, **changes})

    def layer_on(self, node, v, layer, params=None, buffers=None, layout=None):
        """Run ``layer`` on value ``v``; the output keeps ``v``'s layout (and feature order) unless told."""
        shape = layer.compute_output_shape(v.shape)
        step = self.add_step(node, layer, [v.step], shape, params, buffers)
        self.values[node.output[0]] = _Value(step, layout or v.layout, tuple(shape), v.perm)

    def only_output(self, node):
        for extra in node.output[1:]:
            if extra and self.consumers.get(extra):
                self.refuse(node, f"output {extra!r} is used; cnnlab computes only the first output")

    # ---- the walk --------------------------------------------------------
    def run(self):
        input_shape = self.add_input()
        nodes = list(self.graph.node)
        for node in nodes:
            if node.domain not in ("", "ai.onnx"):
                self.refuse(node, f"is in the custom domain {node.domain!r}; cnnlab imports standard ONNX operators")
            if self.fold_constant(node):
                continue
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                self.refuse(node, f"is not supported by cnnlab's ONNX import; supported: {', '.join(SUPPORTED)}")
            handler(node)
        return input_shape, self.finish()

    def fold_constant(self, node):
        """Evaluate a node whose inputs are all constants (shape arithmetic, Constant); True if it was."""
        if node.op_type == "Shape":
            v = self.value(node, node.input[0])
            shape = _onnx_shape(v)
            start, end = _attr(node, "start", 0), _attr(node, "end", None)
            self.consts[node.output[0]] = np.array(shape[start:end], np.int64)
            return True
        if not all(i in self.consts or not i for i in node.input):
            return False
        if node.op_type in ("Softmax", "LogSoftmax") or not node.output:
            return False
        try:
            outs = _evaluate(node, {i: self.consts[i] for i in node.input if i}, self.onnx_model.opset_import)
        except Exception:  # noqa: BLE001 - the evaluator raises many kinds for an unsupported node
            self.refuse(node, f"reads only constants, and the onnx reference evaluator cannot compute it at opset "
                              f"{_opset(self.onnx_model)}")
        for name, value in zip(node.output, outs):
            self.consts[name] = np.asarray(value)
        return True

    def finish(self):
        outputs = list(self.graph.output)
        if len(outputs) != 1:
            raise Unsupported(f"{self.source}: cnnlab classifiers have one output; this graph has {len(outputs)}")
        name = self.final or outputs[0].name
        if name not in self.values:
            raise Unsupported(f"{self.source}: the output {outputs[0].name!r} is not computed from the input")
        v = self.values[name]
        if v.layout not in ("flat", "pooled") or len(v.shape) != 1:
            raise Unsupported(f"{self.source}: the output {outputs[0].name!r} is {_describe(v)}; a classifier ends in "
                              f"class scores (N, classes)")
        if v.perm is not None:
            raise Unsupported(f"{self.source}: the output {outputs[0].name!r} is flattened image features, not class "
                              f"scores from a Gemm/MatMul")
        if not self.steps:
            raise Unsupported(f"{self.source}: the graph has no layers")
        return v.step

    # ---- convolution and padding ------------------------------------------
    def op_Pad(self, node):
        v = self.value(node, node.input[0], ("nchw",))
        mode = _attr(node, "mode", b"constant")
        pads = _attr(node, "pads", None)
        if pads is None:
            pads = self.const(node, 1)
        value = self.const(node, 2, required=False) if len(node.input) > 2 else _attr(node, "value", 0.0)
        pads = [int(p) for p in np.asarray(pads).ravel()]
        if mode not in (b"constant", "constant") or (value is not None and float(np.asarray(value).ravel()[0] if
                                                                          np.size(value) else 0) != 0):
            self.refuse(node, f"pads with mode {mode!r} and value {value!r}; cnnlab folds only zero padding")
        axes = self.const(node, 3, required=False) if len(node.input) > 3 else None
        if axes is not None:
            full = [0] * 8
            for k, a in enumerate(np.asarray(axes).ravel()):
                full[int(a) % 4], full[4 + int(a) % 4] = pads[k], pads[len(pads) // 2 + k]
            pads = full
        if len(pads) != 8 or pads[0] or pads[1] or pads[4] or pads[5] or min(pads) < 0:
            self.refuse(node, f"pads {pads}: cnnlab folds non-negative padding of H and W only")
        t, l, b, r = pads[2], pads[3], pads[6], pads[7]
        vt, vl, vb, vr = v.pads
        self.same(node, v, pads=(vt + t, vl + l, vb + b, vr + r))

    def op_Conv(self, node):
        v = self.value(node, node.input[0], ("nchw", "pooled"))
        w = self.const(node, 1).astype(np.float32)
        bias = self.const(node, 2, required=False)
        if w.ndim != 4:
            self.refuse(node, f"has a {w.ndim - 2}-D kernel {w.shape}; cnnlab convolutions are 2-D")
        if v.layout == "pooled":
            return self.conv_on_pooled(node, v, w, bias)
        f, cg, kh, kw = w.shape
        groups = _attr(node, "group", 1)
        strides, dilation = tuple(_attr(node, "strides", [1, 1])), tuple(_attr(node, "dilations", [1, 1]))
        h, wd, c = v.shape
        if cg * groups != c:
            self.refuse(node, f"kernel {w.shape} with group={groups} does not match {c} input channels")
        pads = self.pads(node, (h, wd), (kh, kw), strides, dilation, extra=v.pads)
        padding = self.padding_arg(node, pads, (h, wd), (kh, kw), strides, dilation)
        layer = L.Conv2D(f, (kh, kw), strides=strides, padding=padding, dilation=dilation, groups=groups,
                         use_bias=bias is not None)
        params = {"kernel": w.transpose(2, 3, 1, 0)}          # (F, C/g, kh, kw) -> (kh, kw, C/g, F)
        if bias is not None:
            params["bias"] = bias.astype(np.float32)
        self.layer_on(node, _Value(v.step, "nchw", v.shape), layer, params)         # the Pad is used up

    def conv_on_pooled(self, node, v, w, bias):
        """A 1x1 ``Conv`` on globally pooled ``(N, C, 1, 1)`` features (DenseNet's classifier) is a ``Dense``."""
        f, c, kh, kw = w.shape
        if (kh, kw) != (1, 1) or _attr(node, "group", 1) != 1 or any(_attr(node, "pads", [0])) or \
                _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            self.refuse(node, f"convolves globally pooled features with a {kh}x{kw} kernel, group "
                              f"{_attr(node, 'group', 1)} and padding; cnnlab imports a 1x1 Conv there as a Dense")
        self.dense(node, v, w[:, :, 0, 0].T, bias)
        self.values[node.output[0]].layout = "pooled"

    def pads(self, node, hw, kernel, strides, dilation, extra=(0, 0, 0, 0)):
        """``(top, bottom, left, right)`` of a Conv or pool node, plus a folded Pad's ``(t, l, b, r)``."""
        auto = _attr(node, "auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            t, b, l, r = resolve_padding("same", hw, kernel, strides, dilation)
            if auto == "SAME_LOWER":
                t, b, l, r = b, t, r, l
        elif auto == "VALID":
            t = b = l = r = 0
        else:
            p = _attr(node, "pads", [0, 0, 0, 0])
            if len(p) != 4:
                self.refuse(node, f"has pads {p}; cnnlab layers are 2-D")
            t, l, b, r = p
        et, el, eb, er = extra
        return (t + et, b + eb, l + el, r + er)

    def padding_arg(self, node, pads, hw, kernel, strides, dilation):
        """cnnlab's ``padding`` argument for explicit ``(top, bottom, left, right)`` padding."""
        t, b, l, r = pads
        if not any(pads):
            return "valid"
        if t == b and l == r:
            return (t, l)
        if pads == resolve_padding("same", hw, kernel, strides, dilation):
            return "same"
        self.refuse(node, f"pads top/bottom {t}/{b} and left/right {l}/{r}: cnnlab takes symmetric padding or "
                          f"'same' (the extra row at the bottom)")

    # ---- pooling ---------------------------------------------------------
    def pool(self, node, cls):
        v = self.value(node, node.input[0], ("nchw",))
        self.only_output(node)
        kernel = tuple(_attr(node, "kernel_shape", None) or ())
        strides = tuple(_attr(node, "strides", [1] * len(kernel)))
        if len(kernel) != 2:
            self.refuse(node, f"has kernel_shape {list(kernel)}; cnnlab pools 2-D images")
        if any(d != 1 for d in _attr(node, "dilations", [1, 1])):
            self.refuse(node, f"has dilations {_attr(node, 'dilations', None)}; cnnlab pools without dilation")
        if _attr(node, "storage_order", 0):
            self.refuse(node, "has storage_order 1 (column-major indices)")
        h, w, _ = v.shape
        pads = self.pads(node, (h, w), kernel, strides, (1, 1))
        if _attr(node, "ceil_mode", 0):
            for n, k, s, p in ((h, kernel[0], strides[0], pads[0] + pads[1]), (w, kernel[1], strides[1], pads[2] + pads[3])):
                if (n + p - k) % s:
                    self.refuse(node, "has ceil_mode=1 where it adds a partial window; cnnlab pools with floor")
        if cls is L.AvgPool2D and any(pads) and _attr(node, "count_include_pad", 0):
            self.refuse(node, "counts padded zeros in the average (count_include_pad=1); cnnlab averages over the "
                              "real pixels only")
        t, b, l, r = pads
        if cls is L.AvgPool2D and (h + t + b - kernel[0]) // strides[0] == 0 and kernel[0] - t >= h and \
                (w + l + r - kernel[1]) // strides[1] == 0 and kernel[1] - l >= w and min(pads) >= 0:
            return self.layer_on(node, v, L.GlobalAvgPool2D(), layout="pooled")     # one window over every real pixel
        if cls is L.MaxPool2D and kernel == (1, 1) and not any(pads):
            return self.layer_on(node, v, L.Subsample(strides))
        padding = self.padding_arg(node, pads, (h, w), kernel, strides, (1, 1))
        try:
            layer = cls(kernel, strides=strides, padding=padding)
        except ValueError as e:
            self.refuse(node, f"cannot be represented: {e}")
        self.layer_on(node, v, layer)

    def op_MaxPool(self, node):
        self.pool(node, L.MaxPool2D)

    def op_AveragePool(self, node):
        self.pool(node, L.AvgPool2D)

    def op_GlobalAveragePool(self, node):
        v = self.value(node, node.input[0], ("nchw", "nhwc"))
        if v.layout == "nhwc":
            self.refuse(node, "pools a channels-last tensor")
        self.layer_on(node, v, L.GlobalAvgPool2D(), layout="pooled")

    def op_ReduceMean(self, node):
        v = self.value(node, node.input[0], ("nchw",))
        axes = _attr(node, "axes", None)
        if axes is None and len(node.input) > 1:
            axes = self.const(node, 1)
        if axes is None or sorted(int(a) % 4 for a in np.asarray(axes).ravel()) != [2, 3]:
            self.refuse(node, f"averages over axes {axes}; cnnlab imports the mean over H and W (global pooling)")
        self.layer_on(node, v, L.GlobalAvgPool2D(), layout="pooled" if _attr(node, "keepdims", 1) else "flat")

    # ---- fully connected ---------------------------------------------------
    def dense(self, node, v, w, bias):
        """A Dense layer with ONNX weights ``w`` (in, out) on value ``v``; rows follow cnnlab's feature order."""
        if w.ndim != 2 or w.shape[0] != v.shape[0]:
            self.refuse(node, f"has weights of shape {w.shape} for {v.shape[0]} input features")
        kernel = w.astype(np.float32)
        if v.perm is not None:
            kernel = np.empty_like(kernel)
            kernel[v.perm] = w                                # cnnlab feature perm[i] is ONNX feature i
        params = {"kernel": kernel}
        if bias is not None:
            params["bias"] = np.broadcast_to(np.asarray(bias, np.float32), (w.shape[1],)).copy()
        layer = L.Dense(w.shape[1], use_bias=bias is not None)
        shape = layer.compute_output_shape(v.shape)
        step = self.add_step(node, layer, [v.step], shape, params)
        self.values[node.output[0]] = _Value(step, "flat", shape)

    def op_Gemm(self, node):
        v = self.value(node, node.input[0], ("flat",))
        if _attr(node, "transA", 0):
            self.refuse(node, "has transA=1; cnnlab's Dense reads (N, D) features")
        w = self.const(node, 1).astype(np.float32)
        if _attr(node, "transB", 0):
            w = w.T
        w = w * np.float32(_attr(node, "alpha", 1.0))
        c = self.const(node, 2, required=False)
        if c is not None:
            c = np.asarray(c, np.float32) * np.float32(_attr(node, "beta", 1.0))
            if c.size not in (1, w.shape[1]) or (c.ndim == 2 and c.shape[0] != 1):
                self.refuse(node, f"adds C of shape {c.shape}; cnnlab takes one bias per output")
            c = c.reshape(-1)
        self.dense(node, v, w, c)

    def op_MatMul(self, node):
        v = self.value(node, node.input[0], ("flat",))
        self.dense(node, v, self.const(node, 1), None)

    # ---- element-wise --------------------------------------------------------
    def op_Add(self, node):
        a, b = node.input[0], node.input[1]
        if a in self.consts or b in self.consts:
            x, c = (b, self.consts[a]) if a in self.consts else (a, self.consts[b])
            return self.fold_affine(node, self.value(node, x), np.asarray(c, np.float32))
        self.join(node, L.Add(), [self.value(node, a), self.value(node, b)])

    def op_Sum(self, node):
        """The n-ary ``Sum`` (Caffe2's residual join) is cnnlab's ``Add`` of n inputs."""
        values = [self.value(node, name) for name in node.input]
        if len(values) == 1:
            return self.same(node, values[0])
        self.join(node, L.Add(), values)

    def op_Mul(self, node):
        a, b = node.input[0], node.input[1]
        if not (a in self.consts) ^ (b in self.consts):
            self.refuse(node, "multiplies two tensors; cnnlab imports x * constant (one number per channel), folded "
                              "into the layer before it")
        x, c = (b, self.consts[a]) if a in self.consts else (a, self.consts[b])
        self.fold_affine(node, self.value(node, x), np.asarray(c, np.float32))

    def join(self, node, layer, values):
        """A layer reading several values (a graph model's ``Add`` or ``Concatenate``): same layout and feature order."""
        first = values[0]
        for v in values[1:]:
            same_order = (v.perm is None and first.perm is None) or (v.perm is not None and first.perm is not None
                                                                     and np.array_equal(v.perm, first.perm))
            if v.layout != first.layout or not same_order:
                self.refuse(node, f"joins {_describe(first)} and {_describe(v)}; cnnlab joins tensors of one layout")
        try:
            shape = layer.compute_output_shape([v.shape for v in values])
        except ValueError as e:
            self.refuse(node, f"cannot join these inputs: {e}")
        step = self.add_step(node, layer, [v.step for v in values], shape)
        self.values[node.output[0]] = _Value(step, first.layout, tuple(shape), first.perm)

    def fold_affine(self, node, v, c):
        """Fold ``x + c`` (``Add``) or ``x * c`` (``Mul``), ``c`` one number per channel, into the layer computing ``x``.

        ``x + c`` joins the bias of a Conv or Dense (``beta`` of a BatchNorm); ``x * c`` scales the kernel and
        bias (``gamma`` and ``beta``): Caffe2's BatchNorm is written as ``BatchNormalization``, ``Mul``, ``Add``.
        """
        step = self.steps[v.step] if v.step >= 0 else None
        src = node.input[0] if node.input[0] in self.values else node.input[1]
        if step is None or step.op not in ("Conv", "Gemm", "MatMul", "BatchNormalization") or \
                self.consumers.get(src, 0) != 1:
            self.refuse(node, "applies a constant; cnnlab folds a constant only into the Conv, Gemm, MatMul or "
                              "BatchNormalization right before it")
        per_channel = self.per_channel(node, v, c)
        params = step.params
        if node.op_type == "Mul":
            for key in ("kernel", "gamma", "bias", "beta"):
                if key in params:
                    params[key] = params[key] * per_channel
        else:
            key = "beta" if "beta" in params else "bias"
            if key not in params:
                step.layer.use_bias = True
                params[key] = np.zeros(step.shape[-1], np.float32)
            params[key] = params[key] + per_channel
        self.same(node, v)

    def per_channel(self, node, v, c):
        """Constant ``c`` as one number per cnnlab channel (or feature) of ``v``; refused if it varies otherwise."""
        shape = [1] + _onnx_shape(v)[1:]
        try:
            full = np.broadcast_to(c, shape) if c.ndim <= len(shape) else None
        except ValueError:
            full = None
        index = (0, slice(None)) + (0,) * (len(shape) - 2)
        if full is None or not (full == full[index].reshape([1, -1] + [1] * (len(shape) - 2))).all():
            self.refuse(node, f"applies a constant of shape {c.shape} that is not one number per channel")
        values = np.asarray(full[index], np.float32)
        if v.perm is not None:
            ordered = np.empty_like(values)
            ordered[v.perm] = values
            values = ordered
        return values

    def activation(self, node, layer):
        v = self.value(node, node.input[0])
        self.layer_on(node, v, layer)

    def op_Relu(self, node):
        self.activation(node, L.ReLU())

    def op_LeakyRelu(self, node):
        self.activation(node, L.LeakyReLU(_attr(node, "alpha", 0.01)))

    def op_Sigmoid(self, node):
        self.activation(node, L.Sigmoid())

    def op_Tanh(self, node):
        self.activation(node, L.Tanh())

    def op_Clip(self, node):
        lo, hi = _attr(node, "min", None), _attr(node, "max", None)
        if len(node.input) > 1:
            lo = self.const(node, 1, required=False)
            hi = self.const(node, 2, required=False) if len(node.input) > 2 else None
        if any(b is not None and np.size(b) != 1 for b in (lo, hi)):
            self.refuse(node, f"has bounds of shapes {np.shape(lo)} and {np.shape(hi)}; Clip takes scalar bounds")
        lo = None if lo is None else float(np.asarray(lo).reshape(-1)[0])
        hi = None if hi is None else float(np.asarray(hi).reshape(-1)[0])
        if lo != 0 or (hi is not None and not (np.isfinite(hi) and hi > 0)):
            self.refuse(node, f"clips to [{lo}, {hi}]; cnnlab imports Clip to [0, max] (ReLU6 and the like)")
        self.activation(node, L.ReLU() if hi is None or hi == np.inf else L.ClippedReLU(hi))

    def op_LRN(self, node):
        v = self.value(node, node.input[0], ("nchw",))
        self.layer_on(node, v, L.LocalResponseNorm(_attr(node, "size", 0), _attr(node, "alpha", 1e-4),
                                                   _attr(node, "beta", 0.75), _attr(node, "bias", 1.0)))

    def op_BatchNormalization(self, node):
        v = self.value(node, node.input[0])
        self.only_output(node)
        if _attr(node, "training_mode", 0):
            self.refuse(node, "is in training mode; export the model in inference (eval) mode")
        gamma, beta, mean, var = (np.asarray(self.const(node, i), np.float32) for i in range(1, 5))
        layer = L.BatchNorm(momentum=min(max(1 - _attr(node, "momentum", 0.9), 0.0), 1.0),
                            eps=_attr(node, "epsilon", 1e-5))
        params, buffers = {"gamma": gamma, "beta": beta}, {"running_mean": mean, "running_var": var}
        if v.perm is not None:                        # per-feature statistics follow cnnlab's feature order
            for d in (params, buffers):
                for k, a in d.items():
                    d[k] = np.empty_like(a)
                    d[k][v.perm] = a
        self.layer_on(node, v, layer, params, buffers)

    # ---- layout and shape ------------------------------------------------------
    def op_Transpose(self, node):
        v = self.value(node, node.input[0], ("nchw", "nhwc", "grouped"))
        perm = _perm(node)
        if v.layout == "grouped" and perm == [0, 2, 1, 3, 4]:
            return self.same(node, v, layout="shuffled")
        if v.layout == "nhwc" and perm == [0, 3, 1, 2]:
            return self.same(node, v, layout="nchw")
        if v.layout == "nchw" and perm == [0, 2, 3, 1]:
            return self.same(node, v, layout="nhwc")
        self.refuse(node, f"permutes axes {perm} of {_describe(v)}; cnnlab imports only the NCHW/NHWC layout changes")

    def flatten(self, node, v):
        if v.layout == "flat":
            return self.same(node, v)
        if v.layout == "pooled":
            return self.same(node, v, layout="flat")
        layer = L.Flatten()
        h, w, c = v.shape
        perm = None
        if v.layout == "nchw" and c > 1 and h * w > 1:
            perm = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).ravel()   # ONNX feature i = (c, h, w)
        shape = layer.compute_output_shape(v.shape)
        step = self.add_step(node, layer, [v.step], shape)
        self.values[node.output[0]] = _Value(step, "flat", shape, perm)

    def op_Flatten(self, node):
        v = self.value(node, node.input[0])
        if _attr(node, "axis", 1) != 1:
            self.refuse(node, f"flattens from axis {_attr(node, 'axis', 1)}; cnnlab flattens everything but the batch")
        self.flatten(node, v)

    def op_Reshape(self, node):
        v = self.value(node, node.input[0], ("nchw", "nhwc", "pooled", "flat", "shuffled"))
        target = [int(d) for d in np.asarray(self.const(node, 1) if len(node.input) > 1 else
                                             _attr(node, "shape", [])).ravel()]
        size = int(np.prod(v.shape))
        first_ok = len(target) >= 2 and target[0] in (BATCH, 0, -1, self.batch)
        if v.layout != "shuffled" and first_ok and len(target) == 2 and \
                (target[1] == size or (target[1] == -1 and target[0] != -1)):
            return self.flatten(node, v)
        wanted = _reshaped(_onnx_shape(v), target) if first_ok else None
        h, w, c = v.shape if len(v.shape) == 3 else (0, 0, 0)
        if v.layout == "nchw" and wanted and len(wanted) == 5 and wanted[3:] == [h, w]:
            return self.same(node, v, layout="grouped", groups=wanted[1])       # a channel shuffle begins
        if v.layout == "shuffled" and wanted == [BATCH, c, h, w]:
            return self.layer_on(node, _Value(v.step, "nchw", v.shape), L.ChannelShuffle(v.groups))
        self.refuse(node, f"reshapes {_describe(v)} to {[('N' if d == BATCH else d) for d in target]}; cnnlab "
                          f"imports the reshape to (N, features) before a Gemm/MatMul and the channel shuffle "
                          f"(Reshape to (N, g, C/g, H, W), Transpose [0, 2, 1, 3, 4], Reshape back)")

    def op_Concat(self, node):
        values = [self.value(node, name) for name in node.input]
        axis = _attr(node, "axis", None)
        rank = len(_onnx_shape(values[0]))
        if axis is None or axis % rank != (1 if values[0].layout in ("nchw", "pooled", "flat") else rank - 1) \
                or (values[0].layout == "flat" and values[0].perm is not None):
            self.refuse(node, f"joins along axis {axis} of {_describe(values[0])}; cnnlab concatenates channels "
                              f"(or the features of flat tensors)")
        if len(values) == 1:
            return self.same(node, values[0])
        self.join(node, L.Concatenate(), values)

    def op_Identity(self, node):
        self.same(node, self.value(node, node.input[0]))

    def op_Dropout(self, node):
        self.only_output(node)
        self.same(node, self.value(node, node.input[0]))

    def final_softmax(self, node):
        v = self.value(node, node.input[0], ("flat", "pooled"))
        axis = _attr(node, "axis", 1 if _opset(self.onnx_model) < 13 else -1)
        if node.output[0] not in [o.name for o in self.graph.output]:
            self.refuse(node, "is not the last operation; cnnlab imports a softmax only at the output")
        if axis not in ((1, -1) if v.layout == "flat" else (1, -3)):
            self.refuse(node, f"normalizes along axis {axis}; cnnlab's classes are axis 1")
        self.same(node, v)
        self.final = node.output[0]

    op_Softmax = op_LogSoftmax = final_softmax   # dropped: predict applies softmax (softmax(log_softmax(z)) = softmax(z))


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
def _attr(node, name, default):
    from onnx import helper
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return list(value) if isinstance(value, (list, tuple)) or type(value).__name__.endswith("Container") \
                else value
    return default


def _evaluate(node, feeds, opsets):
    """The outputs of ``node`` on the constant ``feeds``, as the file's opset defines the operator.

    A one-node model carrying the file's ``opset_import``, so old forms (``Unsqueeze``/``Squeeze``
    with an ``axes`` attribute before opset 13, ``Reshape``/``Pad`` before their inputs became
    tensors...) are evaluated by their own definition, not the newest one.
    """
    from onnx import helper
    from onnx.reference import ReferenceEvaluator
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), None)
              for name, v in feeds.items()]
    outputs = [helper.make_tensor_value_info(name, 0, None) for name in node.output if name]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    model = helper.make_model(graph, opset_imports=list(opsets))
    return ReferenceEvaluator(model).run(None, {k: np.asarray(v) for k, v in feeds.items()})


def _perm(node):
    return [int(p) for p in _attr(node, "perm", [])]


def _opset(model):
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _onnx_shape(v):
    """The ONNX shape of a value, the batch as ``BATCH``."""
    if v.layout == "nchw":
        h, w, c = v.shape
        return [BATCH, c, h, w]
    if v.layout == "pooled":
        return [BATCH, v.shape[0], 1, 1]
    if v.layout in ("grouped", "shuffled"):
        h, w, c = v.shape
        g = v.groups if v.layout == "grouped" else c // v.groups
        return [BATCH, g, c // g, h, w]
    return [BATCH, *v.shape]


def _reshaped(shape, target):
    """ONNX ``Reshape`` of ``shape`` (batch ``BATCH``) to ``target`` (``0`` copies, ``-1`` infers); None if invalid."""
    out = [BATCH] + [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(target) if i]
    known = int(np.prod([d for d in out[1:] if d != -1]))
    rest = int(np.prod(shape[1:]))
    if out.count(-1) > 1 or known <= 0 or rest % known or (-1 not in out and known != rest):
        return None
    return [rest // known if d == -1 else d for d in out]


def _describe(v):
    return {"nchw": "an NCHW image", "nhwc": "an NHWC image", "pooled": "globally pooled (N, C, 1, 1) features",
            "flat": "flat (N, D) features", "grouped": "channels split into groups",
            "shuffled": "channel groups transposed"}[v.layout] + f" {tuple(_onnx_shape(v)[1:])}"


def _type_name(elem_type):
    from onnx import TensorProto
    return TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else str(elem_type)


def _dims_text(dims):
    return "(" + ", ".join(d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?") for d in dims) + ")"


# ---------------------------------------------------------------------------
# Reading the file and assembling the model
# ---------------------------------------------------------------------------
def read_model(path):
    """The checked ``onnx.ModelProto`` of ``path``, external data included; damage raises ``CnnlabFileError``."""
    onnx = require("onnx", extra="onnx", feature="ONNX import")
    path = Path(path)
    if not path.is_file():
        raise CnnlabFileError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf and onnx raise several kinds for damaged files
        what = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "should be stored in" in what or "external" in what.lower():
            raise CnnlabFileError(f"ONNX file {path}: its external weights cannot be read: {what}") from None
        raise CnnlabFileError(f"{path} is not a readable ONNX model (damaged or truncated?): {what}") from None
    if not model.ir_version or not model.graph.node:
        raise CnnlabFileError(f"{path} is not an ONNX model (no graph in it)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        raise CnnlabFileError(f"{path} is not a valid ONNX model: {str(e).splitlines()[0]}") from None
    return model


def class_names_of(model):
    """The class names stored in the file's metadata (``class_names``, a JSON list), or None."""
    for p in model.metadata_props:
        if p.key == "class_names":
            try:
                names = json.loads(p.value)
            except json.JSONDecodeError:
                return None
            return [str(n) for n in names] if isinstance(names, list) else None
    return None


def load(path, name=None):
    """A cnnlab model (taking ``(N, H, W, C)``) from the ONNX file ``path``; see the module docstring."""
    return load_with_class_names(path, name)[0]


def load_with_class_names(path, name=None):
    """``(model, class_names)``: the model and the class names in the file's metadata (or None)."""
    proto = read_model(path)
    imp = _Importer(proto, f"ONNX file {path}")
    with np.errstate(all="ignore"):
        input_shape, last = imp.run()
    model = _assemble(imp.steps, last, input_shape, name or Path(path).stem, f"ONNX file {path}")
    names = class_names_of(proto)
    return model, names if names is not None and len(names) == model.num_classes else None


def _assemble(steps, last, input_shape, name, source):
    """A ``Sequential`` when the steps the output needs form a chain, else a graph ``Model``; ONNX weights loaded."""
    from ..graph import Input
    from ..model import Model, Sequential
    needed, todo = set(), [last]
    while todo:                                   # the steps the output depends on (others are dead ends)
        k = todo.pop()
        if k >= 0 and k not in needed:
            needed.add(k)
            todo += steps[k].inputs
    order = sorted(needed)                        # ONNX nodes come in topological order, and so do the steps
    if all(steps[k].inputs == [prev] for prev, k in zip([-1] + order, order)):
        model = Sequential([steps[k].layer for k in order], input_shape=input_shape, name=name)
    else:
        tensors = {-1: Input(input_shape)}
        for k in order:
            inputs = [tensors[i] for i in steps[k].inputs]
            tensors[k] = steps[k].layer(inputs if steps[k].layer.joins else inputs[0])
        model = Model(tensors[-1], tensors[last], name=name)
    for k in order:
        _load_weights(steps[k].layer, steps[k], source)
    return model


def _load_weights(layer, step, source):
    for store, values in ((layer.params, step.params), (layer.buffers, step.buffers)):
        for k, v in values.items():
            if store[k].shape != v.shape:
                raise CnnlabFileError(f"{source}: {layer.label} expects {k} of shape {store[k].shape}, the file "
                                      f"holds {v.shape}")
            if not np.isfinite(v).all():
                raise CnnlabFileError(f"{source}: the {k} of {layer.label} contains NaN or infinite values")
            store[k][...] = v
