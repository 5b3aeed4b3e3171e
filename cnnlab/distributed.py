"""Data parallelism across machines: the ranks of an MPI job share every batch.

    pip install "cnnlab[mpi]"
    mpiexec -n 4 cnnlab train --dataset mnist --model mnist_fast

Every rank holds the whole model and the whole dataset and draws the same
global batch order from the run's seed, so the global batch and its order do
not depend on the number of ranks N. Each global batch of B examples is cut
into S shards exactly as ``cnnlab.parallel`` cuts it on one machine (S is the
run's ``workers``, by default N; no shard smaller than ``cnnlab.parallel.MIN_SHARD``), each
shard gets its random seed (augmentation, dropout) from the model's generator,
and shard j is computed by rank ``j mod N``. So an N-rank run computes the same
numbers as one process with ``workers=S``, for any N: a run can resume with a
different number of ranks and continue exactly as it would have.

One step, on every rank::

    buffer = 0                                      one flat array, laid out once:
    for each of this rank's shards s:                 [gradients of every layer | BatchNorm's per-shard
        forward, loss, backward of s                   mean and variance | loss | correct predictions]
        buffer += (grads_s, stats_s, |s|/B loss_s, correct_s)
    Allreduce(buffer, SUM)                          the only communication of the step
    grads = buffer's gradients                      = d(mean loss over B)/dw, each shard weighted |s|/B
    running BatchNorm statistics += momentum-update with (sum of shard statistics) / S
    optimizer step                                  identical on every rank, so the weights stay equal

BatchNorm normalizes each shard with the shard's own statistics (ghost batch
normalization, as ``cnnlab.parallel`` does across cores); the running
estimates take the mean of all S shards' statistics, which is why their sums
travel in the buffer. The buffer's size does not depend on the batch size or N.

Inside a rank the shards run one after another in the rank's own process: start
one rank per core (``benchmarks/bench_mpi.py`` measured 2 ranks x 1 process
against 1 rank x 2 worker processes; ``docs/distributed.md`` has the figures).

Failures: an error on one rank while the others wait in a collective call would
hang the job, so a rank that fails calls ``MPI_Abort`` (``abort``), which ends
every rank; the launcher reports it. Where all ranks read input at a known
point (data, images), they first agree on the outcome (``Communicator.agree``)
and rank 0 names every rank's error before all of them stop.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import zlib

import numpy as np

from .parallel import _ShardResult, default_workers, shard_count, shard_seeds, shard_slices, train_shard
from .resources import cpu_cores

# Environment variables by which MPI launchers tell a process the size of its job.
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")
INSTALL_HINT = 'pip install "cnnlab[mpi]"'


class RankFailed(SystemExit):
    """Ends a rank whose job failed on another rank; rank 0 has printed the reason."""

    def __init__(self, code=2):
        super().__init__(code)


class JobFailed(ValueError):
    """Raised on rank 0 when the ranks agreed that the job fails (``Communicator.agree``); names each failed rank."""


def find_mpiexec() -> str | None:
    """The ``mpiexec`` of the MPI that ``mpi4py`` uses: the one installed with this Python (the ``mpich``
    wheel puts it among the interpreter's scripts, also when a virtual environment inherits it), else the
    first on ``PATH``."""
    import shutil
    import sysconfig
    from pathlib import Path
    name = "mpiexec.exe" if os.name == "nt" else "mpiexec"
    for folder in (Path(sys.executable).parent, sysconfig.get_path("scripts"),
                   sysconfig.get_path("scripts", vars={"base": sys.base_prefix}), Path(sys.base_prefix) / "bin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("mpiexec")


def launched_size() -> tuple[int, str | None]:
    """``(size, variable)`` of the MPI job this process was started in by a launcher; ``(1, None)`` if none."""
    for var in LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value), var
    return 1, None


class Communicator:
    """The few collective operations cnnlab needs, over an ``mpi4py`` communicator.

    Only buffer-based calls are used (no pickled Python objects travel between ranks).
    """

    def __init__(self, comm):
        from mpi4py import MPI
        self._MPI = MPI
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def __repr__(self):
        return f"Communicator(rank {self.rank} of {self.size})"

    def allreduce(self, buffer: np.ndarray) -> np.ndarray:
        """Sum ``buffer`` over all ranks, in place."""
        self.comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)
        return buffer

    def broadcast(self, array: np.ndarray) -> np.ndarray:
        """Rank 0's ``array`` into every rank's (same shape and dtype), in place."""
        self.comm.Bcast(array, root=0)
        return array

    def allgather_text(self, text: str) -> list[str]:
        """Every rank's ``text``, in rank order, on every rank."""
        data = np.frombuffer(text.encode("utf-8"), np.uint8)
        lengths = np.zeros(self.size, np.int64)
        self.comm.Allgather(np.array([len(data)], np.int64), lengths)
        out = np.zeros(int(lengths.sum()), np.uint8)
        self.comm.Allgatherv(data, [out, lengths.tolist()])
        ends = np.cumsum(lengths)
        return [out[e - n:e].tobytes().decode("utf-8") for e, n in zip(ends, lengths)]

    def broadcast_json(self, obj):
        """Rank 0's JSON-serializable ``obj`` on every rank."""
        return json.loads(self.allgather_text(json.dumps(obj) if self.is_root else "")[0])

    def gather_rows(self, local: np.ndarray, total: int) -> np.ndarray:
        """Concatenate every rank's rows (rank order) on every rank; ``total`` rows in all."""
        row = int(np.prod(local.shape[1:], dtype=np.int64))
        counts = np.zeros(self.size, np.int64)
        self.comm.Allgather(np.array([len(local) * row], np.int64), counts)
        out = np.empty((total,) + local.shape[1:], local.dtype)
        self.comm.Allgatherv(np.ascontiguousarray(local), [out, counts.tolist()])
        return out

    def agree(self, error: BaseException | None):
        """Collective: every rank says whether its part failed. If any did, rank 0 raises an error naming
        each failed rank and its message; the other ranks raise ``RankFailed`` (silent)."""
        message = "" if error is None else (str(error) or type(error).__name__)
        messages = self.allgather_text(message)
        failed: dict[str, list[int]] = {}
        for r, m in enumerate(messages):
            if m:
                failed.setdefault(m, []).append(r)
        if not failed:
            return
        if not self.is_root:
            raise RankFailed()
        if len(failed) == 1 and len(next(iter(failed.values()))) == self.size:
            raise JobFailed(next(iter(failed))) from None      # the same error on every rank
        raise JobFailed("; ".join(f"{'ranks' if len(rs) > 1 else 'rank'} {', '.join(map(str, rs))} of {self.size}: {m}"
                                  for m, rs in failed.items())) from None

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code: int = 1):
        """End every rank of the job now (``MPI_Abort``)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


class _Agreement:
    def __init__(self, comm):
        self.comm = comm

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if self.comm is None:
            return False
        if error is not None and not isinstance(error, Exception):
            return False                                   # Ctrl-C and exits are not the job's to share
        self.comm.agree(error)
        return False


def agreed(comm):
    """``with agreed(comm): read input`` - on an error on any rank, every rank stops, and rank 0's error names
    each failed rank and its message (without ``comm``, the block runs as it would)."""
    return _Agreement(comm)


def agreed_call(comm, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on every rank of ``comm``, then ``agreed``: an error on any rank stops all of
    them, named on rank 0 (without ``comm``, just the call)."""
    with agreed(comm):
        return fn(*args, **kwargs)


class MPIUnavailable(ValueError):
    """Started by an MPI launcher, but mpi4py cannot be imported."""


_WORLD = None


def world(comm=None) -> Communicator | None:
    """The communicator to train on: ``comm`` if given (an ``mpi4py`` communicator or a ``Communicator``),
    else ``MPI.COMM_WORLD`` when this process was started by ``mpiexec`` (or ``srun``) with more than one
    rank, else ``None`` (everything stays in this process). ``comm=False`` forces ``None``."""
    global _WORLD
    if comm is False:
        return None
    if comm is not None:
        comm = comm if isinstance(comm, Communicator) else Communicator(comm)
        return comm if comm.size > 1 else None
    size, var = launched_size()
    if size <= 1:
        return None
    if _WORLD is None:
        try:
            from mpi4py import MPI
        except ImportError:
            raise MPIUnavailable(f"this process was started by an MPI launcher ({var}={size}) but mpi4py is not "
                                 f"installed: {INSTALL_HINT}") from None
        _WORLD = Communicator(MPI.COMM_WORLD)
    return _WORLD if _WORLD.size > 1 else None


def is_root(comm=None) -> bool:
    """Whether this process writes files and prints: rank 0, or a process outside MPI."""
    comm = world(comm)
    return comm is None or comm.is_root


def default_shards(comm=None) -> int:
    """Shards per batch by default: one per rank under MPI, one per core (``cnnlab.parallel``) otherwise."""
    comm = world(comm)
    if comm is not None:
        return comm.size
    return default_workers()


def end_job(error, message: str, code: int) -> None:
    """A command failed with ``error``. Under MPI, print ``message`` naming this rank (after Ctrl-C, on rank 0
    only) and end every rank of the job, so that none is left waiting in a collective call. Returns (and the
    caller reports the error itself) outside MPI, and for an error the ranks agreed on: each ends by itself."""
    try:
        comm = world()
    except ValueError:
        return
    if comm is None or isinstance(error, JobFailed) or getattr(error, "agreed", False):
        return                                      # every rank ends by itself (``agreed``: at the same step)
    if comm.is_root or not isinstance(error, KeyboardInterrupt):
        print(f"cnnlab: error: rank {comm.rank} of {comm.size}: {message}", file=sys.stderr, flush=True)
    comm.abort(code)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
def synchronize(model, x, y, comm: Communicator):
    """Start every rank from rank 0's weights, buffers and random generator; check that all ranks hold
    the same training data (count and checksum), since each computes shards of the same global batches."""
    state = model.state_dict()
    if state:
        flat = np.concatenate([v.ravel() for v in state.values()])
        comm.broadcast(flat)
        offset = 0
        for v in state.values():
            v[...] = flat[offset:offset + v.size].reshape(v.shape)
            offset += v.size
    model.rng.bit_generator.state = comm.broadcast_json(model.rng.bit_generator.state)
    mine = f"{len(x)} images, checksum {zlib.crc32(np.ascontiguousarray(x)) ^ zlib.crc32(np.ascontiguousarray(y)):08x}"
    seen = comm.allgather_text(mine)
    if len(set(seen)) > 1:
        raise ValueError("the ranks hold different training data (" + "; ".join(
            f"rank {r}: {s}" for r, s in enumerate(seen)) + "); every rank must read the same dataset")


class DistributedParallel:
    """Training steps of ``model`` across the ranks of ``comm``: the drop-in for ``DataParallel`` in the
    training loop (``with ...: loss, correct = dp.train_batch(x, y)`` fills the model's gradients).

    ``shards``: shards per global batch (default: the number of ranks).
    """

    def __init__(self, model, comm: Communicator, shards: int | None = None, augment=None):
        self.model, self.comm, self.augment = model, comm, augment
        self.stopping = 0
        self.shards = comm.size if shards is None else int(shards)
        if self.shards < 1:
            raise ValueError(f"shards must be >= 1, received {shards!r}")
        self.replicas = [layer.replicate() for layer in model.layers]
        self.stack = model.stack.with_layers(self.replicas)          # this rank's shards run through it
        shapes = {}
        for i, layer in enumerate(model.layers):
            shapes.update({(i, "grad", k): g.shape for k, g in layer.grads.items()})
            shapes.update({(i, "stat", k): s for k, s in layer.shard_statistics_shapes().items()})
        shapes["loss"] = (1,)
        shapes["correct"] = (1,)
        shapes["stop"] = (2,)                    # ranks asking to stop, the sum of their signal numbers
        sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes.values()]
        self.buffer = np.zeros(sum(sizes), model.layers[0].dtype)   # the one buffer every step reduces
        offsets = np.cumsum([0] + sizes)
        # each named part is a view into the flat buffer, reshaped to its array's shape
        self.parts = {name: self.buffer[a:b].reshape(shape)
                      for (name, shape), a, b in zip(shapes.items(), offsets[:-1], offsets[1:])}

    def __enter__(self):
        # One rank per core computes one shard at a time: BLAS gets the cores of this machine shared out
        # among the ranks on it (1 thread each when there is a rank per core), as cnnlab.parallel does.
        from threadpoolctl import threadpool_limits
        local = self.comm.comm.Split_type(self.comm._MPI.COMM_TYPE_SHARED)
        ranks_here = local.Get_size()
        local.Free()
        self._limits = threadpool_limits(max(1, cpu_cores() // ranks_here), user_api="blas")
        return self

    def __exit__(self, *exc):
        self._limits.unregister()
        return False

    def train_batch(self, x, y, stop=0):
        """Forward, loss and backward of one global batch (identical ``x``, ``y`` on every rank); fills the
        model's gradients with those of the whole batch. Returns (mean loss, correct predictions).

        ``stop``: this rank's signal number to stop after this batch (0: none). The same reduction tells
        every rank whether any asked, so all of them stop after the same batch: ``stopping`` is the signal
        (the one every asking rank received, else SIGTERM) or 0."""
        n = len(x)
        slices = shard_slices(n, shard_count(n, self.shards))
        seeds = shard_seeds(self.model, len(slices), self.augment)
        parts, lay = self.parts, self.model.layers
        self.buffer.fill(0)
        for j in range(self.comm.rank, len(slices), self.comm.size):
            sl = slices[j]
            weight = (sl.stop - sl.start) / n
            loss, scores = train_shard(self.stack, self.model.loss, x[sl], y[sl], weight,
                                       seeds[j] if seeds else None, self.augment)
            parts["loss"] += loss * weight
            parts["correct"] += np.count_nonzero(scores.argmax(axis=1) == y[sl])
            for i, (layer, r) in enumerate(zip(lay, self.replicas)):
                for k, g in r.grads.items():
                    parts[i, "grad", k] += g
                for k, s in (r.shard_statistics() or {}).items():
                    parts[i, "stat", k] += s
        parts["stop"][:] = (1, stop) if stop else (0, 0)
        self.comm.allreduce(self.buffer)
        asking, total = (int(round(v)) for v in parts["stop"])
        self.stopping = 0 if not asking else total // asking if total % asking == 0 else int(signal.SIGTERM)
        for i, layer in enumerate(lay):
            stats = {k: parts[i, "stat", k] / len(slices) for k in layer.shard_statistics_shapes()}
            layer.merge_replicas([_ShardResult({k: parts[i, "grad", k] for k in layer.grads}, stats or None)])
        return float(parts["loss"][0]), int(parts["correct"][0])


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------
def logits(model, x, comm: Communicator, batch_size=256, workers=None) -> np.ndarray:
    """Scores of every row of ``x`` on every rank; rank r computes the r-th of N contiguous parts (with
    ``workers`` processes, by default 1: a rank per core)."""
    part = shard_slices(len(x), comm.size)[comm.rank]
    local = model.logits(x[part], batch_size=batch_size, workers=1 if workers is None else workers)
    return comm.gather_rows(local.astype(model.layers[0].dtype, copy=False), len(x))   # an empty part is float32


def rank_part(items, comm: Communicator | None):
    """This rank's contiguous part of ``items`` (all of them without ``comm``) and its slice."""
    part = slice(0, len(items)) if comm is None else shard_slices(len(items), comm.size)[comm.rank]
    return items[part], part
