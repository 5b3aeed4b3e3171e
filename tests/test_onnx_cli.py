"""``cnnlab export`` and ``cnnlab import``: a run goes out as ONNX and comes back as a run directory
that evaluate, predict and train --resume work on; errors are one line."""
import json
import sys

import numpy as np
import pytest

import cnnlab
from cnnlab import cli, runs
from cnnlab.datasets import load_dataset

from test_cli import run  # noqa: E402

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx_cli") / "run"
    assert cli.main(["train", "--dataset", "shapes", "--model", "tiny_cnn", "--limit", "200", "--batch-size", "50",
                     "--epochs", "1", "--quiet", "--workers", "1", "--out", str(out)]) == 0
    return out


def test_export_then_import_gives_a_run_with_the_same_predictions(trained, tmp_path, capsys):
    code, out, err = run(capsys, "export", trained, "--out", tmp_path / "m.onnx")
    assert code == 0 and "wrote" in out, err
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["class_names"]) == runs.read_config(trained)["data"]["class_names"]
    code, out, err = run(capsys, "import", tmp_path / "m.onnx", "--dataset", "shapes", "--out", tmp_path / "imp")
    assert code == 0, err
    imp = tmp_path / "imp"
    for name in (runs.CONFIG_FILE, runs.ARCHITECTURE_FILE, runs.MODEL_FILE, runs.CHECKPOINT_FILE, runs.STATE_FILE):
        assert (imp / name).is_file(), name
    assert runs.read_state(imp)["epoch"] == 0
    original, back = cnnlab.load(trained), cnnlab.load(imp)
    (_, _), (xt, _), _ = load_dataset("shapes", n_train=10, n_test=40)
    assert np.abs(original.predict(xt, workers=1) - back.predict(xt, workers=1)).max() <= 1e-6
    code, out, err = run(capsys, "evaluate", imp, "--limit", "100")
    assert code == 0 and "accuracy" in out, err
    # train --resume continues the imported run (here on a few images of the same dataset)
    data = load_dataset("shapes", n_train=64, n_test=16)
    result = runs.resume_training(imp, epochs=1, verbose=0, data=data, plot=False)
    assert result["epochs"] == 1 and runs.read_state(imp)["epoch"] == 1
    assert not np.array_equal(cnnlab.load(imp).layers[0].params["kernel"], back.layers[0].params["kernel"])


def test_channels_last_export_takes_nhwc(trained, tmp_path, capsys):
    code, _, err = run(capsys, "export", trained, "--out", tmp_path / "m.onnx", "--channels-last")
    assert code == 0, err
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"input": x})[0] - cnnlab.load(trained).predict(x, workers=1)).max() <= 1e-5


@pytest.mark.parametrize("argv,message", [
    (["export", "{run}", "--out", "{run}/model.safetensors"], r"exists already; choose another --out"),
    (["export", "{tmp}/none", "--out", "{tmp}/out.onnx"], r"none does not exist"),
    (["export", "{run}", "--out", "{tmp}/out.onnx", "--opset", "3"], r"opset must be an integer from 13"),
    (["import", "{tmp}/none.onnx", "--dataset", "shapes", "--out", "{tmp}/r"], r"ONNX file .*none.onnx does not exist"),
    (["import", "{tmp}/text.onnx", "--dataset", "shapes", "--out", "{tmp}/r"], r"text.onnx is not a readable ONNX model"),
    (["import", "{tmp}/m.onnx", "--dataset", "{tmp}", "--out", "{tmp}/r"], r"dataset|folder|class"),
])
def test_bad_input_gives_one_line_and_exit_2(trained, tmp_path, capsys, argv, message):
    import re
    (tmp_path / "text.onnx").write_text("not a model")
    cnnlab.onnx.export(cnnlab.models.tiny_cnn(input_shape=(8, 8, 3), num_classes=2), tmp_path / "m.onnx")
    code, out, err = run(capsys, *[a.format(run=trained, tmp=tmp_path) for a in argv])
    assert code == 2 and err.startswith("cnnlab: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "r").exists() and not (tmp_path / "out.onnx").exists()


def test_import_refuses_a_model_for_other_images(tmp_path, capsys):
    cnnlab.onnx.export(cnnlab.models.tiny_cnn(input_shape=(8, 8, 3), num_classes=2), tmp_path / "m.onnx")
    code, _, err = run(capsys, "import", tmp_path / "m.onnx", "--dataset", "shapes", "--out", tmp_path / "r")
    assert code == 2 and "takes images (8, 8, 3) (H, W, C) but shapes's are (28, 28, 1)" in err, err
    assert not (tmp_path / "r").exists()


def test_without_the_onnx_package_the_error_says_what_to_install(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)           # as if it were not installed
    code, _, err = run(capsys, "export", trained, "--out", tmp_path / "m.onnx")
    assert code == 1 and err.count("\n") == 1
    assert 'ONNX export needs the \'onnx\' package, which is not installed: pip install "cnnlab[onnx]"' in err
