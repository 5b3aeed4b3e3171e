"""Runs that survive a cluster: a stop signal in the middle of an epoch, a checkpoint schedule and kill -9,
a second writer, a full disk; each followed by a resume that ends where an uninterrupted run ends."""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import load_file

from cnnlab import _io, cli, runs
from cnnlab.datasets import load_dataset
from cnnlab.runs import files, recorder
from cnnlab.runs.lock import LOCK_FILE, RunLock, RunLocked
from cnnlab.training import Callback

N_TRAIN, N_TEST = 240, 60
TIMEOUT = 120
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}


@pytest.fixture(scope="module")
def data():
    return load_dataset("shapes", n_train=N_TRAIN, n_test=N_TEST)


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    """A small model with every kind of state a resume must restore: BatchNorm's running statistics and
    Dropout's generator (augmentation is switched on by the configurations)."""
    path = tmp_path_factory.mktemp("arch") / "bn_dropout.json"
    _io.write_json(path, {"layers": [{"class": "Conv2D", "config": {"filters": 4, "kernel_size": 3}},
                                     {"class": "BatchNorm"}, {"class": "ReLU"},
                                     {"class": "MaxPool2D", "config": {"pool_size": 2}}, {"class": "Flatten"},
                                     {"class": "Dropout", "config": {"rate": 0.3}},
                                     {"class": "Dense", "config": {"units": 10}}]})
    return path


def config(arch, **kw):
    base = dict(dataset="shapes", dataset_options={"n_train": N_TRAIN, "n_test": N_TEST}, model=str(arch),
                epochs=2, batch_size=32, lr=0.05, schedule="onecycle", seed=5, augment="translate=2,hflip",
                val_split=0.2, snapshot_filters=3)
    base.update(kw)
    return runs.make_config(**base)


def train(cfg, out, data, **kw):
    return runs.run_training(cfg, out, verbose=0, data=data, **kw)


def assert_same_run(a, b):
    """Bit-identical weights, optimizer state, models, filter snapshots and per-epoch losses."""
    for name in ("checkpoint.safetensors", "last.safetensors", "model.safetensors", "filters.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert sorted(ta) == sorted(tb), name
        for k in ta:
            assert np.array_equal(ta[k], tb[k]), (name, k)
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (a, b))
    for k in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert ha[k] == hb[k], k


class SignalAt(Callback):
    """Send this process ``signum`` after optimizer step ``step``, as Slurm or a user would."""

    def __init__(self, step, signum=signal.SIGTERM):
        self.at, self.signum = step, signum

    def on_batch_end(self, trainer, step, loss):
        if step == self.at:
            os.kill(os.getpid(), self.signum)


# ---------------------------------------------------------------------------
# A stop signal in the middle of an epoch
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("workers, signum", [(1, signal.SIGTERM), (2, signal.SIGUSR1), (1, signal.SIGINT)])
def test_signal_stops_after_the_batch_and_resume_is_bit_identical(tmp_path, data, arch, workers, signum):
    cfg = config(arch, workers=workers)
    full, part = tmp_path / "full", tmp_path / "part"
    train(cfg, full, data)
    with pytest.raises(runs.TrainingInterrupted) as info:
        train(cfg, part, data, callbacks=[SignalAt(6 + 2, signum)])     # 6 steps an epoch: inside epoch 2
    e = info.value
    assert (e.signum, e.epoch, e.epoch_step, e.steps) == (signum, 1, 3, 6)   # the batch after the signal ends it
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    assert e.message == (f"stopped by {name} at epoch 2, step 3 of 6; resume with: "
                         f"cnnlab train --resume {part} --epochs 2")
    state = files.read_state(part)
    assert state["epoch"] == 1 and state["step"] == 9 and state["status"] == "interrupted"
    assert state["epoch_progress"]["epoch_step"] == 3 and state["epoch_progress"]["correct"] >= 0
    _, _, ckpt = files.read_checkpoint(part)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 9)
    assert sorted(ckpt["order"]) == list(range(192))                 # the epoch's data order (80% of 240)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL        # the handlers are put back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    result = runs.resume_training(part, verbose=0, data=data)
    assert result["status"] == "completed" and result["step"] == 12
    assert_same_run(full, part)


def test_stop_at_the_last_batch_of_an_epoch_resumes_at_its_end(tmp_path, data, arch):
    cfg = config(arch, workers=1, epochs=2)
    train(cfg, tmp_path / "full", data)
    with pytest.raises(runs.TrainingInterrupted) as info:
        train(cfg, tmp_path / "part", data, callbacks=[SignalAt(5)])
    assert (info.value.epoch, info.value.epoch_step) == (0, 6)
    runs.resume_training(tmp_path / "part", verbose=0, data=data)
    assert_same_run(tmp_path / "full", tmp_path / "part")


def test_a_replaced_handler_is_chained(tmp_path, data, arch):
    seen = []

    def handler(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with pytest.raises(runs.TrainingInterrupted):
            train(config(arch, workers=1), tmp_path / "run", data, callbacks=[SignalAt(2, signal.SIGUSR1)])
        assert seen == [signal.SIGUSR1]
        assert signal.getsignal(signal.SIGUSR1) is handler          # back in place
    finally:
        signal.signal(signal.SIGUSR1, previous)


# ---------------------------------------------------------------------------
# --checkpoint-every, and the generation a crash leaves
# ---------------------------------------------------------------------------
def test_parse_interval():
    assert runs.parse_interval("2000") == {"steps": 2000}
    assert runs.parse_interval(7) == {"steps": 7}
    assert runs.parse_interval("30m") == {"seconds": 1800}
    assert runs.parse_interval("1.5h") == {"seconds": 5400}
    assert runs.parse_interval("90s") == {"seconds": 90}
    assert runs.parse_interval(None) == {}
    for bad in ("0", "-3", "ten", "5d", "m", "infh"):
        with pytest.raises(ValueError, match="checkpoint interval"):
            runs.parse_interval(bad)


class Crash(BaseException):
    """The process dying at a chosen point (as kill -9 would, nothing after it runs)."""


def test_checkpoint_every_steps_then_a_crash_resumes_bit_identically(tmp_path, data, arch, monkeypatch):
    cfg = config(arch, workers=1, epochs=2)
    train(cfg, tmp_path / "full", data)
    saved = []
    real = files.write_state

    def count(run_dir, state):
        saved.append((state["epoch"], state["step"], (state.get("epoch_progress") or {}).get("epoch_step")))
        if state["step"] == 10:
            raise Crash                                   # dies before writing state.json at step 10
        return real(run_dir, state)

    monkeypatch.setattr(files, "write_state", count)
    with pytest.raises(Crash):
        train(cfg, tmp_path / "part", data, checkpoint_every=4)
    monkeypatch.undo()
    # at the start, 4 steps on, the end of epoch 1 (step 6), 4 steps on (10): there the process dies
    assert saved == [(0, 0, None), (0, 4, 4), (1, 6, None), (1, 10, 4)]
    # the checkpoint of step 10 replaced that of step 6, which is kept as the previous generation
    assert files.read_checkpoint(tmp_path / "part")[2]["step"] == 10
    assert files.read_state(tmp_path / "part")["step"] == 6
    assert not [p for p in (tmp_path / "part").iterdir() if p.name.endswith(".tmp") or p.name == LOCK_FILE]
    runs.resume_training(tmp_path / "part", verbose=0, data=data)
    assert_same_run(tmp_path / "full", tmp_path / "part")


def test_checkpoint_every_duration_writes_mid_epoch(tmp_path, data, arch, monkeypatch):
    saved = []
    real = files.write_state
    monkeypatch.setattr(files, "write_state", lambda d, s: (saved.append(s.get("epoch_progress")), real(d, s))[1])
    clock = iter(range(0, 10**6, 40))                    # every reading of the recorder's clock: 40 s later
    monkeypatch.setattr(recorder, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    train(config(arch, workers=1, epochs=1), tmp_path / "run", data, checkpoint_every="1m")
    assert [p["epoch_step"] for p in saved if p] == [2, 4, 6]   # each 80 s (two readings) after the last save


# ---------------------------------------------------------------------------
# One writer per run directory
# ---------------------------------------------------------------------------
HOLD = """
import sys, time
from cnnlab.runs.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _hold(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_same_process_cannot_lock_twice(tmp_path):
    with RunLock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK_FILE).is_file()
        with pytest.raises(RunLocked, match=re.escape(f"{tmp_path / 'run'} is being trained by process "
                                                      f"{os.getpid()} on host")):
            RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run").exists()            # made for the lock alone: removed with it
    with RunLock(tmp_path / "run"):                    # released: free again
        pass


def test_where_no_lock_can_be_taken_a_warning_and_training_goes_on(tmp_path, data, arch, monkeypatch, capsys):
    def refuse(fd, how):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))   # NFS mounted nolock without lockd, Lustre noflock

    monkeypatch.setattr("cnnlab.runs.lock.fcntl.lockf", refuse)
    train(config(arch, workers=1, epochs=1), tmp_path / "run", data)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cnnlab: warning: {tmp_path / 'run'} cannot be locked ({os.strerror(errno.ENOLCK)}); nothing "
                   f"stops a second process from writing it at the same time"]
    assert files.read_state(tmp_path / "run")["status"] == "completed"


@pytest.mark.slow
def test_a_second_writer_is_refused_while_readers_work(tmp_path, data, arch):
    run = tmp_path / "run"
    train(config(arch, workers=1, epochs=1), run, data)
    assert cli.main(["export", str(run), "--out", str(tmp_path / "x.onnx")]) == 0
    holder = _hold(run)
    try:
        t0 = time.monotonic()
        for argv in (["train", "--resume", run, "--epochs", "2"], ["import", "x.onnx", "--dataset", "shapes",
                                                                 "--out", run]):
            done = subprocess.run([sys.executable, "-m", "cnnlab", *map(str, argv)], capture_output=True, text=True,
                                  env=ENV, timeout=TIMEOUT, cwd=tmp_path)
            assert done.returncode == 2, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"cnnlab: error: {run} is being trained by process "
                                                           f"{holder.pid} on host "), done.stderr
        refused = time.monotonic() - t0
        reader = subprocess.run([sys.executable, "-m", "cnnlab", "evaluate", str(run), "--limit", "20"],
                                capture_output=True, text=True, env=ENV, timeout=TIMEOUT, cwd=tmp_path)
        assert reader.returncode == 0, reader.stderr
        assert files.read_state(run)["epoch"] == 1                     # the refused writers changed nothing
    finally:
        holder.kill()                                                  # kill -9: the kernel drops the lock
        holder.wait()
    runs.resume_training(run, epochs=2, verbose=0, data=data)          # a new writer gets it
    print(f"two refusals took {refused:.2f} s, with interpreter start-up")


@pytest.mark.slow
def test_two_trainings_started_together_one_runs_alone(tmp_path):
    """Two ``cnnlab train --resume R`` at once: one is refused at once, the other ends as a run alone does."""
    quick = [*QUICK, "--seed", "2"]
    for name in ("ref", "run"):
        done = subprocess.run([sys.executable, "-m", "cnnlab", "train", *quick, "--epochs", "1", "--out", name],
                              capture_output=True, text=True, env=ENV, timeout=TIMEOUT, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", "ref", "--epochs", "3"], check=True,
                   capture_output=True, env=ENV, timeout=TIMEOUT, cwd=tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "cnnlab", "train", "--resume", "run", "--epochs", "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
             for _ in range(2)]
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    refused = next(err for p, (_, err) in zip(procs, outs) if p.returncode == 2)
    assert "run is being trained by process" in refused and len(refused.strip().splitlines()) == 1
    assert_same_run(tmp_path / "ref", tmp_path / "run")


# ---------------------------------------------------------------------------
# A full disk
# ---------------------------------------------------------------------------
def fail_writing(monkeypatch, name, error=errno.ENOSPC, after=0):
    """Make ``atomic_write`` fail part way through writing file ``name`` (its ``after``-th write on):
    half the content lands in the temporary file, then the OS error."""
    real, seen = _io._fill, []

    def fill(fd, tmp, data):
        target = Path(tmp).name[1:].rsplit(".", 2)[0]
        if target == name:
            seen.append(tmp)
            if len(seen) > after:
                real(fd, tmp, data)
                os.truncate(tmp, os.path.getsize(tmp) // 2)
                raise OSError(error, os.strerror(error))
        return real(fd, tmp, data)

    monkeypatch.setattr(_io, "_fill", fill)
    return seen


QUICK = ["--dataset", "shapes", "--model", "tiny_cnn", "--limit", "160", "--batch-size", "32", "--quiet",
         "--workers", "1", "--augment", "translate=1", "--schedule", "constant",
         "--snapshot-filters", "2"]


@pytest.mark.parametrize("name, error, message", [
    ("checkpoint.safetensors", errno.ENOSPC, "no space left on device while writing {run}/checkpoint.safetensors"),
    ("history.json", errno.EDQUOT, "disk quota exceeded while writing {run}/history.json"),
    ("state.json", errno.EIO, "input/output error while writing {run}/state.json"),
])
def test_a_failed_write_keeps_the_last_checkpoint_and_resume_works(tmp_path, capsys, monkeypatch, name, error,
                                                                    message):
    run = tmp_path / "run"
    assert cli.main(["train", *QUICK, "--epochs", "3", "--out", str(tmp_path / "ref")]) == 0
    assert cli.main(["train", *QUICK, "--epochs", "1", "--out", str(run)]) == 0
    before = (run / "checkpoint.safetensors").read_bytes()
    capsys.readouterr()
    seen = fail_writing(monkeypatch, name, error)
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 1
    monkeypatch.undo()
    assert seen                                                       # the failure did happen where planned
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cnnlab: error: {message.format(run=run)}; the last checkpoint (epoch 1) is intact"]
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == LOCK_FILE]
    state = files.read_state(run)
    assert state["epoch"] == 1
    _, _, ckpt = files.find_checkpoint(run, state)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 5)
    if name == "checkpoint.safetensors":
        assert (run / "checkpoint.safetensors").read_bytes() == before
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 0     # space freed: on it goes
    assert_same_run(tmp_path / "ref", run)


def test_a_read_only_run_directory_is_named(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert cli.main(["train", *QUICK, "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    fail_writing(monkeypatch, "checkpoint.safetensors", errno.EROFS)
    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cnnlab: error: read-only file system while writing {run}/checkpoint.safetensors")


def test_predict_and_export_name_the_file_they_could_not_write(tmp_path, capsys, monkeypatch):
    from PIL import Image
    run = tmp_path / "run"
    assert cli.main(["train", *QUICK, "--epochs", "1", "--out", str(run)]) == 0
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "a.png")
    capsys.readouterr()
    fail_writing(monkeypatch, "out.csv")
    fail_writing(monkeypatch, "out.onnx")
    assert cli.main(["predict", str(run), str(tmp_path / "a.png"), "--out", str(tmp_path / "out.csv")]) == 1
    assert cli.main(["export", str(run), "--out", str(tmp_path / "out.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cnnlab: error: no space left on device while writing {tmp_path}/out.csv",
                   f"cnnlab: error: no space left on device while writing {tmp_path}/out.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "run"]


TMPFS = r"""
set -u
mount -t tmpfs -o size=2m tmpfs "$DISK" || exit 77
cd "$DISK"
"$PY" -m cnnlab train $QUICK --epochs 1 --out run || exit 10
head -c 4m /dev/zero > filler 2>/dev/null          # the disk is now full
err=$("$PY" -m cnnlab train --resume run --epochs 3 --quiet 2>&1 >/dev/null)   # nowhere on the disk to put it
echo "status $?"
echo "$err"
ls -a run | tr '\n' ' '; echo
"$PY" -c "import json; print('state epoch', json.load(open('run/state.json'))['epoch'])"
rm filler
"$PY" -m cnnlab train --resume run --epochs 3 > /dev/null || exit 11
"$PY" -c "import json; print('resumed epoch', json.load(open('run/state.json'))['epoch'])"
"""


@pytest.mark.slow
def test_a_real_full_disk(tmp_path):
    """A 2 MB tmpfs (in a mount namespace of its own) filled up between two epochs."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        done = subprocess.run(["unshare", "-rm", "bash", "-c", TMPFS], capture_output=True, text=True,
                              timeout=TIMEOUT * 2, env={**ENV, "DISK": str(disk), "QUICK": " ".join(QUICK), "PY": sys.executable})
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if done.returncode == 77 or "unshare" in done.stderr and done.returncode == 1:
        pytest.skip(f"no tmpfs can be mounted here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "status 1" in out, out
    assert f"cnnlab: error: no space left on device while writing run/" in out, out
    assert "; the last checkpoint (epoch 1) is intact" in out, out
    assert ".tmp" not in out and "state epoch 1" in out and "resumed epoch 3" in out, out


# ---------------------------------------------------------------------------
# cnnlab train stopped from outside: SIGTERM to the process group, kill -9, mpiexec
# ---------------------------------------------------------------------------
EPOCHS = "30"          # 5 batches an epoch: long enough that a signal lands in the middle of training


def mid_epoch(state):
    """In the middle of epoch 3 or later (a checkpoint every 2 steps shows it): where a signal usually lands.
    (Not just after an epoch's end, while history.png is drawn: the stop waits for the drawing, which on a
    machine with 6 processes per core takes seconds.)"""
    return state["epoch"] >= 2 and state["epoch_progress"] is not None


def _cnnlab(*argv, mpi=0, cwd):
    from test_distributed import mpi_required
    launcher = [mpi_required(), "-n", str(mpi)] if mpi else []
    return [*launcher, sys.executable, "-m", "cnnlab", *map(str, argv)]


def _train_cmd(arch, out, workers=2, mpi=0, *extra):
    argv = ["train", *QUICK, "--model", arch, "--workers", workers, "--epochs", EPOCHS, "--out", out, *extra]
    return _cnnlab(*argv, mpi=mpi, cwd=None)


def _start(cmd, cwd):
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=cwd,
                            start_new_session=True)


def _wait_until(proc, run, ready):
    """Wait until ``ready(state)`` holds for the run's state.json (the process still running)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            if ready(json.loads((run / "state.json").read_text())):
                return
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("the run did not get there in time")


def _stopped(proc, send):
    """Send a signal with ``send()``; return (status, stderr, seconds until the process ended)."""
    t0 = time.monotonic()
    send()
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, err, time.monotonic() - t0


@pytest.fixture(scope="module")
def reference(tmp_path_factory, arch):
    """An uninterrupted run of the configuration the tests below interrupt, with 2 worker processes."""
    cwd = tmp_path_factory.mktemp("reference")
    subprocess.run(_train_cmd(arch, "ref"), check=True, capture_output=True, env=ENV, cwd=cwd, timeout=TIMEOUT * 2)
    return cwd / "ref"


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_in_seconds_and_resumes_bit_identically(tmp_path, arch, reference):
    run = tmp_path / "run"
    proc = _start(_train_cmd(arch, run, 2, 0, "--checkpoint-every", "2"), tmp_path)
    _wait_until(proc, run, mid_epoch)
    # Slurm and docker signal every process: the worker processes ignore it, the main one stops the batch
    code, err, seconds = _stopped(proc, lambda: os.killpg(proc.pid, signal.SIGTERM))
    assert code == 143, err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(rf"cnnlab: stopped by SIGTERM at epoch \d+, step \d of 5; resume with: cnnlab train "
                        rf"--resume {re.escape(str(run))} --epochs {EPOCHS}", last), err
    assert seconds < 10, seconds
    state = files.read_state(run)
    assert state["status"] == "interrupted" and state["epoch_progress"] is not None
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == LOCK_FILE]
    done = subprocess.run(_cnnlab("train", "--resume", run, "--quiet", cwd=None), capture_output=True, text=True,
                          env=ENV, cwd=tmp_path, timeout=TIMEOUT * 2)
    assert done.returncode == 0, done.stderr
    assert_same_run(reference, run)
    print(f"SIGTERM to exit: {seconds:.2f} s")


@pytest.mark.slow
def test_checkpoint_every_then_kill_9_loses_at_most_the_interval(tmp_path, arch, reference):
    run = tmp_path / "run"
    proc = _start(_train_cmd(arch, run, 2, 0, "--checkpoint-every", "2"), tmp_path)
    _wait_until(proc, run, lambda s: s["epoch"] >= 1 and s["epoch_progress"] is not None)
    code, _, _ = _stopped(proc, lambda: os.killpg(proc.pid, signal.SIGKILL))
    assert code == -signal.SIGKILL
    state = files.read_state(run)
    last_end = 5 * state["epoch"]
    assert state["step"] - last_end in (2, 4) or state["epoch_progress"] is None    # saved within the epoch
    done = subprocess.run(_cnnlab("train", "--resume", run, "--quiet", cwd=None), capture_output=True, text=True,
                          env=ENV, cwd=tmp_path, timeout=TIMEOUT * 2)
    assert done.returncode == 0, done.stderr
    assert_same_run(reference, run)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process in /proc")
def test_sigterm_under_mpiexec_stops_every_rank_after_the_same_batch(tmp_path, arch):
    """SIGTERM to rank 1 alone, then to mpiexec (which forwards it to every rank): each time every rank stops
    after the same batch, rank 0 writes, the job ends with 143; resumed on 2 ranks the run ends bit-identical
    to an uninterrupted 2-rank run, and resumed on 1 process (the same 2 shards) within float32 rounding."""
    from test_distributed import _rank_pid
    subprocess.run(_train_cmd(arch, "ref", 2, 2), check=True, capture_output=True, env=ENV, cwd=tmp_path,
                   timeout=TIMEOUT * 2)
    for target, resume_ranks in (("rank 1", 2), ("mpiexec", 0)):
        run = tmp_path / target.replace(" ", "")
        proc = _start(_train_cmd(arch, run, 2, 2, "--checkpoint-every", "2"), tmp_path)
        _wait_until(proc, run, mid_epoch)
        pid = _rank_pid(1, run) if target == "rank 1" else proc.pid
        code, err, seconds = _stopped(proc, lambda: os.kill(pid, signal.SIGTERM))
        assert code == 143, (target, err)
        assert err.count("cnnlab: stopped by SIGTERM at epoch") == 1, err          # rank 0 alone says it
        assert seconds < 10, (target, seconds)
        state = files.read_state(run)
        assert state["status"] == "interrupted" and state["epoch_progress"] is not None
        done = subprocess.run(_cnnlab("train", "--resume", run, "--quiet", mpi=resume_ranks, cwd=None),
                              capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=TIMEOUT * 2)
        assert done.returncode == 0, done.stderr
        if resume_ranks == 2:
            assert_same_run(tmp_path / "ref", run)
        else:
            a, b = load_file(str(tmp_path / "ref" / "checkpoint.safetensors")), load_file(str(run / "checkpoint.safetensors"))
            for k in a:        # the same shard gradients, summed in another order: see test_distributed
                assert np.abs(a[k] - b[k]).max() <= 1e-5, k


# ---------------------------------------------------------------------------
# docs/distributed.md's Slurm script, with a fake scontrol and srun
# ---------------------------------------------------------------------------
def slurm_script(settings) -> str:
    """The batch script of docs/distributed.md, with its settings lines (``RUN=``, ``EPOCHS=``, ...) replaced."""
    doc = (Path(__file__).parent.parent / "docs" / "distributed.md").read_text()
    block = doc.split("<!-- slurm-requeue-script", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    for name, value in settings.items():
        block, n = re.subn(rf"^{name}=.*$", lambda m: f"{name}={value}", block, flags=re.M)
        assert n == 1, name
    return block


FAKE = {"scontrol": 'echo "$*" >> "$HOME/scontrol.log"\n',
        "srun": 'while [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n',          # srun --mpi=pmi2 CMD...
        "cnnlab": f'exec "{sys.executable}" -m cnnlab "$@"\n'}


@pytest.mark.slow
def test_the_slurm_script_requeues_on_its_time_limit_and_resumes(tmp_path, arch, reference):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "venvs" / "cnnlab" / "bin").mkdir(parents=True)
    (tmp_path / "venvs" / "cnnlab" / "bin" / "activate").write_text("")
    run = tmp_path / "runs" / "job"
    options = " ".join([*QUICK, "--model", str(arch), "--workers", "2"]).replace("--quiet", "")
    script = tmp_path / "job.sh"
    script.write_text(slurm_script({"RUN": f'"{run}"', "EPOCHS": EPOCHS, "OPTIONS": f'"{options}"'}))
    env = {**ENV, "HOME": str(tmp_path), "SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def job():
        return subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=tmp_path, start_new_session=True)

    first = job()
    _wait_until(first, run, lambda s: s["epoch"] >= 2)
    code, err, _ = _stopped(first, lambda: os.kill(first.pid, signal.SIGTERM))   # the batch shell alone
    assert code == 143, err
    assert "cnnlab: stopped by SIGTERM at epoch" in err, err
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    assert files.read_state(run)["status"] == "interrupted"

    second = job()                                       # the requeued job: the same script, from the top
    out, err = second.communicate(timeout=TIMEOUT * 2)
    assert second.returncode == 0, err
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    assert_same_run(reference, run)

    third = job()                                        # requeued once too often: nothing left to do
    out, err = third.communicate(timeout=TIMEOUT)
    assert third.returncode == 0 and out.strip() == f"{run} is complete", err
