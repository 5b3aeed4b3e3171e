"""Describing a graph model by calling layers on symbolic tensors, as in Keras's functional API.

    inputs = cnnlab.Input((32, 32, 3))
    x = Conv2D(16, 3, padding="same")(inputs)
    y = Add()([x, inputs_or_another_branch])
    model = cnnlab.Model(inputs, y)

A symbolic tensor holds no numbers: only its per-example shape, the layer that
produces it and the tensors that layer reads. Calling a layer on one infers the
output shape at once (errors surface where the graph is written); the model
later builds the layers with its own random generator, in the order they were
called, which is an order where every layer follows the layers it reads.
"""
from __future__ import annotations

import itertools

import numpy as np

from .checks import is_int

_calls = itertools.count()                  # call order: a topological order of any graph written this way


class SymbolicTensor:
    """An edge of a graph model: ``shape`` (per example), ``layer`` (None for the input), ``inbound``."""

    def __init__(self, shape, layer=None, inbound=(), name=None):
        self.shape = tuple(shape)
        self.layer = layer
        self.inbound = tuple(inbound)
        self.name = name
        self.order = next(_calls)

    def __repr__(self):
        what = f"output of {self.layer.label}" if self.layer is not None else f"input {self.name!r}"
        return f"<SymbolicTensor shape=(None, {', '.join(map(str, self.shape))}) {what}>"


def Input(shape, name: str = "input") -> SymbolicTensor:  # noqa: N802 - named like a class, as in Keras
    """The input of a graph model: ``shape`` per example, e.g. ``(32, 32, 3)``."""
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if not isinstance(shape, (list, tuple)) or not shape or \
            any(not is_int(d) or d < 1 for d in shape):
        raise ValueError(f"Input: shape must be positive ints such as (32, 32, 3), received {shape!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"Input: name must be a non-empty string, received {name!r}")
    return SymbolicTensor(tuple(int(d) for d in shape), name=name)


def is_symbolic(x) -> bool:
    return isinstance(x, SymbolicTensor) or (isinstance(x, (list, tuple)) and bool(x)
                                             and all(isinstance(t, SymbolicTensor) for t in x))


def connect(layer, x) -> SymbolicTensor:
    """``layer(x)`` on symbolic tensors: record the edge and infer the output shape."""
    if getattr(layer, "_graph_output", None) is not None:
        raise ValueError(f"{layer.label} is already part of a graph; a layer is called once (create another one)")
    tensors = list(x) if isinstance(x, (list, tuple)) else [x]
    if layer.joins != isinstance(x, (list, tuple)):
        want = "a list of tensors" if layer.joins else "one tensor"
        raise ValueError(f"{layer.label} takes {want}, received {x!r}")
    shapes = [t.shape for t in tensors]
    out = SymbolicTensor(layer.compute_output_shape(shapes if layer.joins else shapes[0]), layer, tensors)
    layer._graph_output = out
    return out


def trace(inputs, outputs):
    """The layers between ``inputs`` and ``outputs``: ``(input tensor, [(layer, [inbound tensors])], output tensor)``.

    Only layers the output depends on are kept, in the order they were called.
    """
    inp = _single(inputs, "inputs")
    out = _single(outputs, "outputs")
    if inp.layer is not None:
        raise ValueError(f"Model: inputs must come from cnnlab.Input, received {inp!r}")
    seen, stack, found_input = {}, [out], False
    while stack:
        t = stack.pop()
        if t is inp:
            found_input = True
            continue
        if t.layer is None:
            raise ValueError(f"Model: the outputs depend on the input {t.name!r}, which is not the model's input")
        if id(t) in seen:
            continue
        seen[id(t)] = t
        stack.extend(t.inbound)
    if not found_input:
        raise ValueError("Model: the outputs do not depend on the inputs")
    nodes = sorted(seen.values(), key=lambda t: t.order)
    return inp, [(t.layer, list(t.inbound)) for t in nodes], out


def _single(x, what):
    if isinstance(x, (list, tuple)):
        if len(x) != 1:
            raise ValueError(f"Model: one tensor of {what} is supported, received {len(x)}")
        x = x[0]
    if not isinstance(x, SymbolicTensor):
        raise ValueError(f"Model: {what} must be symbolic tensors (from cnnlab.Input and layer calls), received {x!r}")
    return x
