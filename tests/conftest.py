"""Shared test helpers, and how the suite runs in parallel (pytest-xdist: ``python -m pytest -n auto``)."""
import os

import numpy as np
import pytest

from cnnlab import layers as L


def random_conv_configs(count, seed, groups=(1, 1, 2, 3), max_kernel=3, max_stride=2, sizes=(4, 8), max_batch=2,
                        max_channels_per_group=2, max_filters_per_group=3):
    """Random valid Conv2D configurations with an input shape: strides, padding, dilation, groups, odd sizes."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        g = int(rng.choice(groups))
        cfg = dict(filters=g * int(rng.integers(1, max_filters_per_group + 1)),
                   kernel_size=(int(rng.integers(1, max_kernel + 1)), int(rng.integers(1, max_kernel + 1))),
                   strides=(int(rng.integers(1, max_stride + 1)), int(rng.integers(1, max_stride + 1))),
                   padding=["valid", "same", int(rng.integers(0, 3)),
                            (int(rng.integers(0, 3)), int(rng.integers(0, 3)))][int(rng.integers(0, 4))],
                   dilation=(int(rng.integers(1, 3)), int(rng.integers(1, 3))), groups=g,
                   use_bias=bool(rng.integers(0, 2)))
        shape = (int(rng.integers(1, max_batch + 1)), int(rng.integers(*sizes)), int(rng.integers(*sizes)),
                 g * int(rng.integers(1, max_channels_per_group + 1)))
        try:
            L.Conv2D(**cfg).compute_output_shape(shape[1:])
        except ValueError:                          # the kernel does not fit this input: draw again
            continue
        out.append((cfg, shape))
    return out


@pytest.fixture(params=["numpy", "compiled"])
def compiled_loops(request, monkeypatch):
    """Run a test with the NumPy code and with the compiled loops of cnnlab.layers.compiled (Winograd, BatchNorm + ReLU)."""
    monkeypatch.setenv("CNNLAB_COMPILED", "0" if request.param == "numpy" else "1")
    return request.param


# Under pytest-xdist with ``--dist loadscope`` (the README's test command), a worker takes a whole test module, so a
# module-scoped fixture (a trained model, a server, an imported classic) is made once. The modules below start
# process groups, real signals or deadlines on child processes (mpiexec -n 4, Ctrl-C, a server's children): each of
# their tests holds one lock, shared by the workers of a session, so no two of them ever run at the same time.
# ``-n auto`` starts one worker per core this process may use (``cnnlab.resources.cpu_cores``: taskset, affinity),
# at most MAX_WORKERS (each worker holds its own models and data in memory), and each worker's BLAS computes with
# its share of the cores, as ranks that share a machine do (``cnnlab.distributed``): no worker spin-waits on
# another's cores.
PROCESSES = {"test_cluster", "test_distributed", "test_cli", "test_serve_cli"}
MAX_WORKERS = 8


@pytest.hookimpl(optionalhook=True)                  # a hook of pytest-xdist: without it, nothing to answer
def pytest_xdist_auto_num_workers(config):
    from cnnlab.resources import cpu_cores
    return min(cpu_cores(), MAX_WORKERS)


def pytest_configure(config):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if os.environ.get("PYTEST_XDIST_WORKER") and workers > 1:
        from threadpoolctl import threadpool_limits
        from cnnlab.resources import cpu_cores
        config._blas_limits = threadpool_limits(max(1, cpu_cores() // workers), user_api="blas")


@pytest.fixture(autouse=True)
def one_process_test_at_a_time(request, tmp_path_factory):
    if request.module.__name__.rpartition(".")[2] not in PROCESSES:
        yield
        return
    import fcntl
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root     # the workers' shared folder
    with open(root / "processes.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
