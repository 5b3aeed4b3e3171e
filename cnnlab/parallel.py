"""Data parallelism over CPU cores: split each batch, compute the shards at once, add up the gradients.

Every core takes one shard of the batch. This process computes the first
shard itself; each other shard goes to a worker process, forked when training
or inference starts, that holds its own copy of the layers. While the workers
run, the model's weights live in a block of shared memory, so the optimizer's
in-place updates reach every worker without a copy; before each step the
batch is written into the same block. Each worker leaves its gradients, its
loss and its scores (and, for BatchNorm, its shard's statistics) there too,
and this process adds them up. The loss of the batch is the size-weighted mean of
the shards' losses, so the summed gradients are those of the whole batch.

Why processes and not threads: NumPy releases the interpreter lock inside its
loops, but a training step makes hundreds of short NumPy calls, and passing
the lock between threads at each one costs more than the parallel work gains
on small networks. Processes share only the memory block and two pipes each.

BatchNorm normalizes each shard with the shard's own statistics (ghost batch
normalization, as in multi-device training). Where ``os.fork`` is missing (or
unsafe: macOS), and by default in a Jupyter kernel (a process running threads: ``cnnlab.notebook`` says
why), everything runs in this process.
"""
from __future__ import annotations

import functools
import mmap
import os
import signal
import struct
import sys
import traceback
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from .resources import cpu_cores
from .stack import train_step

MIN_SHARD = 16                       # smaller shards cost more in coordination than they gain
_MSG = struct.Struct("<5q")           # command, shard start, shard stop, batch size, random seed
_EXIT, _TRAIN, _INFER = 0, 1, 2
# Ctrl-C, SIGTERM and SIGUSR1 are the main process's to handle (cnnlab.runs.stop); workers ignore them.
STOP_SIGNALS = {getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, n)}


def default_workers() -> int:
    """One shard per core, at most 4; 1 where worker processes cannot be forked safely (no ``fork``, macOS,
    a Jupyter kernel)."""
    from .notebook import in_notebook
    if not hasattr(os, "fork") or sys.platform == "darwin" or in_notebook():
        return 1
    return min(cpu_cores(), 4)


@functools.lru_cache(maxsize=256)                        # every step asks again for the same few sizes
def shard_slices(n: int, shards: int) -> tuple[slice, ...]:
    """Split ``range(n)`` into ``shards`` contiguous, nearly equal slices."""
    bounds = np.linspace(0, n, shards + 1).round().astype(int)
    return tuple(slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]))


def shard_count(n: int, shards: int) -> int:
    """Shards a batch of ``n`` is cut into when ``shards`` can compute it: none smaller than ``MIN_SHARD``."""
    return min(shards, max(1, n // MIN_SHARD))


def shard_seeds(model, count: int, augment=None) -> list[int] | None:
    """One seed per shard, drawn from the model's generator, when anything is random (augmentation,
    a stochastic layer such as Dropout); ``None`` (and nothing drawn) otherwise."""
    if augment is None and not any(layer.stochastic for layer in model.layers):
        return None
    return [int(model.rng.integers(2**62)) for _ in range(count)]


def train_shard(stack, loss, x, y, weight, seed=None, augment=None):
    """Forward, loss and backward of one shard; ``weight`` = shard size / batch size. Returns (loss, scores).

    With a ``seed``, the shard's randomness comes from it: ``augment(x, rng)`` and every
    random layer (each its own stream).
    """
    if seed is not None:
        if augment is not None:
            x = augment(x, np.random.default_rng(seed))
        for i, layer in enumerate(stack.layers):
            if layer.stochastic:
                layer.rng = np.random.default_rng([seed, i])
    return train_step(stack, loss, x, y, weight)


class _ShardResult:
    """A worker's replica as the main process sees it: gradients and shard statistics in shared memory
    (what ``Layer.merge_replicas`` reads of a replica: ``grads`` and ``shard_statistics()``)."""

    def __init__(self, grads, statistics):
        self.grads, self._statistics = grads, statistics

    def shard_statistics(self):
        return self._statistics


class DataParallel:
    """Training steps and inference of ``model`` over ``workers`` cores.

    ``with DataParallel(model) as dp: loss, scores = dp.train_step(x, y)`` fills
    the model's gradients for the batch; ``dp.forward(x)`` gives inference scores.
    ``augment(x_shard, rng)``, when given, transforms each shard of a training
    batch where the shard is computed, so augmentation runs in parallel too.
    Each shard draws its randomness (augmentation, dropout) from a generator
    seeded by the model's generator, so seeded training is reproducible.
    """

    def __init__(self, model, workers: int | None = None, max_batch: int = 256, augment=None):
        self.model = model
        self.augment = augment
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, received {workers!r}")
        if not hasattr(os, "fork"):
            self.workers = 1
        self.max_batch = int(max_batch)
        self.replicas = [layer.replicate() for layer in model.layers]   # this process's shard
        self.stack = model.stack.with_layers(self.replicas)
        self.loss = model.loss
        self._procs: list[tuple[int, int, int]] = []                      # (pid, command fd, reply fd)
        self._shared: list[tuple[dict, str, np.ndarray]] = []            # (params or buffers, key, shared array)
        self._limits = None
        self.stopping = 0                # the signal that stops training after this batch (0: none)

    # ---- the main process --------------------------------------------------------
    def train_step(self, x, y):
        """Forward, loss and backward of one batch; fills the model's gradients. Returns (loss, scores)."""
        n = len(x)
        slices = self._slices(n)
        seeds = shard_seeds(self.model, len(slices), self.augment)
        for w, sl in enumerate(slices[1:], start=1):
            self._send(w, _TRAIN, sl, n, seeds[w] if seeds else 0, x, y)
        loss, scores = train_shard(self.stack, self.loss, x[slices[0]], y[slices[0]], slices[0].stop / n,
                                   seeds[0] if seeds else None, self.augment)
        if len(slices) == 1:
            for layer, r in zip(self.model.layers, self.replicas):
                layer.merge_replicas([r])
            return loss, scores
        self._wait(len(slices) - 1)
        a = self.arena
        for layer, r, results in zip(self.model.layers, self.replicas, self._results):
            layer.merge_replicas([r] + results[:len(slices) - 1])
        loss = loss * (slices[0].stop / n) + sum(float(a[f"{w}/loss"][0]) * (sl.stop - sl.start) / n
                                                 for w, sl in enumerate(slices[1:], start=1))
        a["scores"][slices[0]] = scores
        return loss, a["scores"][:n].copy()

    def train_batch(self, x, y, stop=0):
        """``train_step``, returning (loss, number of correct predictions): what the training loop records.
        ``stop``: a signal number to stop training after this batch (0: none), kept as ``stopping``."""
        self.stopping = int(stop)
        loss, scores = self.train_step(x, y)
        return loss, int(np.count_nonzero(scores.argmax(axis=1) == y))

    def forward(self, x):
        """Inference-mode scores of one batch."""
        n = len(x)
        slices = self._slices(n)
        for w, sl in enumerate(slices[1:], start=1):
            self._send(w, _INFER, sl, n, 0, x, None)
        scores = self.stack.infer(x[slices[0]])
        if len(slices) == 1:
            return scores
        self._wait(len(slices) - 1)
        self.arena["scores"][slices[0]] = scores
        return self.arena["scores"][:n].copy()

    def _slices(self, n):
        shards = shard_count(n, len(self._procs) + 1)
        if n > self.max_batch:
            shards = 1
        return shard_slices(n, shards)

    def _send(self, w, cmd, sl, n, seed, x, y):
        a = self.arena
        if w == 1:                                        # once per step
            for d, k, shared in self._shared:
                if d[k] is not shared:                    # rebound since the workers started: share the new values
                    np.copyto(shared, d[k])
                    d[k] = shared
        a["x"][sl] = x[sl]                                # worker w's shard of the batch (this process keeps its own)
        if y is not None:
            a["y"][sl] = y[sl]
        os.write(self._procs[w - 1][1], _MSG.pack(cmd, sl.start, sl.stop, n, seed))

    def _wait(self, count):
        failed = False
        for _, _, rep_r in self._procs[:count]:
            reply = os.read(rep_r, 1)
            failed |= reply != b"k"
        if failed:
            raise RuntimeError("a worker process of cnnlab.parallel failed (its error is printed above); "
                               "run with workers=1 to see it in this process")

    # ---- starting and stopping workers ------------------------------------------------
    def __enter__(self):
        if self.workers > 1:
            self._start()
        return self

    def __exit__(self, *exc):
        self._stop()

    def _start(self):
        model = self.model
        shapes = {f"state/{k}": v.shape for k, v in model.state_dict().items()}
        shapes.update(x=(self.max_batch,) + model.input_shape, y=(self.max_batch,),
                      scores=(self.max_batch,) + model.output_shape)
        for w in range(1, self.workers):
            shapes[f"{w}/loss"] = (1,)
            for i, layer in enumerate(model.layers):
                shapes.update({f"{w}/{i}/grad/{k}": g.shape for k, g in layer.grads.items()})
                shapes.update({f"{w}/{i}/stat/{k}": s for k, s in layer.shard_statistics_shapes().items()})
        self.arena = a = _Arena(shapes, model.layers[0].dtype)
        # What each step merges, per layer: every worker's gradients and shard statistics (views of the block).
        self._results = [[_ShardResult({k: a[f"{w}/{i}/grad/{k}"] for k in layer.grads},
                                       {k: a[f"{w}/{i}/stat/{k}"] for k in layer.shard_statistics_shapes()} or None)
                          for w in range(1, self.workers)] for i, layer in enumerate(model.layers)]
        # Move the weights and buffers into the shared block: this process's optimizer updates them
        # in place, and the workers forked below read the same memory.
        for layer in model.layers:
            for d in (layer.params, layer.buffers):
                for k in d:
                    shared = self.arena[f"state/{layer.name}.{k}"]
                    np.copyto(shared, d[k])
                    d[k] = shared
                    self._shared.append((d, k, shared))
        self._limits = threadpool_limits(1, user_api="blas")    # every core already computes a shard
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+ warns on fork with BLAS threads alive
            for w in range(1, self.workers):
                cmd_r, cmd_w = os.pipe()
                rep_r, rep_w = os.pipe()
                # Hold the stop signals back across the fork: one landing in the child before it
                # ignores them would kill it half-started and leave this process waiting.
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
                pid = os.fork()
                if pid == 0:
                    for sig in STOP_SIGNALS:                           # this process finishes the batch and stops
                        signal.signal(sig, signal.SIG_IGN)
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                    self._worker(w, cmd_r, rep_w, cmd_w, rep_r)        # never returns
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                os.close(cmd_r)
                os.close(rep_w)
                self._procs.append((pid, cmd_w, rep_r))

    def _stop(self):
        for pid, cmd_w, rep_r in self._procs:
            try:
                os.write(cmd_w, _MSG.pack(_EXIT, 0, 0, 0, 0))
            except OSError:
                pass
            os.close(cmd_w)
            os.close(rep_r)
            os.waitpid(pid, 0)
        self._procs = []
        for d, k, shared in self._shared:                 # the weights leave the shared block
            d[k] = np.array(d[k])
        self._shared = []
        if self._limits is not None:
            self._limits.unregister()
            self._limits = None

    # ---- a worker process -----------------------------------------------------------
    def _worker(self, w, cmd_r, rep_w, cmd_w, rep_r):
        code = 0
        try:
            for _, other_cmd, other_rep in self._procs:             # pipes of the workers forked before this one
                os.close(other_cmd)
                os.close(other_rep)
            os.close(cmd_w)
            os.close(rep_r)
            self._serve(w, cmd_r, rep_w)
        except BrokenPipeError:                                     # the main process has gone: nothing to report
            pass
        except BaseException:                                       # noqa: BLE001
            code = 1
        finally:
            os._exit(code)

    def _serve(self, w, cmd_r, rep_w):
        a = self.arena
        for i, r in enumerate(self.replicas):             # gradients are computed straight into the shared block
            r.grads = {k: a[f"{w}/{i}/grad/{k}"] for k in r.grads}
        while True:
            msg = os.read(cmd_r, _MSG.size)
            if len(msg) < _MSG.size:
                return                                         # the main process has gone
            cmd, start, stop, n, seed = _MSG.unpack(msg)
            if cmd == _EXIT:
                return
            try:
                sl = slice(start, stop)
                if cmd == _TRAIN:
                    random = self.augment is not None or any(r.stochastic for r in self.replicas)
                    loss, scores = train_shard(self.stack, self.loss, a["x"][sl], a["y"][sl].astype(np.int64),
                                               (stop - start) / n, seed if random else None, self.augment)
                    a[f"{w}/loss"][0] = loss
                    for i, r in enumerate(self.replicas):
                        for k, s in (r.shard_statistics() or {}).items():
                            np.copyto(a[f"{w}/{i}/stat/{k}"], s)
                else:
                    scores = self.stack.infer(a["x"][sl])
                a["scores"][sl] = scores
                os.write(rep_w, b"k")
            except BrokenPipeError:
                raise
            except Exception:                                   # noqa: BLE001 - reported, then raised by the main process
                sys.stderr.write(traceback.format_exc())
                os.write(rep_w, b"e")


class _Arena:
    """Named arrays carved out of one anonymous shared-memory block, inherited by forked workers."""

    def __init__(self, shapes: dict[str, tuple], dtype):
        dtype = np.dtype(dtype)
        layout, total = {}, 0
        for name, shape in shapes.items():
            layout[name] = (total, tuple(shape))
            total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            total = -(-total // 64) * 64                       # cache-line aligned
        self._mem = mmap.mmap(-1, max(total, 64))
        self.arrays = {name: np.frombuffer(self._mem, dtype, int(np.prod(shape, dtype=np.int64)), off).reshape(shape)
                       for name, (off, shape) in layout.items()}

    def __getitem__(self, name):
        return self.arrays[name]
