"""Run directories: layout, exact resume, Ctrl-C, divergence, atomic writes, corrupt files."""
import csv
import json
import os
import re

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import cnnlab
from cnnlab import runs
from cnnlab._io import CnnlabFileError, atomic_write, write_json
from cnnlab.datasets import load_dataset
from cnnlab.training import Callback, TrainingDiverged

N_TRAIN, N_TEST = 240, 60


@pytest.fixture(scope="module")
def data():
    return load_dataset("shapes", n_train=N_TRAIN, n_test=N_TEST)


def config(**kw):
    base = dict(dataset="shapes", dataset_options={"n_train": N_TRAIN, "n_test": N_TEST}, model="tiny_cnn",
                epochs=2, batch_size=32, lr=0.05, schedule="onecycle", seed=3)
    base.update(kw)
    return runs.make_config(**base)


def train(cfg, out, data, **kw):
    return runs.run_training(cfg, out, verbose=0, data=data, **kw)


def weights(path):
    return load_file(str(path))


def assert_same_tensors(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


class InterruptAt(Callback):
    """Raise KeyboardInterrupt at a given optimizer step, as Ctrl-C would."""

    def __init__(self, step):
        self.at = step

    def on_batch_end(self, trainer, step, loss):
        if step == self.at:
            raise KeyboardInterrupt


# ---------------------------------------------------------------------------
def test_run_directory_layout(tmp_path, data):
    out = tmp_path / "run"
    result = train(config(val_split=0.25, snapshot_filters=4), out, data)
    for name in ["model.safetensors", "last.safetensors", "architecture.json", "config.json", "checkpoint.safetensors",
                 "state.json", "history.json", "history.csv", "history.png", "filters.safetensors",
                 "evaluation.json", "confusion_matrix.png"]:
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"] == "shapes" and cfg["model"] == "tiny_cnn" and cfg["epochs"] == 2
    assert cfg["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}
    assert cfg["schedule"] == "onecycle" and cfg["augment"] == "none" and cfg["seed"] == 3
    assert cfg["val_split"] == 0.25 and cfg["loss"] == "softmax" and cfg["label_smoothing"] == 0.0
    assert cfg["data"]["train_size"] == 180 and cfg["data"]["val_size"] == 60 and cfg["data"]["test_size"] == N_TEST
    assert cfg["data"]["class_names"][0] == "horizontal line"
    assert isinstance(cfg["workers"], int) and cfg["workers"] >= 1

    arch = json.loads((out / "architecture.json").read_text())
    assert arch["input_shape"] == [28, 28, 1] and arch["layers"][0]["class"] == "Conv2D"

    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 2 and state["step"] == 2 * 6 and state["status"] == "completed"
    assert state["rng_state"]["bit_generator"] == "PCG64"
    assert state["best_epoch"] in (1, 2) and 0 <= state["best_metric"] <= 1
    assert state["split_seed"] == runs.split_seed_for(3) and state["cnnlab_version"] == cnnlab.__version__
    assert state["test"]["accuracy"] == result["test"]["accuracy"]

    hist = json.loads((out / "history.json").read_text())
    assert list(hist) == runs.HISTORY_COLUMNS
    assert hist["epoch"] == [1, 2] and all(len(v) == 2 for v in hist.values())
    assert all(isinstance(v, float) for k in ("loss", "val_loss", "val_accuracy", "lr", "seconds") for v in hist[k])
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == runs.HISTORY_COLUMNS and len(rows) == 2
    assert [float(r["val_accuracy"]) for r in rows] == hist["val_accuracy"]
    assert [float(r["loss"]) for r in rows] == hist["loss"]

    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["num_images"] == N_TEST and len(ev["confusion_matrix"]) == 10
    assert sum(map(sum, ev["confusion_matrix"])) == N_TEST and len(ev["per_class_accuracy"]) == 10
    assert ev["accuracy"] == result["test"]["accuracy"]

    model = cnnlab.load(out)                                # model.safetensors = best by validation accuracy
    assert model.evaluate(*data[1])["accuracy"] == ev["accuracy"]
    ckpt = weights(out / "checkpoint.safetensors")
    last = weights(out / "last.safetensors")
    assert_same_tensors({k[6:]: v for k, v in ckpt.items() if k.startswith("model/")}, last)
    assert "optimizer/__steps__" in ckpt and int(ckpt["optimizer/__steps__"][0]) == 12
    if state["best_epoch"] == 2:
        assert_same_tensors(weights(out / "model.safetensors"), last)


def test_history_without_validation_has_empty_val_columns(tmp_path, data):
    out = tmp_path / "run"
    train(config(epochs=1), out, data)
    hist = json.loads((out / "history.json").read_text())
    assert hist["val_loss"] == [None] and hist["val_accuracy"] == [None]
    rows = list(csv.DictReader(open(out / "history.csv", newline="")))
    assert rows[0]["val_loss"] == "" and float(rows[0]["loss"]) == hist["loss"][0]
    assert_same_tensors(weights(out / "model.safetensors"), weights(out / "last.safetensors"))


def test_filter_snapshots_named_by_step(tmp_path, data):
    out = tmp_path / "run"
    result = train(config(snapshot_filters=4, val_split=0.0), out, data)    # 240 / 32 -> 8 steps per epoch
    with safe_open(str(out / "filters.safetensors"), framework="np") as f:
        names = sorted(f.keys())
        meta = f.metadata()
        snaps = {k: f.get_tensor(k) for k in names}
    assert names == ["step_0000000", "step_0000004", "step_0000008", "step_0000012", "step_0000016"]
    assert meta["layer"] == "conv2d" and meta["every"] == "4" and json.loads(meta["epoch_end_steps"]) == [8, 16]
    initial = cnnlab.models.tiny_cnn(seed=3)["conv2d"].params["kernel"]
    assert np.array_equal(snaps["step_0000000"], initial)
    assert np.array_equal(snaps["step_0000016"], result["model"]["conv2d"].params["kernel"])
    assert not np.array_equal(snaps["step_0000004"], initial)


def test_snapshot_filters_need_a_conv_layer(tmp_path, data):
    arch = tmp_path / "mlp.json"
    write_json(arch, {"layers": [{"class": "Flatten"}, {"class": "Dense", "config": {"units": 10}}]})
    with pytest.raises(ValueError, match="Conv2D"):
        train(config(model=str(arch), snapshot_filters=2), tmp_path / "run", data)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------
def _compare_runs(a, b):
    for name in ("checkpoint.safetensors", "last.safetensors", "model.safetensors"):
        assert_same_tensors(weights(a / name), weights(b / name))
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (a, b))
    for k in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert ha[k] == hb[k], k
    sa, sb = (json.loads((d / "state.json").read_text()) for d in (a, b))
    for k in ("epoch", "step", "rng_state", "best_metric", "best_epoch", "split_seed"):
        assert sa[k] == sb[k], k


def test_interrupt_then_resume_is_bit_identical(tmp_path, data):
    cfg = config(epochs=3, augment="translate=2,rotate=10", val_split=0.2, snapshot_filters=5)
    full, part = tmp_path / "full", tmp_path / "part"
    train(cfg, full, data)
    with pytest.raises(runs.TrainingInterrupted) as info:        # Ctrl-C in the middle of epoch 2
        train(cfg, part, data, callbacks=[InterruptAt(6 + 3)])
    assert info.value.epoch == 1 and info.value.epochs == 3
    assert info.value.resume_command == f"cnnlab train --resume {part} --epochs 3"
    state = json.loads((part / "state.json").read_text())
    assert state["epoch"] == 1 and state["step"] == 6 and state["status"] == "interrupted"
    assert json.loads((part / "history.json").read_text())["epoch"] == [1]

    result = runs.resume_training(part, epochs=3, verbose=0, data=data)
    assert result["epochs"] == 3 and result["status"] == "completed"
    _compare_runs(full, part)
    assert_same_tensors(weights(full / "filters.safetensors"), weights(part / "filters.safetensors"))


def test_resume_continues_to_more_epochs(tmp_path, data):
    # The constant schedule does not depend on the total, so 1 epoch + resume to 2 equals 2 epochs.
    cfg = dict(schedule="constant", optimizer="adam", lr=0.003, augment="hflip", val_split=0.2, workers=1)
    full, part = tmp_path / "full", tmp_path / "part"
    train(config(epochs=2, **cfg), full, data)
    train(config(epochs=1, **cfg), part, data)
    with pytest.raises(ValueError, match="already completed 1 epoch"):
        runs.resume_training(part, epochs=1, verbose=0, data=data)
    runs.resume_training(part, epochs=2, verbose=0, data=data)
    _compare_runs(full, part)


def test_resume_restores_dropout_generator(tmp_path, data):
    arch = tmp_path / "drop.json"
    write_json(arch, {"layers": [{"class": "Conv2D", "config": {"filters": 4, "kernel_size": 3}},
                                 {"class": "ReLU"}, {"class": "MaxPool2D", "config": {"pool_size": 2}},
                                 {"class": "Flatten"}, {"class": "Dropout", "config": {"rate": 0.3}},
                                 {"class": "Dense", "config": {"units": 10}}]})
    cfg = config(model=str(arch), epochs=2, schedule="cosine")
    train(cfg, tmp_path / "full", data)
    with pytest.raises(runs.TrainingInterrupted):
        train(cfg, tmp_path / "part", data, callbacks=[InterruptAt(10)])
    runs.resume_training(tmp_path / "part", verbose=0, data=data)
    assert_same_tensors(weights(tmp_path / "full" / "last.safetensors"),
                        weights(tmp_path / "part" / "last.safetensors"))


def test_interrupt_in_first_epoch_resumes_from_the_start(tmp_path, data):
    cfg = config(epochs=1)
    train(cfg, tmp_path / "full", data)
    with pytest.raises(runs.TrainingInterrupted) as info:
        train(cfg, tmp_path / "part", data, callbacks=[InterruptAt(2)])
    assert info.value.epoch == 0
    runs.resume_training(tmp_path / "part", verbose=0, data=data)
    assert_same_tensors(weights(tmp_path / "full" / "checkpoint.safetensors"),
                        weights(tmp_path / "part" / "checkpoint.safetensors"))


def test_new_run_refuses_an_existing_run(tmp_path, data):
    train(config(epochs=1), tmp_path / "run", data)
    with pytest.raises(ValueError, match="already holds a run"):
        train(config(epochs=1), tmp_path / "run", data)


def test_resume_refuses_different_data(tmp_path, data):
    train(config(epochs=1), tmp_path / "run", data)
    (x, y), test, info = data
    with pytest.raises(ValueError, match="differ"):
        runs.resume_training(tmp_path / "run", epochs=2, verbose=0, data=((x[:200], y[:200]), test, info))


# ---------------------------------------------------------------------------
# Divergence and early stopping
# ---------------------------------------------------------------------------
class BlowUpAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == 0:
            self.weights = {k: v.copy() for k, v in trainer.model.state_dict().items()}
            trainer.optimizer.lr = 1e12


def test_divergence_keeps_last_good_checkpoint(tmp_path, data):
    out = tmp_path / "run"
    blow = BlowUpAfterFirstEpoch()
    with pytest.raises(TrainingDiverged, match="keeps the checkpoint of epoch 1"):
        train(config(epochs=3, schedule="constant"), out, data, callbacks=[blow])
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 1 and state["step"] == 8 and state["status"] == "diverged"
    assert "nan" in state["error"].lower() or "inf" in state["error"]
    ckpt = weights(out / "checkpoint.safetensors")
    assert_same_tensors({k[6:]: v for k, v in ckpt.items() if k.startswith("model/")}, blow.weights)
    assert_same_tensors(weights(out / "last.safetensors"), blow.weights)
    assert len(json.loads((out / "history.json").read_text())["epoch"]) == 1
    runs.resume_training(out, epochs=2, verbose=0, data=data)       # the configured lr is sane again
    assert json.loads((out / "state.json").read_text())["epoch"] == 2


def test_huge_learning_rate_diverges_in_the_first_epoch(tmp_path, data):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="epoch 0"):
        train(config(epochs=2, lr=1e30, schedule="constant"), out, data)
    assert json.loads((out / "state.json").read_text())["epoch"] == 0
    assert_same_tensors(weights(out / "last.safetensors"), cnnlab.models.tiny_cnn(seed=3).state_dict())


def test_early_stopping(tmp_path, data):
    out = tmp_path / "run"
    result = train(config(epochs=6, lr=1e-12, schedule="constant", early_stopping=2), out, data)
    assert result["status"] == "stopped early" and result["epochs"] == 3 and result["best_epoch"] == 1
    assert "did not improve" in result["stop_reason"]
    assert json.loads((out / "state.json").read_text())["status"] == "stopped early"
    assert json.loads((out / "config.json").read_text())["val_split"] == 0.1


def test_early_stopping_continues_its_count_on_resume(tmp_path, data):
    """Interrupted in epoch 2 and resumed, early stopping still counts from the best epoch before the
    interruption (read back from state.json), so the run stops where an uninterrupted one does."""
    cfg = config(epochs=6, lr=1e-12, schedule="constant", early_stopping=2)
    full = train(cfg, tmp_path / "full", data)
    with pytest.raises(runs.TrainingInterrupted):
        train(cfg, tmp_path / "part", data, callbacks=[InterruptAt(7 + 3)])    # 7 steps per epoch
    part = runs.resume_training(tmp_path / "part", verbose=0, data=data)
    assert (full["epochs"], full["best_epoch"]) == (3, 1)
    assert (part["epochs"], part["best_epoch"], part["stop_reason"]) == (3, 1, full["stop_reason"])


# ---------------------------------------------------------------------------
# Atomic writes and corrupt files
# ---------------------------------------------------------------------------
def test_crash_mid_write_keeps_old_file(tmp_path):
    path = tmp_path / "state.json"
    write_json(path, {"epoch": 1})

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write('{"epoch": 2, "ste')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["state.json"]


def test_crash_while_checkpointing_keeps_old_checkpoint(tmp_path, data, monkeypatch):
    out = tmp_path / "run"
    train(config(epochs=1), out, data)
    before = (out / "checkpoint.safetensors").read_bytes()
    import safetensors.numpy

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", broken_save)
    with pytest.raises(runs.TrainingInterrupted):
        runs.resume_training(out, epochs=2, verbose=0, data=data)
    monkeypatch.undo()
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    runs.resume_training(out, epochs=2, verbose=0, data=data)


@pytest.fixture()
def finished_run(tmp_path, data):
    out = tmp_path / "run"
    train(config(epochs=1), out, data)
    return out


@pytest.mark.parametrize("name, content, message", [
    ("config.json", "{not json", "config.json is not valid JSON"),
    ("config.json", '{"dataset": "shapes"}', "config.json: missing key"),
    ("config.json", None, "config.json does not exist"),
    ("state.json", "[1, 2", "state.json is not valid JSON"),
    ("state.json", '{"epoch": 1}', "state.json: missing key"),
    ("state.json", None, "state.json does not exist"),
    ("checkpoint.safetensors", b"garbage", "checkpoint.safetensors is not a readable safetensors file"),
    ("checkpoint.safetensors", None, "checkpoint.safetensors does not exist"),
    ("architecture.json", '{"layers": [{"class": "Nope"}]}', "architecture.json: layer 0 has unknown class"),
])
def test_corrupt_run_files_name_the_file(finished_run, data, name, content, message):
    path = finished_run / name
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(CnnlabFileError, match=message.replace("(", r"\(")):
        runs.resume_training(finished_run, epochs=2, verbose=0, data=data)


def test_state_with_a_bad_generator_state(finished_run, data):
    state = json.loads((finished_run / "state.json").read_text())
    state["rng_state"] = {"bit_generator": "MT19937", "state": {"key": [1, 2]}}
    write_json(finished_run / "state.json", state)
    with pytest.raises(CnnlabFileError, match="state.json: rng_state cannot be restored"):
        runs.resume_training(finished_run, epochs=2, verbose=0, data=data)


def test_checkpoint_of_another_model(finished_run, data):
    other = cnnlab.models.lenet5()
    opt = runs.make_optimizer(runs.make_config())
    runs.write_checkpoint(finished_run, other, opt, 1, 8)
    with pytest.raises(CnnlabFileError, match="checkpoint.safetensors does not match the model"):
        runs.resume_training(finished_run, epochs=2, verbose=0, data=data)


def test_checkpoint_with_wrong_shapes(finished_run, data):
    path = finished_run / "checkpoint.safetensors"
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["optimizer/dense.kernel/velocity"] = np.zeros((3, 3), np.float32)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CnnlabFileError, match=r"checkpoint.safetensors: optimizer state 'dense.kernel/velocity' has shape"):
        runs.resume_training(finished_run, epochs=2, verbose=0, data=data)


def test_state_and_checkpoint_from_different_epochs(finished_run, data):
    state = json.loads((finished_run / "state.json").read_text())
    write_json(finished_run / "state.json", {**state, "epoch": 0, "step": 1})   # neither checkpoint's generation
    with pytest.raises(CnnlabFileError, match="does not match"):
        runs.resume_training(finished_run, epochs=2, verbose=0, data=data)


# ---------------------------------------------------------------------------
# Configuration and models
# ---------------------------------------------------------------------------
def test_make_config_defaults_and_validation():
    c = runs.make_config()
    assert c["dataset"] == "mnist" and c["model"] == "lenet5" and c["epochs"] == 5 and c["batch_size"] == 64
    assert c["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}
    assert c["schedule"] == "onecycle" and c["augment"] == "none" and c["val_split"] == 0.0
    assert runs.make_config(optimizer="adam")["optimizer"] == {"name": "adam", "lr": 0.001, "momentum": None,
                                                               "weight_decay": 0.0}
    assert runs.make_config(augment="mnist")["augment"].startswith("rotate=10")
    for bad, match in [(dict(optimizer="adam", momentum=0.9), "momentum applies to sgd"),
                       (dict(early_stopping=3, val_split=0.0), "needs val_split"),
                       (dict(augment="wobble"), "unknown augmentation"),
                       (dict(lr=-1), "learning rate"), (dict(epochs=0), "epochs"),
                       (dict(loss="svm", label_smoothing=0.1), "softmax loss only"),
                       (dict(schedule="linear"), "schedule"), (dict(colour="red"), "unknown training option")]:
        with pytest.raises(ValueError, match=match):
            runs.make_config(**bad)


def test_build_model_from_json_and_checks(tmp_path):
    arch = tmp_path / "a.json"
    write_json(arch, {"layers": [{"class": "Conv2D", "config": {"filters": 8, "kernel_size": 3}}, {"class": "ReLU"},
                                 {"class": "Flatten"}, {"class": "Dense", "config": {"units": 10}}]})
    m = runs.build_model(str(arch), (28, 28, 1), 10, seed=5)
    assert m.input_shape == (28, 28, 1) and m.seed == 5 and m.num_classes == 10
    with pytest.raises(ValueError, match="outputs 10 classes but the dataset has 4"):
        runs.build_model(str(arch), (28, 28, 1), 4)
    write_json(arch, {"input_shape": [32, 32, 3], "layers": [{"class": "Flatten"},
                                                              {"class": "Dense", "config": {"units": 10}}]})
    with pytest.raises(ValueError, match=r"takes inputs of shape \(32, 32, 3\)"):
        runs.build_model(str(arch), (28, 28, 1), 10)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        runs.build_model("resnet", (28, 28, 1), 10)
    with pytest.raises(CnnlabFileError, match="does not exist"):
        runs.build_model(str(tmp_path / "missing.json"), (28, 28, 1), 10)


@pytest.mark.parametrize("name", sorted(cnnlab.models.ZOO))
def test_zoo_models_train_a_step(name):
    fn = cnnlab.models.ZOO[name]
    shape = (32, 32, 3) if name == "cifar_small" else (28, 28, 1)
    m = fn(input_shape=shape, num_classes=7, seed=1)
    assert m.num_classes == 7 and m.input_shape == shape
    x = np.random.default_rng(0).random((4,) + shape, dtype=np.float32)
    m.fit(x, np.arange(4) % 7, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(m.predict(x)).all()
    assert cnnlab.models.get(name.replace("_", "-")) is fn


@pytest.mark.parametrize("name, content, message", [
    ("history.json", '{"epoch": [1], "loss": "low", "accuracy": [0.5]}', "history .*history.json: expected an object"),
    ("history.json", '{"epoch": [1], "loss": [true], "accuracy": [0.5]}', "history .*history.json: 'loss' holds True"),
    ("state.json", '{"epoch": 1}', "run state .*state.json: missing key"),
    ("state.json", "[1, 2", "state.json is not valid JSON"),
    ("evaluation.json", '{"accuracy": 0.5, "confusion_matrix": [[1, 2]]}', "evaluation.json: confusion_matrix must"),
    ("config.json", '{"dataset": 3}', "config.json: missing key"),
])
def test_report_refuses_a_damaged_run_file_in_one_line(finished_run, capsys, name, content, message):
    from cnnlab.cli import main
    (finished_run / name).write_text(content)
    assert main(["report", str(finished_run), "--limit", "5"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and "\n" not in err and "Traceback" not in err
    assert re.search(message, err), err


@pytest.mark.parametrize("name, content, message", [
    ("config.json", '{"dataset": "shapes"}', "config.json: missing key"),
    ("filters.safetensors", b"garbage", "filters.safetensors is not a readable safetensors file"),
])
def test_explain_features_refuses_a_damaged_run_file_in_one_line(tmp_path, data, capsys, name, content, message):
    from cnnlab.cli import main
    run = tmp_path / "run"
    train(config(epochs=1, snapshot_filters=4), run, data)
    path = run / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    assert main(["explain", "features", "--model", str(run), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and "\n" not in err and message in err, err
    assert not (tmp_path / "out" / "features.json").exists()


def test_runs_written_before_still_load(finished_run, data):
    """A run directory as the earlier single-module layout wrote it (state without best_val_loss, history.png
    drawn the old way) still loads, reports and resumes."""
    state = json.loads((finished_run / "state.json").read_text())
    del state["best_val_loss"], state["best_metric_name"]
    write_json(finished_run / "state.json", state)
    assert runs.read_state(finished_run)["epoch"] == 1
    assert cnnlab.load(finished_run).num_params == cnnlab.models.tiny_cnn().num_params
    runs.resume_training(finished_run, epochs=2, verbose=0, data=data)
    assert json.loads((finished_run / "state.json").read_text())["epoch"] == 2


@pytest.mark.parametrize("name, change, message", [
    ("state.json", {"best_metric": "high"}, "best_metric must be a number or null, found 'high'"),
    ("state.json", {"best_val_loss": [1]}, "best_val_loss must be a number or null"),
    ("state.json", {"step": -1}, "step must be a non-negative integer, found -1"),
    ("state.json", {"status": 3}, "status must be a string, found 3"),
    ("history.json", {"loss": ["x"]}, "'loss' holds 'x', not a number"),
    ("history.json", {"accuracy": []}, "'accuracy' has 0 entries, the checkpoint is at epoch 1"),
])
def test_run_files_with_wrong_types_name_the_field(finished_run, data, name, change, message):
    path = finished_run / name
    write_json(path, {**json.loads(path.read_text()), **change})
    with pytest.raises(CnnlabFileError, match=re.escape(message)):
        runs.resume_training(finished_run, epochs=2, verbose=0, data=data)
