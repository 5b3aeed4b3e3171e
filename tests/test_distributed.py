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


@pytest.mark.slow
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
            "try:\n    distributed.world()\nexcept ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PMI_SIZE": "2", "PMI_RANK": "0"})
    assert 'mpi4py is not installed: pip install "cnnlab[mpi]"' in out.stdout, out.stdout + out.stderr
    assert "PMI_SIZE=2" in out.stdout


# ---------------------------------------------------------------------------
# cnnlab train under mpiexec: run directory, failures, resume
# ---------------------------------------------------------------------------
QUICK = ["--dataset", "shapes", "--model", "tiny_cnn", "--limit", "600", "--batch-size", "50", "--schedule", "constant",
         "--augment", "translate=1", "--quiet"]


def _rank_pid(rank, marker):
    """The pid of the process of MPI rank ``rank`` whose command line contains ``marker`` (Linux /proc)."""
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                env, cmd = (p / "environ").read_bytes().split(b"\0"), (p / "cmdline").read_bytes()
            except OSError:
                continue
            if f"PMI_RANK={rank}".encode() in env and str(marker).encode() in cmd:
                return int(p.name)
    return None


def _checkpoint(run):
    return read_safetensors(run / "checkpoint.safetensors")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process in /proc")
def test_killed_rank_ends_the_job_and_resume_with_other_ranks_matches_uninterrupted(tmp_path):
    """A rank killed mid-epoch ends every rank at once; the last checkpoint is intact; the run resumed on 4 ranks
    ends where an uninterrupted run (one process, the same 2 shards per batch) ends."""
    import json
    import signal
    import time
    mpiexec = mpi_required()
    ref = subprocess.run([sys.executable, "-m", "cnnlab", "train", *QUICK, "--epochs", "3", "--workers", "2",
                          "--out", tmp_path / "ref"], capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    proc = subprocess.Popen([mpiexec, "-n", "2", sys.executable, "-m", "cnnlab", "train", *QUICK, "--epochs", "500",
                             "--out", run], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            try:
                if json.loads((run / "state.json").read_text())["epoch"] >= 1:
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        pid = _rank_pid(1, run)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)                         # rank 1 dies in the middle of the next epoch
        output, _ = proc.communicate(timeout=30)            # every rank ends (no rank waits forever)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "BAD TERMINATION" in output and f"PID {pid}" in output and "Killed (signal 9)" in output, output
    assert _rank_pid(0, run) is None                         # rank 0 is gone too
    state = json.loads((run / "state.json").read_text())
    assert 1 <= state["epoch"] < 3
    tensors, meta = _checkpoint(run)
    assert json.loads(meta["cnnlab_checkpoint"]) == {"epoch": state["epoch"], "step": state["step"]}

    resumed = mpirun(4, "-m", "cnnlab", "train", "--resume", run, "--epochs", "3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout
    assert resumed.stdout.count("test accuracy") == 1       # rank 0 alone reports
    a, b = _checkpoint(tmp_path / "ref")[0], _checkpoint(run)[0]
    for k in a:    # float32; the same shard gradients summed in another order: see CASES for the tolerance
        assert np.abs(a[k] - b[k]).max() <= 1e-5, k
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3]


@pytest.mark.slow
def test_a_rank_that_cannot_read_its_data_fails_the_job_named_on_rank_0(tmp_path):
    """Rank 1's dataset folder is missing: every rank stops, and rank 0 prints rank 1's error with the path."""
    mpi_required()
    missing = tmp_path / "not-mounted-on-this-node"
    code = ("import os, sys\nfrom cnnlab.cli import main\n"
            "data = 'shapes' if os.environ['PMI_RANK'] == '0' else sys.argv[1]\n"
            "sys.exit(main(['train', '--dataset', data, '--model', 'tiny_cnn', '--limit', '100', '--epochs', '1',"
            " '--quiet', '--out', sys.argv[2]]))\n")
    cmd = [mpi_required(), "-l", "-n", "2", sys.executable, "-c", code, str(missing), str(tmp_path / "run")]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT,
                         cwd=tmp_path).stdout
    assert "[0] cnnlab: error: rank 1 of 2:" in out and str(missing) in out, out
    assert "Traceback" not in out and "[1] cnnlab: error" not in out
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


# ---------------------------------------------------------------------------
# evaluate and predict at scale
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--dataset", "shapes", "--model", "tiny_cnn",
                           "--limit", "100", "--epochs", "1", "--quiet", "--out", out],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
def test_evaluate_on_two_ranks_equals_one_process(trained, tmp_path):
    import json
    alone = subprocess.run([sys.executable, "-m", "cnnlab", "evaluate", trained, "--limit", "301", "--out", tmp_path / "a"],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert alone.returncode == 0, alone.stderr
    run = mpirun(2, "-m", "cnnlab", "evaluate", trained, "--limit", "301", "--out", tmp_path / "m")
    assert run.returncode == 0, run.stdout
    assert run.stdout.count("test set: accuracy") == 1               # rank 0 alone prints
    a, m = (json.loads((tmp_path / d / "evaluation.json").read_text()) for d in "am")
    assert m["num_images"] == 301 and m["confusion_matrix"] == a["confusion_matrix"]
    assert m["accuracy"] == a["accuracy"] and abs(m["loss"] - a["loss"]) < 1e-6


def _image_tree(root, count):
    from PIL import Image
    from cnnlab.datasets import load_shapes
    (x, _), _ = load_shapes(count, 1, seed=4)
    for i in range(count):
        folder = root / ("a" if i % 2 else "b") / ("deep" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[i, :, :, 0] * 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")


@pytest.mark.slow
def test_predict_a_directory_tree_on_ranks_gives_one_csv_like_one_process(trained, tmp_path):
    import csv
    _image_tree(tmp_path / "tree", 11)
    alone = subprocess.run([sys.executable, "-m", "cnnlab", "predict", trained, tmp_path / "tree", "--out",
                            tmp_path / "alone.csv", "--top-k", "2"], capture_output=True, text=True, timeout=TIMEOUT)
    assert alone.returncode == 0, alone.stderr
    run = mpirun(3, "-m", "cnnlab", "predict", trained, tmp_path / "tree", "--out", tmp_path / "mpi.csv", "--top-k", "2")
    assert run.returncode == 0, run.stdout
    assert run.stdout.count("wrote predictions for 11 images") == 1
    rows = list(csv.reader((tmp_path / "mpi.csv").open()))
    assert rows[0] == ["path", "class_1", "probability_1", "class_2", "probability_2"] and len(rows) == 12
    assert [r[0] for r in rows[1:]] == sorted(r[0] for r in rows[1:])
    # the same images and classes; probabilities written with 6 decimals may differ by one unit in the last: each
    # rank predicts its share in batches of another size, so the sums run in another order (0.176998 vs 0.176999)
    one = list(csv.reader((tmp_path / "alone.csv").open()))
    assert [r[:2] + r[3::2] for r in rows] == [r[:2] + r[3::2] for r in one]        # path, class_1, class_2
    np.testing.assert_allclose(np.array([r[2::2] for r in rows[1:]], float),
                               np.array([r[2::2] for r in one[1:]], float), rtol=0, atol=2e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_predict_an_unreadable_image_on_rank_1_is_named_on_rank_0(trained, tmp_path):
    _image_tree(tmp_path / "tree", 6)
    (tmp_path / "tree" / "zz_broken.png").write_bytes(b"not an image")     # sorted last: rank 1's part
    cmd = [mpi_required(), "-l", "-n", "2", sys.executable, "-m", "cnnlab", "predict", str(trained),
           str(tmp_path / "tree"), "--out", str(tmp_path / "p.csv")]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT).stdout
    assert "[0] cnnlab: error: rank 1 of 2: image" in out and "zz_broken.png is not a picture" in out, out
    assert "Traceback" not in out and not (tmp_path / "p.csv").exists()
