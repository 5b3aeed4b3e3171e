"""Training across the ranks of an MPI job (cnnlab.distributed), on one machine over loopback.

Each check launches ``mpiexec -n N`` (the one installed with this Python by the ``mpich`` wheel) with a
timeout, and compares with one process computing the same shards with worker processes.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnlab import distributed
from cnnlab._io import read_safetensors

HERE = Path(__file__).parent
TIMEOUT = 90


def mpi_required():
    pytest.importorskip("mpi4py", reason='the MPI tests need the mpi extra: pip install "cnnlab[mpi]"')
    mpiexec = distributed.find_mpiexec()
    assert mpiexec, "mpi4py is installed but no mpiexec was found (the mpich wheel provides it)"
    return mpiexec


def mpirun(n, *args, cwd=None, timeout=TIMEOUT):
    """``mpiexec -n n python ARGS...``; returns the CompletedProcess (output merged)."""
    cmd = [mpi_required(), "-n", str(n), sys.executable, *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def weights(path):
    return read_safetensors(path)[0]


# Float64: the N-rank run sums the same shard gradients as one process, only in another order (the
# Allreduce's), so weights agree to a few units in the last place of float64 (~1e-16); 1e-10 leaves room.
# Float32: the same reordering costs about one float32 ulp per step (eps = 1.2e-7 relative, weights below 1 in
# size); eight momentum steps amplify it at most tenfold, so 1e-5 is ten times what can legitimately differ.
CASES = [  # ranks, shards, dtype, layer options
    (2, 2, "float64", []),
    (2, 2, "float64", ["--batchnorm", "--augment"]),
    (4, 4, "float64", ["--batchnorm", "--augment", "--dropout"]),
    (2, 4, "float64", ["--batchnorm", "--augment"]),          # fewer ranks than shards: each rank computes two
    (4, 4, "float32", ["--batchnorm", "--augment"]),
]


@pytest.mark.parametrize("ranks, shards, dtype, options", CASES)
def test_ranks_equal_one_process(tmp_path, ranks, shards, dtype, options):
    mpi_required()
    common = [HERE / "mpi_fit.py", "--dtype", dtype, "--shards", shards, *options]
    alone = subprocess.run([sys.executable, *map(str, common), "--alone", tmp_path / "alone.st"],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert alone.returncode == 0, alone.stderr
    run = mpirun(ranks, *common, tmp_path / "mpi.st")
    assert run.returncode == 0, run.stdout
    a, b, start = weights(tmp_path / "alone.st"), weights(tmp_path / "mpi.st"), weights(tmp_path / "mpi.st.init")
    assert set(a) == set(b) and a["dense.kernel"].dtype == np.dtype(dtype)
    tol = 1e-10 if dtype == "float64" else 1e-5
    for k in a:
        assert np.abs(a[k] - b[k]).max() <= tol, (k, np.abs(a[k] - b[k]).max())
    moved = max(float(np.abs(b[k] - start[k]).max()) for k in b)
    assert moved > 1e-2                                # training moved the weights: the agreement means something


def test_missing_mpi4py_is_named_with_the_extra():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from cnnlab import distributed\n"
            "try:\n    distributed.world()\nexcept RuntimeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PMI_SIZE": "2", "PMI_RANK": "0"})
    assert 'mpi4py is not installed: pip install "cnnlab[mpi]"' in out.stdout, out.stdout + out.stderr
    assert "PMI_SIZE=2" in out.stdout
