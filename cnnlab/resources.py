"""Memory limits stated before allocating, not discovered by running out.

Before a model allocates its parameters, before a batch is run, and before a file
announcing its own size (an IDX header) is read, the bytes needed are compared
with the memory this process can get: :func:`available_memory`, the smallest of

* ``MemAvailable`` of ``/proc/meminfo`` (free memory plus what the kernel can reclaim),
* the cgroup limit minus the current use (a container's ``memory.max``),
* the physical memory (``os.sysconf``), where ``/proc`` is absent.

The estimates are lower bounds, so a refusal is certain to be right: a model is
refused only when it could not possibly fit, with both sizes in the message.

The cores this process may run on are counted here too (:func:`cpu_cores`), for
the data-parallel workers (``cnnlab.parallel``) and the ranks of an MPI job
(``cnnlab.distributed``).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np


def cpu_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the system has one (a container or
    ``taskset`` may allow fewer than the machine has), else ``os.cpu_count()``; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


class ResourceLimitError(ValueError):
    """What was asked for needs more memory than the machine has; the message gives both sizes."""


def _read_int(path) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int:
    """Bytes of memory this process can still get (see the module docstring)."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        candidates.append(max(0, limit - used))
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 1 << 62                             # unknown: no limit can be stated
    return min(candidates)


def size_text(nbytes: float) -> str:
    """``1.5 GB``-style text (powers of 1000) for a byte count."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{int(nbytes)} bytes"


def require(nbytes: int, what: str) -> None:
    """Raise :class:`ResourceLimitError` when ``nbytes`` exceed the memory available; ``what`` says for what."""
    free = available_memory()
    if nbytes > free:
        raise ResourceLimitError(f"{what} need {size_text(nbytes)} ({nbytes:,} bytes), more than the "
                                 f"{size_text(free)} of memory available")


def parameter_bytes(layers_and_inputs, dtype=np.float32) -> tuple[int, int]:
    """``(parameters, bytes)`` of ``(layer, per-example input shape)`` pairs once built: parameters and gradients.

    Counted from each layer's ``param_shapes`` before anything is allocated.
    """
    count = sum(math.prod(s) for layer, shape in layers_and_inputs for s in layer.param_shapes(shape).values())
    return count, 2 * count * np.dtype(dtype).itemsize


def activation_bytes(model, batch_size: int, training: bool) -> int:
    """A lower bound on the bytes one batch needs through a built model.

    Inference holds at least the input and the largest layer output at once; training keeps every
    layer's output for backward and makes a gradient as large (the convolutions' im2col buffers come on top).
    """
    first, outputs = math.prod(model.input_shape), [math.prod(layer.output_shape) for layer in model.layers]
    itemsize = np.dtype(model.layers[0].dtype).itemsize
    per_example = 2 * (first + sum(outputs)) if training else first + max(outputs)
    return int(batch_size) * per_example * itemsize


def check_batch(model, batch_size: int, training: bool) -> None:
    """Refuse a batch size whose activations alone would not fit in memory."""
    nbytes = activation_bytes(model, batch_size, training)
    require(nbytes, f"{model.name}: batches of {batch_size} for {'training' if training else 'inference'} "
                    f"(activations of {model.input_shape} inputs through {len(model.layers)} layers)")
