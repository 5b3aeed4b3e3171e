"""What names a model (cnnlab.runs.resolve) and the run directory's name and emptiness (cnnlab.runs.files)."""
import re

import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L
from cnnlab import runs
from cnnlab._io import CnnlabFileError, write_json


def graph_model():
    inputs = cnnlab.Input((8, 8, 1))
    x = L.Conv2D(3, 3, padding="same")(inputs)
    y = L.Add()([L.ReLU()(x), x])
    return cnnlab.Model(inputs, L.Dense(4)(L.Flatten()(y)), seed=3)


def fake_run(tmp_path, model, class_names):
    """A run directory as training leaves it, as far as resolving reads it: config.json and model.safetensors."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model.save(run_dir / runs.MODEL_FILE)
    config = runs.make_config(dataset="shapes", model="tiny_cnn", epochs=1)
    write_json(run_dir / runs.CONFIG_FILE, {**config, "data": {"name": "shapes", "class_names": class_names}})
    return run_dir


def test_a_model_object_graph_or_chain_is_itself():
    for model in (graph_model(), cnnlab.models.tiny_cnn()):
        resolved = runs.resolve_model(model, untrained=False)
        assert resolved.model is model and resolved.run_dir is None and resolved.config is None


def test_a_run_directory_and_its_model_file_give_the_model_its_config_and_class_names(tmp_path):
    model = graph_model()
    run_dir = fake_run(tmp_path, model, ["a", "b", "c", "d"])
    x = np.random.default_rng(0).random((2, 8, 8, 1), np.float32)
    for spec in (run_dir, run_dir / runs.MODEL_FILE, str(run_dir)):
        resolved = runs.resolve_model(spec, untrained=False)
        assert resolved.trained and resolved.run_dir == run_dir and resolved.config["dataset"] == "shapes"
        assert resolved.class_names == ["a", "b", "c", "d"]
        np.testing.assert_array_equal(resolved.model.logits(x, workers=1), model.logits(x, workers=1))


def test_class_names_that_do_not_fit_the_model_are_dropped(tmp_path):
    run_dir = fake_run(tmp_path, graph_model(), ["a", "b"])
    assert runs.resolve_model(run_dir).class_names is None


def test_an_architecture_and_a_zoo_name_are_built_untrained(tmp_path):
    arch = tmp_path / "a.json"
    write_json(arch, {"layers": [{"class": "Flatten"}, {"class": "Dense", "config": {"units": 3}}]})
    resolved = runs.resolve_model(arch, input_shape=(4, 4, 2), seed=7)
    assert not resolved.trained and resolved.model.input_shape == (4, 4, 2) and resolved.model.seed == 7
    with pytest.raises(ValueError, match="has no input_shape"):
        runs.resolve_model(arch)
    zoo = runs.resolve_model("tiny_cnn", input_shape=(16, 16, 3), num_classes=5)
    assert not zoo.trained and zoo.model.input_shape == (16, 16, 3) and zoo.model.num_classes == 5
    with pytest.raises(ValueError, match="unknown model 'resnet999'"):
        runs.resolve_model("resnet999")


def test_only_trained_models_when_asked(tmp_path):
    for spec in ("tiny_cnn", tmp_path / "missing", tmp_path / "missing.safetensors"):
        with pytest.raises(CnnlabFileError, match="does not exist"):
            runs.resolve_model(spec, untrained=False)


def test_the_explain_tools_take_a_graph_model_object():
    from cnnlab.explain.subject import resolve_subject
    model = graph_model()
    subject = resolve_subject(model, dataset="shapes")
    assert subject.model is model and subject.dataset == "shapes"


def test_new_run_dir_names_by_dataset_model_and_time_and_numbers_taken_names(tmp_path, monkeypatch):
    fresh = runs.new_run_dir(tmp_path, "shapes", "arch/My Net.json")
    assert re.fullmatch(r"shapes-My-Net-\d{8}-\d{6}", fresh.name) and not fresh.exists()
    monkeypatch.setattr(runs.files.time, "strftime", lambda fmt: "20260101-120000")
    first = runs.new_run_dir(tmp_path, "shapes", "tiny_cnn")
    assert first == tmp_path / "shapes-tiny_cnn-20260101-120000"
    first.mkdir()
    taken = {"shapes-tiny_cnn-20260101-120000-2"}                   # promised to a job that has not made it yet
    assert runs.new_run_dir(tmp_path, "shapes", "tiny_cnn", taken=taken).name == first.name + "-3"
    assert runs.new_run_dir(tmp_path, ".hidden").name == "hidden-20260101-120000"


def test_require_no_run_refuses_a_run_and_a_file(tmp_path):
    assert runs.require_no_run(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / runs.STATE_FILE).write_text("{}")
    with pytest.raises(ValueError, match=r"already holds a run \(state.json\); try elsewhere"):
        runs.require_no_run(tmp_path / "run", "try elsewhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        runs.require_no_run(tmp_path / "file")
