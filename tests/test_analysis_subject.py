"""cnnlab.analysis.subject: which data, the cached run, and the recipe's claim (oriented first-layer filters)."""
import numpy as np
import pytest

from cnnlab.analysis import subject
from cnnlab.datasets import load_shapes
from tests.test_explain_features import write_idx


RECIPE = subject.default_subject_recipe


def tiny_recipe(dataset="shapes", data_dir=None, seed=0):
    r = RECIPE(dataset, data_dir, seed)
    r.update(epochs=1, snapshot_filters=5)
    if dataset == "shapes":
        r["dataset_options"] = {"n_train": 200, "n_test": 50}
    else:
        r["limit"] = 100
    return r


def test_default_dataset_is_mnist_only_when_its_files_are_at_hand(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert subject.default_dataset(tmp_path / "nothing") == "shapes"
    (x, y), (xt, yt) = load_shapes(n_train=60, n_test=20, seed=1)
    folder = tmp_path / "d" / "mnist"
    folder.mkdir(parents=True)
    for prefix, images, labels in (("train", x, y), ("t10k", xt, yt)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", (images[..., 0] * 255).round())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    assert subject.default_dataset(tmp_path / "d") == "mnist"
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "d"))
    assert subject.default_dataset() == "mnist"


def test_default_subject_run_is_trained_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(subject, "default_subject_recipe", tiny_recipe)
    said = []
    run = subject.default_subject_run(tmp_path / "runs", log=said.append)
    assert run.name == "shapes-default-subject" and len(said) == 1
    k0 = subject.initial_kernel(run)
    assert k0.shape == (5, 5, 1, 8)
    stamp = (run / "model.safetensors").stat().st_mtime_ns if (run / "model.safetensors").exists() else None
    assert subject.default_subject_run(tmp_path / "runs", log=said.append) == run and len(said) == 1
    if stamp is not None:
        assert (run / "model.safetensors").stat().st_mtime_ns == stamp
    (tmp_path / "runs2" / "shapes-default-subject").mkdir(parents=True)           # something unfinished in the way
    with pytest.raises(ValueError, match="unfinished"):
        subject.default_subject_run(tmp_path / "runs2", log=said.append)


@pytest.mark.slow
def test_the_recipe_makes_most_first_layer_filters_oriented(tmp_path, monkeypatch):
    """The claim the default subject is chosen for, on one seed of the shapes version (5 seeds: benchmarks)."""
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "none"))
    summary = subject.train_default_subject(tmp_path / "run", "shapes", seed=0)
    found = subject.oriented_filters(summary["model"], subject.initial_kernel(tmp_path / "run"))
    assert found["count"] >= 6
    assert summary["test"]["accuracy"] > 0.8
    assert np.all(found["selectivity"][found["oriented"]] > found["threshold"])


def test_explain_without_a_model_shows_the_subject_serve_shows(tmp_path, monkeypatch, capsys):
    """``cnnlab explain`` with no --model trains the default subject once into --runs, as ``cnnlab serve`` does,
    and the server then finds that very run (nothing trained twice)."""
    import json
    from cnnlab.cli import main
    from cnnlab.runs import resolve_model as resolve_run
    from cnnlab.serve.cli import resolve_model
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(subject, "default_subject_recipe", tiny_recipe)
    runs = tmp_path / "runs"
    assert main(["explain", "saliency", "--runs", str(runs), "--stride", "7", "--out", str(tmp_path / "sal")]) == 0
    assert "training the default subject" in capsys.readouterr().err
    run = runs / "shapes-default-subject"
    r = json.loads((tmp_path / "sal" / "saliency.json").read_text())
    assert r["model"] == str(run) and "shapes" in r["image"]["source"]
    said = []
    served, _, config = resolve_model(None, runs, log=said.append)
    assert said == [] and config["dataset"] == "shapes"                       # found, not trained again
    for a, b in zip(served.layers, resolve_run(run).model.layers):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
