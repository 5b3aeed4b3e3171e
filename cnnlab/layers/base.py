"""The layer contract every cnnlab layer follows.

A layer is a tiny object with two methods that mirror each other:

* ``forward(x, training)`` computes the output and caches what backward needs;
* ``backward(dy)`` takes the gradient of the loss with respect to the output,
  fills ``self.grads`` (same keys as ``self.params``) and returns the gradient
  with respect to the input.

Shapes are inferred: a layer is *built* from the shape of the first input it
sees (or by the model that holds it), so the user never types an input channel
count. ``input_shape`` and ``output_shape`` are per example, without the batch
axis. Images are channels last: ``(N, H, W, C)``.

For data parallelism a layer makes replicas (``replicate``) that compute shards
of a batch; each reports its gradients and, where its training pass measures
the batch (BatchNorm), its shard statistics (``shard_statistics``); the layer
combines them (``merge_replicas``).
"""
from __future__ import annotations

import copy

import numpy as np


class Layer:
    """Base class: holds ``params``, ``grads`` and ``buffers`` and the build logic.

    Subclasses implement ``build_params`` (create parameters for an input
    shape), ``compute_output_shape``, ``forward`` and ``backward``, and
    ``get_config`` (the constructor arguments, JSON-serializable).
    """

    def __init__(self, name: str | None = None):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}  # saved with the model, not trained (e.g. running stats)
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        self.dtype = np.dtype(np.float32)
        self.rng: np.random.Generator | None = None
        # The model clears this for layers that nothing trainable precedes:
        # their input gradient would be thrown away, so backward skips it.
        self.needs_input_grad = True

    # ---- building -------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.input_shape is not None

    def build(self, input_shape, rng: np.random.Generator | None = None, dtype=np.float32) -> tuple:
        """Create parameters for a per-example ``input_shape``; return the output shape."""
        input_shape = tuple(int(d) for d in input_shape)
        self.dtype = np.dtype(dtype)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.output_shape = tuple(self.compute_output_shape(input_shape))
        self.input_shape = input_shape
        self.build_params(input_shape)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        return self.output_shape

    def build_params(self, input_shape) -> None:
        """Create ``self.params`` (and ``self.buffers``); layers without weights keep the default."""

    def param_shapes(self, input_shape) -> dict:
        """``{name: shape}`` of the parameters and buffers ``build_params`` creates for ``input_shape``.

        Known before anything is allocated, so a model too large for memory is refused first
        (``cnnlab.resources``); layers with weights override it and build from it.
        """
        return {}

    def compute_output_shape(self, input_shape) -> tuple:
        return tuple(input_shape)

    def _prepare(self, x) -> np.ndarray:
        """Validate a batch, build the layer on first use, and return it in the layer's dtype."""
        x = np.asarray(x)
        if not self.built:
            if x.ndim < 2:
                raise ValueError(f"{self.label}: expected a batch with at least 2 axes (N, ...), received shape {x.shape}")
            self.build(x.shape[1:], dtype=x.dtype if x.dtype == np.float64 else np.float32)
        self.check_input_shape(x.shape)
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        return x

    # Image layers (conv, pooling) work on any spatial size: only the channels must match.
    any_spatial_size = False

    def require_image(self, input_shape) -> None:
        """Raise unless the per-example shape is an image ``(H, W, C)``."""
        if len(input_shape) != 3:
            raise ValueError(f"{self.label}: expects images (N, H, W, C); received per-example shape {tuple(input_shape)}")

    def check_input_shape(self, shape) -> None:
        """Same rank and per-example shape as at build time (only channels for image layers)."""
        expected = self.input_shape
        if self.any_spatial_size:
            if len(shape) != 4 or shape[3] != expected[2]:
                raise ValueError(f"{self.label}: expected input (N, H, W, {expected[2]}), received {tuple(shape)}")
            return
        if len(shape) != len(expected) + 1 or tuple(shape[1:]) != expected:
            raise ValueError(
                f"{self.label}: expected input of shape (N, {', '.join(map(str, expected))}), "
                f"received {tuple(shape)}"
            )

    # ---- the contract ---------------------------------------------------
    # A layer that joins branches (``Add``) reads a list of arrays and returns a list of input gradients.
    joins = False

    def forward(self, x, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def __call__(self, x, training: bool = False):
        """Run the layer on a batch; on symbolic tensors (``cnnlab.Input``), add it to a graph model."""
        from ..graph import connect, is_symbolic
        if is_symbolic(x):
            return connect(self, x)
        return self.forward(x, training)

    # ---- data parallelism -----------------------------------------------
    # A layer that draws random numbers in forward (Dropout) gets a fresh generator per step on each replica.
    stochastic = False

    def replicate(self) -> "Layer":
        """A copy sharing this layer's parameters and buffers, with its own gradients and caches.

        Replicas let several worker processes (``cnnlab.parallel``) or MPI ranks
        (``cnnlab.distributed``) run forward and backward on different shards of
        one batch at once; ``merge_replicas`` combines what they report.
        """
        r = copy.copy(self)
        r.grads = {k: np.zeros_like(v) for k, v in self.grads.items()}
        r.is_replica = True
        return r

    is_replica = False

    # ---- data parallelism: what a replica reports of its shard -----------------
    # A replica computes one shard of a batch (cnnlab.parallel across cores, cnnlab.distributed across
    # MPI ranks) and reports its gradients and, for layers whose training pass measures the batch
    # (BatchNorm's mean and variance), those shard statistics; merge_replicas combines them.
    def shard_statistics_shapes(self) -> dict:
        """``{name: shape}`` of the per-shard statistics a replica reports besides its gradients (BatchNorm's
        ``mean`` and ``var``, one per channel); empty for most layers."""
        return {}

    def shard_statistics(self) -> dict | None:
        """``{name: array}`` with the shapes of ``shard_statistics_shapes()``: the statistics of the shard the last
        training forward pass saw; ``None`` when there are none (most layers; no training pass yet)."""
        return None

    def folded_params(self, scale, shift):
        """``(kernel, bias)`` of this layer followed by ``y * scale + shift`` per output unit (the last axis of
        the kernel): the kernel scaled, the bias ``bias * scale + shift``. For ``forward_folded``."""
        kernel = (self.params["kernel"] * scale).astype(self.dtype)
        bias = shift if "bias" not in self.params else self.params["bias"] * scale + shift
        return kernel, np.asarray(bias, self.dtype)

    def merge_replicas(self, replicas) -> None:
        """Combine the replicas' results after a parallel step (each replica, or what stands for it, offers
        ``grads`` and ``shard_statistics()``): gradients add up."""
        for k, g in self.grads.items():
            np.copyto(g, replicas[0].grads[k])
            for r in replicas[1:]:
                g += r.grads[k]

    # ---- description ----------------------------------------------------
    def get_config(self) -> dict:
        return {}

    def macs(self) -> int:
        """Multiply-adds of one forward pass for one example (0 for cheap layers)."""
        return 0

    @property
    def num_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    @property
    def label(self) -> str:
        return f"{type(self).__name__}" + (f" '{self.name}'" if self.name else "")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
