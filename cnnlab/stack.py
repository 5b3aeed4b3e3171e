"""Running the layers of a model: forward, backward, per-layer captures and fused steps.

Every pass through a model goes through :class:`Stack`: training in this process
and in every worker of ``cnnlab.parallel``, inference, input gradients (saliency,
Grad-CAM) and the per-layer captures of the explain tools.

A stack is a directed acyclic graph of layers. Tensors are numbered: tensor 0 is
the model's input and tensor ``i + 1`` is the output of layer ``i``;
``inbound[i]`` lists the tensors layer ``i`` reads (one, or several for a layer
that joins branches such as ``Add``). The layers are listed so that each comes
after the layers it reads; a ``Sequential`` model is the chain
``inbound[i] = (i,)``.

Forward runs the layers in that order, dropping each tensor after its last
reader. Backward runs them in reverse: the gradient of a tensor read by several
layers is the sum of what each reader sends back,
``dL/dt = sum over readers r of (dL/d out_r)(d out_r/dt)``.

Fused steps: a ``ReLU`` whose output only a ``MaxPool2D`` reads runs as one
:class:`ReLUMaxPool` step (pool first, then ReLU: exactly the same numbers, a
quarter of the work for the ReLU), unless the ReLU's output is captured. With the
compiled loops (``cnnlab.layers.compiled``, numba), a ``BatchNorm`` whose output
only a ``ReLU`` reads runs with it as one :class:`BatchNormReLU` step, and with a
``MaxPool2D`` after that whose windows do not overlap, all three as one
:class:`BatchNormReLUMaxPool` step. Inference-only passes
(:meth:`Stack.infer`, behind ``predict`` and ``evaluate``) also fold a
``BatchNorm`` into the ``Conv2D`` or ``Dense`` before it, with the ``ReLU`` after
it (:class:`FoldedBatchNorm`): the normalization then costs nothing; a direct
convolution also takes the max pool after them into its loop, a Winograd one a 2x2 pool
into its output tiles. The end of a
residual block, ``BatchNorm`` -> ``Add`` -> ``ReLU`` where the ``Add`` joins the
BatchNorm's output with one other branch, runs as one :class:`BatchNormAddReLU`
step (compiled loops or not), which reads both tensors: a fused step may read the
other inputs of a join in its chain (``_chain``'s side inputs).
"""
from __future__ import annotations

import numpy as np

from .layers import compiled
from .layers.activations import ReLU
from .layers.conv import Conv2D
from .layers.core import Dense
from .layers.merge import Add
from .layers.norm import BatchNorm
from .layers.pool import MaxPool2D


class ReLUMaxPool:
    """A ``ReLU`` followed by a ``MaxPool2D``, run in the cheaper order: pool first, then ReLU.

    ReLU and max commute exactly: ``max(relu(a), relu(b)) = relu(max(a, b))``. So do
    their gradients: both orders send a window's gradient to its first maximum when
    that maximum is positive, and nowhere when it is not. Pooling first leaves the
    ReLU a quarter of the numbers (2x2 windows). The two layers keep their own
    caches; the ReLU's cache then holds the pooled values.
    """

    def __init__(self, relu, pool):
        self.relu, self.pool = relu, pool

    def forward(self, x, training=False):
        return self.relu.forward(self.pool.forward(x, training), training)

    def backward(self, dy):
        return self.pool.backward(self.relu.backward(dy))


class BatchNormReLU:
    """A ``BatchNorm`` followed by a ``ReLU``, run as one step by the compiled loops (``BatchNorm.forward_relu``).

    The ReLU keeps no cache of its own: the step's backward pass is the pair's.
    """

    def __init__(self, norm, relu):
        self.norm, self.relu = norm, relu

    def forward(self, x, training=False):
        return self.norm.forward_relu(x, training)

    def backward(self, dy):
        return self.norm.backward_relu(dy)


class BatchNormReLUMaxPool:
    """``BatchNorm`` -> ``ReLU`` -> ``MaxPool2D`` as one step of the compiled loops (``BatchNorm.forward_relu_pool``),
    for pools whose windows do not overlap: only the pooled output is written, and the backward pass sends
    each window's gradient through its winner alone. The ReLU and the pool keep no cache of their own.
    """

    def __init__(self, norm, relu, pool):
        self.norm, self.relu, self.pool = norm, relu, pool

    @staticmethod
    def accepts(norm, relu, pool):
        return all(s >= k for s, k in zip(pool.strides, pool.pool_size)) and pool.pool_size[0] * pool.pool_size[1] <= 255

    def forward(self, x, training=False):
        return self.norm.forward_relu_pool(x, self.pool, training)

    def backward(self, dy):
        return self.norm.backward_relu_pool(dy)


class BatchNormAddReLU:
    """``BatchNorm`` -> ``Add`` -> ``ReLU``, the end of a residual block ``relu(bn(x) + r)``, as one step
    (``BatchNorm.forward_add_relu``); it reads two tensors, the BatchNorm's input ``x`` and the branch ``r``.

    Backward: ``g = dL/dy [y > 0]`` is the branch's gradient as it is (``Add`` passes it on one for one) and
    BatchNorm's output gradient. With the compiled loops: one pass forward instead of three, two backward
    instead of three, and neither the sum nor the ReLU's output is stored apart from the step's output.
    """

    def __init__(self, norm, add, relu):
        self.norm, self.add, self.relu = norm, add, relu

    @staticmethod
    def accepts(norm, add, relu):
        return len(add.input_shape) == 2

    def forward(self, xs, training=False):
        return self.norm.forward_add_relu(xs[0], xs[1], training)

    def backward(self, dy):
        return self.norm.backward_add_relu(dy)


class FoldedBatchNorm:
    """A ``Conv2D`` or ``Dense`` layer, the ``BatchNorm`` after it and optionally a ``ReLU``, at inference;
    and a ``MaxPool2D`` after those where the convolution pools as it writes (``Conv2D.pools_while_writing``).

    BatchNorm at inference is a fixed map per channel, ``y * scale + shift``
    (``BatchNorm.folded``), so it folds into the layer before it: kernel times
    ``scale``, bias times ``scale`` plus ``shift``; the ReLU is applied as the output is
    written. The same function up to rounding, with no pass over memory of its own.
    With a pool, only the pooled output is written. Inference-only: nothing is kept
    for a backward pass.
    """

    def __init__(self, layer, norm, relu=None, pool=None):
        self.layer, self.norm, self.relu, self.pool = layer, norm, relu, pool

    @staticmethod
    def accepts(layer, norm, relu=None, pool=None):
        return pool is None or layer.pools_while_writing(pool)

    def forward(self, x, training=False):
        if training:
            raise ValueError("FoldedBatchNorm runs inference only (training needs the batch statistics)")
        pool = {} if self.pool is None else {"pool": self.pool}                  # only a Conv2D takes one
        return self.layer.forward_folded(x, *self.norm.folded(), relu=self.relu is not None, **pool)

    def backward(self, dy):
        raise ValueError("an inference-only pass (Stack.infer) has no backward pass; use Stack.forward")


# Fused steps, by priority: (layer types along a chain, step, when it applies). Each claims the chains it
# matches, except where a fusion listed before it has claimed one of their layers. At inference a
# convolution that pools as it writes takes its BatchNorm, ReLU and pool (its full output never goes to
# memory); otherwise a BatchNorm that BatchNorm -> ReLU -> MaxPool runs in one pass is not folded into the
# layer before it (folding saves nothing there: the step reads that layer's output once and writes only the
# pooled result).
FUSIONS = [
    ((Conv2D, BatchNorm, ReLU, MaxPool2D), FoldedBatchNorm, "inference"),
    ((BatchNorm, ReLU, MaxPool2D), BatchNormReLUMaxPool, "compiled"),
    (((Conv2D, Dense), BatchNorm, ReLU), FoldedBatchNorm, "inference"),
    (((Conv2D, Dense), BatchNorm), FoldedBatchNorm, "inference"),
    ((BatchNorm, ReLU), BatchNormReLU, "compiled"),
    ((BatchNorm, Add, ReLU), BatchNormAddReLU, "always"),
    ((ReLU, MaxPool2D), ReLUMaxPool, "always"),
]


def _chain(stack, start, types, keep):
    """Layers ``start, ...`` matching ``types`` (exact types; a tuple allows several), each the only reader of the
    one before, none of whose outputs but the last is kept, and the other tensors the chain's joins read (an
    ``Add`` reads the chain's tensor and a branch): ``(group, side inputs)``, or None."""
    group, side = [start], []
    for k, want in enumerate(types):
        layer = stack.layers[group[-1]]
        if type(layer) not in (want if isinstance(want, tuple) else (want,)):
            return None
        if k == len(types) - 1:
            return group, side
        t = group[-1] + 1                                # this layer's output tensor
        readers = stack.readers[t]
        if len(readers) != 1 or t in keep:
            return None
        srcs = stack.inbound[readers[0]]
        if srcs != (t,) and not (stack.layers[readers[0]].joins and srcs.count(t) == 1):
            return None
        side += [s for s in srcs if s != t]
        group.append(readers[0])
    return None


class _Plan:
    """The steps one forward pass runs, for one set of kept tensors (and inference-only or not).

    ``steps[k] = (runner, sources, destination, joins)``: ``runner`` is a layer or a
    fused step; ``frees[k]`` lists the tensors nobody reads after step ``k``.
    """

    def __init__(self, stack: "Stack", keep: frozenset, inference: bool = False):
        layers, inbound = stack.layers, stack.inbound
        applies = {"always": True, "compiled": compiled.enabled(), "inference": inference}
        groups, member = {}, set()                       # last layer of a fused group -> (its layers, side, step)
        for types, fused, when in FUSIONS:
            if not applies[when]:
                continue
            for i in range(len(layers)):
                found = _chain(stack, i, types, keep)
                if (found and member.isdisjoint(found[0])
                        and getattr(fused, "accepts", lambda *_: True)(*(layers[g] for g in found[0]))):
                    groups[found[0][-1]] = (*found, fused)
                    member.update(found[0])
        self.steps, self.produced = [], {}
        for i, layer in enumerate(layers):
            if i in groups:                              # a fused group runs where its last layer would
                group, side, fused = groups[i]           # with side inputs, it reads a list: its first's, then those
                self.steps.append((fused(*(layers[g] for g in group)), inbound[group[0]] + tuple(side), i + 1,
                                   bool(side)))
            elif i in member:
                continue
            else:
                self.steps.append((layer, inbound[i], i + 1, layer.joins))
            self.produced[i + 1] = len(self.steps) - 1
        last_read = {}
        for k, (_, srcs, _, _) in enumerate(self.steps):
            for s in srcs:
                last_read[s] = k
        kept = set(keep) | {stack.output}
        self.frees = [[] for _ in self.steps]
        for t, k in last_read.items():
            if t not in kept:
                self.frees[k].append(t)


class Stack:
    """Layers wired as a graph, with the one forward and backward every model and shard uses.

    ``layers``: built layers in an order where each follows the layers it reads;
    ``inbound[i]``: the tensors layer ``i`` reads (0 = the model input); ``output``:
    the tensor the model returns (default: the last layer's).
    """

    def __init__(self, layers, inbound=None, output=None):
        self.layers = list(layers)
        n = len(self.layers)
        self.inbound = [(i,) for i in range(n)] if inbound is None else [tuple(int(t) for t in s) for s in inbound]
        self.output = n if output is None else int(output)
        self.index = {layer.name: i for i, layer in enumerate(self.layers)}
        self.readers: list[list[int]] = [[] for _ in range(n + 1)]
        for i, srcs in enumerate(self.inbound):
            for s in srcs:
                self.readers[s].append(i)
        self._plans: dict[frozenset, _Plan] = {}
        self._last: _Plan | None = None                  # the plan of the latest forward pass (for backward)

    def with_layers(self, layers) -> "Stack":
        """The same wiring over other layers (replicas for a shard)."""
        return Stack(layers, self.inbound, self.output)

    def tensor(self, name) -> int:
        """The tensor a layer name writes."""
        if name not in self.index:
            raise ValueError(f"no layer named {name!r}; the layers are {list(self.index)}")
        return self.index[name] + 1

    def mark_input_gradients(self):
        """Let a layer skip its input gradient where nothing trainable lies upstream of it (it would be thrown away)."""
        upstream = [False] * (len(self.layers) + 1)      # per tensor: a layer with parameters produced or precedes it
        for i, layer in enumerate(self.layers):
            layer.needs_input_grad = any(upstream[s] for s in self.inbound[i])
            upstream[i + 1] = layer.needs_input_grad or bool(layer.params)

    def plan(self, keep: frozenset = frozenset(), inference: bool = False) -> _Plan:
        """The steps a forward pass that keeps the tensors ``keep`` runs (made once, then reused);
        ``inference``: the plan of an inference-only pass, where BatchNorm folds into the layer before it."""
        plan = self._plans.get((keep, inference))
        if plan is None:
            plan = self._plans[(keep, inference)] = _Plan(self, keep, inference)
        return plan

    def forward(self, x, training=False, capture=None):
        """The output for input ``x``; with ``capture``, also ``{layer name: that layer's output}``.

        ``capture`` is ``True`` (every layer) or an iterable of layer names.
        """
        if capture is None:
            names = ()
        elif capture is True:
            names = list(self.index)
        elif isinstance(capture, str):
            raise ValueError(f"capture must be True or a list of layer names, received the string {capture!r}")
        else:
            names = list(capture)
        keep = frozenset(self.tensor(name) for name in names)
        plan = self._last = self.plan(keep)
        values = self._run(plan, x, training)
        out = values[self.output]
        if capture is None:
            return out
        return out, {name: values[self.tensor(name)] for name in names}

    # A pass writes a step's output for every image of the batch before the next step reads it. At
    # inference the images are independent, so a large batch runs in slices whose largest tensor (of those
    # the inference plan writes) takes at most INFER_SLICE_BYTES: ResNet-20's first stage at 256 images is
    # 16.8 MB a tensor, more than the caches hold beside the tensors kept for the residual branches, and
    # every step would stream it from memory. Slices much smaller than this cost more than they save (the
    # loops' rows get short); the measurements are in benchmarks/README.md ("Residual networks on an AVX2 CPU").
    INFER_SLICE_BYTES = 8 << 20
    INFER_SLICE_MIN = 8                                  # images: the batch is the loops' innermost axis

    def infer_slice(self, x) -> int:
        """How many images of ``x`` one slice of an inference pass takes (all of them when they fit)."""
        plan = self.plan(frozenset(), inference=True)
        sizes = [int(np.prod(self.layers[dst - 1].output_shape)) for _, _, dst, _ in plan.steps if dst > 0]
        fit = self.INFER_SLICE_BYTES // max(1, max(sizes + [int(np.prod(x.shape[1:]))]) * x.dtype.itemsize)
        return max(self.INFER_SLICE_MIN, fit // self.INFER_SLICE_MIN * self.INFER_SLICE_MIN)

    def infer(self, x):
        """The output for input ``x`` in inference mode, when no backward pass follows (``predict``, ``evaluate``).

        BatchNorm is folded into the convolution or dense layer before it (``FoldedBatchNorm``): the same
        function as ``forward(x)`` up to rounding, one pass over memory less per BatchNorm. A large batch runs
        in slices of :meth:`infer_slice` images.
        """
        self._last = None                                # nothing to backpropagate through
        plan, step = self.plan(frozenset(), inference=True), self.infer_slice(x)
        if len(x) <= step:
            return self._run(plan, x, False)[self.output]
        return np.concatenate([self._run(plan, x[i:i + step], False)[self.output] for i in range(0, len(x), step)])

    @staticmethod
    def _run(plan, x, training):
        """Run ``plan``'s steps on ``x``; return the tensors still held (the output and the kept ones)."""
        values = {0: x}
        for (runner, srcs, dst, joins), frees in zip(plan.steps, plan.frees):
            values[dst] = runner.forward([values[s] for s in srcs] if joins else values[srcs[0]], training)
            for t in frees:
                del values[t]
        return values

    def backward(self, dy, stop_at=None):
        """Backpropagate ``dL/d(output)`` through the latest forward pass.

        Returns ``dL/d(model input)`` (``None`` where the layers reading the input
        compute no input gradient) or, with ``stop_at`` a layer name, ``dL/d(output
        of that layer)``, running only the steps after it. Every layer passed fills
        its ``grads``.
        """
        plan = self._last
        if plan is None:
            raise ValueError("backward needs a forward pass first (Stack.forward: Stack.infer keeps nothing for it)")
        stop = 0 if stop_at is None else self.tensor(stop_at)
        if stop and stop not in plan.produced:
            raise ValueError(f"the latest forward pass ran layer {stop_at!r} fused with the next one; "
                             f"run forward(x, capture=[{stop_at!r}]) to keep its output")
        grads = {self.output: dy}
        missing = set()                                  # tensors some reader sent no gradient to
        for k in range(len(plan.steps) - 1, -1, -1):
            runner, srcs, dst, joins = plan.steps[k]
            if dst == stop:
                break
            g = grads.pop(dst, None)
            if g is None or dst in missing:
                continue
            d = runner.backward(g)
            for s, ds in zip(srcs, d if joins else (d,)):
                if ds is None:
                    missing.add(s)
                elif s in grads:
                    grads[s] = grads[s] + ds             # a tensor read twice: the gradients add up
                else:
                    grads[s] = ds
        return None if stop in missing else grads.get(stop)

    def input_gradient(self, x, dy_out, at=None):
        """``dL/dx`` (or ``dL/d(output of layer at)``) for the output gradient ``dy_out``.

        Every layer is made to pass its input gradient for the duration, then put back.
        """
        saved = [layer.needs_input_grad for layer in self.layers]
        for layer in self.layers:
            layer.needs_input_grad = True
        try:
            self.forward(x, training=False, capture=None if at is None else [at])
            return self.backward(dy_out, stop_at=at)
        finally:
            for layer, s in zip(self.layers, saved):
                layer.needs_input_grad = s


def train_step(stack: Stack, loss, x, y, weight=1.0):
    """Forward (training mode), loss and backward of one batch; returns ``(loss value, scores)``.

    ``weight`` scales the loss gradient: a shard's share of the batch (shard size / batch size).
    """
    h = stack.forward(x, training=True)
    value = loss.forward(h, y)
    stack.backward(loss.backward() * h.dtype.type(weight))
    return value, h
