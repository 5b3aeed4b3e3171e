"""The ``cnnlab`` command end to end on the built-in ``shapes`` data."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import cli, runs
from cnnlab.datasets import load_shapes
from cnnlab.explain.subject import DefaultSubject
from cnnlab.training import Callback

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--dataset", "shapes", "--model", "tiny_cnn", "--limit", "200", "--batch-size", "50", "--quiet"]


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert cli.main(["train", *QUICK, "--epochs", "2", "--val-split", "0.2", "--out", str(out)]) == 0
    return out


def test_train_writes_a_run_and_reports(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", *QUICK, "--epochs", "1", "--out", out, "--seed", "4",
                            "--optimizer", "adam", "--augment", "translate=1", "--label-smoothing", "0.1")
    assert code == 0, err
    assert "test accuracy:" in stdout and f"run directory: {out}" in stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["optimizer"]["name"] == "adam" and cfg["optimizer"]["lr"] == 0.001 and cfg["seed"] == 4
    assert cfg["augment"] == "translate=1" and cfg["label_smoothing"] == 0.1 and cfg["limit"] == 200
    assert json.loads((out / "architecture.json").read_text())["loss"]["config"]["label_smoothing"] == 0.1
    assert (out / "evaluation.json").is_file() and (out / "history.png").is_file()


def test_train_prints_epochs_unless_quiet(tmp_path, capsys):
    code, _, err = run(capsys, "train", *QUICK[:-1], "--epochs", "1", "--out", tmp_path / "r")
    assert code == 0 and "epoch 1/1" in err


def test_train_default_out_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(capsys, "train", *QUICK, "--epochs", "1", "--model", "lenet5")
    assert code == 0
    dirs = list((tmp_path / "runs").iterdir())
    assert len(dirs) == 1 and dirs[0].name.startswith("shapes-lenet5-")
    assert (dirs[0] / "model.safetensors").is_file()


def test_train_with_json_architecture(tmp_path, capsys):
    arch = tmp_path / "small.json"
    arch.write_text(json.dumps({"layers": [{"class": "Conv2D", "config": {"filters": 4, "kernel_size": 3}},
                                           {"class": "ReLU"}, {"class": "MaxPool2D", "config": {"pool_size": 2}},
                                           {"class": "Flatten"}, {"class": "Dense", "config": {"units": 10}}]}))
    code, _, err = run(capsys, "train", *QUICK, "--model", arch, "--epochs", "1", "--out", tmp_path / "r",
                       "--snapshot-filters", "2")
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "architecture.json").read_text())["input_shape"] == [28, 28, 1]
    assert (tmp_path / "r" / "filters.safetensors").is_file()
    arch.write_text(json.dumps({"layers": [{"class": "Flatten"}, {"class": "Dense", "config": {"units": 3}}]}))
    code, _, err = run(capsys, "train", *QUICK, "--model", arch, "--epochs", "1", "--out", tmp_path / "r2")
    assert code == 2 and "outputs 3 classes but the dataset has 10" in err and "Traceback" not in err


def test_resume_from_the_command_line(tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(capsys, "train", *QUICK, "--epochs", "2", "--schedule", "constant", "--out", full)[0] == 0
    assert run(capsys, "train", *QUICK, "--epochs", "1", "--schedule", "constant", "--out", part)[0] == 0
    code, stdout, err = run(capsys, "train", "--resume", part, "--epochs", "2", "--quiet")
    assert code == 0, err
    assert f"run directory: {part}" in stdout
    a, b = (json.loads((d / "history.json").read_text()) for d in (full, part))
    assert a["loss"] == b["loss"]
    code, _, err = run(capsys, "train", "--resume", part, "--epochs", "3", "--lr", "0.1")
    assert code == 2 and "--lr cannot be changed when resuming" in err
    code, _, err = run(capsys, "train", "--resume", part, "--epochs", "2")
    assert code == 2 and "already completed 2 epoch" in err


def test_ctrl_c_keeps_checkpoint_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    class CtrlC(Callback):
        def on_batch_end(self, trainer, step, loss):
            if step == 6:                                   # epoch 2 of 4 steps each
                raise KeyboardInterrupt

    original = runs.run_training
    monkeypatch.setattr(runs, "run_training", lambda *a, **kw: original(*a, **kw, callbacks=[CtrlC()]))
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", *QUICK, "--epochs", "3", "--out", out)
    assert code == 130
    assert "keeps the checkpoint of epoch 1 of 3" in err and f"cnnlab train --resume {out} --epochs 3" in err
    assert "Traceback" not in err
    assert json.loads((out / "state.json").read_text())["epoch"] == 1
    monkeypatch.undo()
    assert run(capsys, "train", "--resume", out, "--quiet")[0] == 0
    assert json.loads((out / "state.json").read_text())["epoch"] == 3


def test_divergence_message_and_exit_code(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", *QUICK, "--epochs", "2", "--lr", "1e30", "--schedule", "constant",
                       "--out", out)
    assert code == 1 and "training diverged" in err and "keeps the checkpoint of epoch 0" in err
    assert "Traceback" not in err and "RuntimeWarning" not in err
    assert json.loads((out / "state.json").read_text())["status"] == "diverged"


def test_evaluate(trained, tmp_path, capsys):
    code, stdout, err = run(capsys, "evaluate", trained, "--out", tmp_path / "ev")
    assert code == 0, err
    assert "shapes test set: accuracy" in stdout and "horizontal line" in stdout and "T-junction" in stdout
    ev = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert ev["dataset"] == "shapes" and ev["num_images"] == 1000 and len(ev["class_names"]) == 10
    assert np.array(ev["confusion_matrix"]).sum() == 1000
    with Image.open(tmp_path / "ev" / "confusion_matrix.png") as img:
        assert img.size[0] > 400
    code, stdout, _ = run(capsys, "evaluate", trained / "model.safetensors", "--dataset", "shapes", "--limit", "100",
                          "--out", tmp_path / "ev2")
    assert code == 0 and "on 100 images" in stdout


def test_evaluate_bare_model_needs_a_dataset(trained, tmp_path, capsys):
    bare = tmp_path / "m.safetensors"
    bare.write_bytes((trained / "model.safetensors").read_bytes())
    code, _, err = run(capsys, "evaluate", bare)
    assert code == 2 and "--dataset" in err


def test_predict(trained, tmp_path, capsys):
    (x, y), _ = load_shapes(4, 4, seed=9)
    paths = []
    for i in range(2):
        p = tmp_path / f"img{i}.png"
        Image.fromarray((x[i, :, :, 0] * 255).astype(np.uint8)).resize((56, 56)).convert("RGB").save(p)
        paths.append(p)
    code, stdout, err = run(capsys, "predict", trained, *paths, "--top-k", "2")
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0] == str(paths[0]) and lines[1].strip().startswith("1. ") and lines[2].strip().startswith("2. ")
    assert len(lines) == 6 and "%" in lines[1]
    names = runs.read_config(trained)["data"]["class_names"]
    assert any(n in lines[1] for n in names)
    dark = tmp_path / "dark_on_light.png"
    Image.fromarray(255 - (x[0, :, :, 0] * 255).astype(np.uint8)).save(dark)
    code, inverted, err = run(capsys, "predict", trained, dark)
    assert code == 0 and "inverted" in err and "--keep-background" in err
    code, forced, err = run(capsys, "predict", trained, dark, "--invert")
    assert code == 0 and "inverted" in err and forced == inverted
    code, kept, err = run(capsys, "predict", trained, dark, "--keep-background")
    assert code == 0 and "inverted" not in err and kept != inverted
    code, _, err = run(capsys, "predict", trained, dark, "--keep-background", "--invert")
    assert code == 2 and "contradict" in err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    code, _, err = run(capsys, "predict", trained, bad)
    assert code == 2 and "bad.png is not a picture" in err and "Traceback" not in err


def test_summary(trained, tmp_path, capsys):
    for target in (trained, trained / "model.safetensors", trained / "architecture.json", "mnist_fast"):
        code, stdout, err = run(capsys, "summary", target)
        assert code == 0, err
        assert "Total params" in stdout
    code, stdout, _ = run(capsys, "summary", "cifar_small", "--num-classes", "5")
    assert code == 0 and "(None, 5)" in stdout
    arch = tmp_path / "a.json"
    arch.write_text(json.dumps({"layers": [{"class": "Flatten"}, {"class": "Dense", "config": {"units": 4}}]}))
    code, _, err = run(capsys, "summary", arch)
    assert code == 2 and "--input-shape" in err
    code, stdout, _ = run(capsys, "summary", arch, "--input-shape", "8,8,1")
    assert code == 0 and "256" in stdout
    code, _, err = run(capsys, "summary", "resnet999")
    assert code == 2 and "unknown model" in err


def test_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = run(capsys, "demo", "--out", out, "--epochs", "1", "--quiet")
    assert code == 0, err
    assert "test accuracy" in stdout and str(out) in stdout and "filters.safetensors" in stdout
    for name in ("model.safetensors", "evaluation.json", "confusion_matrix.png", "history.png", "filters.safetensors",
                 "filters.png"):
        assert (out / name).is_file()
    # the learned filters as a picture, named in the summary: a PNG of LeNet-5's six 5x5 filters and a colour bar
    assert any(line.split()[:1] == ["filters.png"] and "learned filters" in line for line in stdout.splitlines())
    with Image.open(out / "filters.png") as im:
        im.verify()
    with Image.open(out / "filters.png") as im:
        assert im.format == "PNG" and 300 <= im.size[0] <= 3000 and 100 <= im.size[1] <= 3000, im.size
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 50     # not a blank canvas


@pytest.mark.parametrize("name, content", [
    ("config.json", "{oops"), ("state.json", '{"epoch": "one"}'), ("checkpoint.safetensors", b"\x00\x01")])
def test_corrupt_files_give_one_clear_message(tmp_path, trained, capsys, name, content):
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    for p in trained.iterdir():
        (run_dir / p.name).write_bytes(p.read_bytes())
    target = run_dir / name
    target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    code, _, err = run(capsys, "train", "--resume", run_dir, "--epochs", "3")
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("cnnlab: error: ")]
    assert len(errors) == 1 and str(target) in errors[0] and "Traceback" not in err
    code, _, err = run(capsys, "--debug", "train", "--resume", run_dir, "--epochs", "3")
    assert code == 2 and "Traceback" in err


def test_usage_errors(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--epochs", "zero")
    assert code == 2 and "positive integer" in err
    code, _, err = run(capsys, "train", "--optimizer", "rmsprop")
    assert code == 2 and "invalid choice" in err
    code, _, err = run(capsys, "train", *QUICK, "--optimizer", "adam", "--momentum", "0.9", "--out", tmp_path / "x")
    assert code == 2 and "momentum applies to sgd only" in err and "Traceback" not in err
    code, _, err = run(capsys, "train", *QUICK, "--augment", "wobble", "--out", tmp_path / "x")
    assert code == 2 and "unknown augmentation" in err
    code, _, err = run(capsys, "evaluate", tmp_path / "nothing")
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys)
    assert code == 2 and "COMMAND" in err
    assert run(capsys, "--help")[0] == 0
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "Augmentation spec" in out


def test_explain_and_report_are_commands(capsys):
    for argv in (("explain", "conv", "--help"), ("explain", "saliency", "--help"), ("report", "--help")):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and "--out" in out, argv
    code, out, _ = run(capsys, "explain", "--help")        # the tool is optional: the bare command runs them all
    assert code == 0 and "usage: cnnlab explain [TOOL] [options]" in out and "saliency" in out


@pytest.mark.parametrize("argv, expected", [      # no --model: the default subject (trained when first needed)
    (["explain"], {"data_dir": None, "model": DefaultSubject("runs"), "seed": 0}),
    (["explain", "--data-dir", "DATA"], {"data_dir": "DATA", "model": DefaultSubject("runs"), "seed": 0}),
    (["explain", "--data-dir", "DATA", "--seed", "3", "--model", "RUN"], {"data_dir": "DATA", "model": "RUN", "seed": 3}),
    (["explain", "all", "--data-dir", "DATA", "--runs", "R"], {"data_dir": "DATA", "model": DefaultSubject("R"),
                                                              "seed": 0}),
])
def test_explain_without_a_tool_name_runs_them_all_with_its_options(monkeypatch, capsys, tmp_path, argv, expected):
    from cnnlab.explain import index
    seen = {}
    monkeypatch.setattr(index, "explain_all", lambda out, **kw: seen.update(kw, out=out))
    code, out, err = run(capsys, *argv, "--out", tmp_path / "x")
    assert code == 0 and "invalid choice" not in err and "index.html" in out, err
    assert {k: seen[k] for k in expected} == expected and seen["out"] == str(tmp_path / "x")
    code, _, err = run(capsys, "explain", "--no-such-option")
    assert code == 2 and "unrecognized arguments: --no-such-option" in err


def _env():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("PYTHONWARNINGS", None)
    return env


def test_python_dash_m_subprocess(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", *QUICK, "--epochs", "1", "--out", str(out)],
                          capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and (out / "model.safetensors").is_file()
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "evaluate", str(tmp_path / "missing")],
                          capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "missing" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_real_ctrl_c_in_a_subprocess(tmp_path, workers):
    """SIGINT to the command's process group (worker processes too) while it trains: exit 130, a consistent checkpoint."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", "--dataset", "shapes", "--model", "tiny_cnn",
                             "--limit", "300", "--epochs", "500", "--out", str(out), "--quiet", "--workers", workers],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if json.loads((out / "state.json").read_text())["epoch"] >= 1:
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)                 # as a terminal does: to every process of the job
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "interrupted" and state["epoch"] >= 1
    model_t, _, ckpt = runs.read_checkpoint(out)
    assert ckpt["epoch"] == state["epoch"] and ckpt["step"] == state["step"]
