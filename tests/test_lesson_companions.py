"""The lesson's companion models: made in the background by the server, reused from the cache, and a
one-line message where the model has no data."""
import contextlib
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

import cnnlab  # noqa: E402
from cnnlab import layers as L  # noqa: E402
from cnnlab.analysis.layers import first_conv  # noqa: E402
from cnnlab.analysis.lesson import companions as C  # noqa: E402
from cnnlab.serve.app import create_app  # noqa: E402

DATASET = {"dataset": "shapes", "dataset_options": {"n_train": 160, "n_test": 80, "image_size": 12}}


def small_cnn(seed=0):
    return cnnlab.Sequential([L.Conv2D(4, 3, padding="same"), L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dense(10)],
                             input_shape=(12, 12, 1), seed=seed)


@contextlib.contextmanager
def served(app):
    with TestClient(app) as c:
        assert c.get("/").status_code == 200
        yield c


def wait_ready(c, deadline=120):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        status = c.get("/api/lesson").json()["companions"]
        if all(s["status"] != "training" for s in status.values()):
            return status
        time.sleep(0.2)
    raise AssertionError(f"the companions did not finish in {deadline} s: {status}")


def test_server_trains_companions_and_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = small_cnn()
    app = create_app(model, runs_root=tmp_path / "runs", allowed_hosts=("testserver",), dataset=DATASET)
    with served(app) as c:
        first = c.get("/api/lesson").json()["companions"]
        assert set(first) == set(C.NAMES)
        status = wait_ready(c)
        assert all(s["status"] == "ready" and s["progress"] == 1.0 for s in status.values()), status
        ctx = app.state.explorer.companions(model, DATASET).context()
    mlp, gap, sharing = ctx["mlp"], ctx["gap"], ctx["sharing"]
    # the MLP has about the served model's parameter count; the GAP model ends in global average pooling
    assert isinstance(mlp.layers[0], L.Flatten) and abs(mlp.num_params - model.num_params) < 0.2 * model.num_params
    assert any(isinstance(layer, L.GlobalAvgPool2D) for layer in gap.layers)
    (x, y), (xt, yt), *_ = app.state.explorer.own_data((12, 12, 1), DATASET)
    assert len(x) == 160 and sharing["n_train"] == 160 and sharing["n_test"] == 80
    assert set(sharing) >= {"conv", "local", "dense", "random_filters"}
    assert sharing["local"]["params"] > 5 * sharing["conv"]["params"]
    # trained: a lower loss on the model's own training images than the same MLP at its start
    fresh = C.mlp_like((12, 12, 1), 10, params=model.num_params)
    assert mlp.evaluate(x, y)["loss"] < 0.9 * fresh.evaluate(x, y)["loss"]
    # the untrained copy: the served architecture with its initial weights drawn again from its seed
    u = ctx["untrained"]
    assert np.array_equal(first_conv(u).params["kernel"], first_conv(small_cnn()).params["kernel"])
    files = sorted(p.name for p in (tmp_path / "cache" / "cnnlab" / "lesson").glob("*/*"))
    assert files == ["gap.safetensors", "mlp.safetensors", "sharing.json"]

    # a second server start reads them back: the same weights, the same numbers, no training
    app2 = create_app(model, runs_root=tmp_path / "runs", allowed_hosts=("testserver",), dataset=DATASET)
    with served(app2) as c:
        status = wait_ready(c, deadline=30)
        assert all("from the cache" in status[n]["message"] for n in ("mlp", "gap", "sharing")), status
        ctx2 = app2.state.explorer.companions(model, DATASET).context()
    assert np.array_equal(ctx2["mlp"].logits(xt[:5]), mlp.logits(xt[:5]))
    assert ctx2["sharing"] == sharing

    # other weights of the same architecture (a run training on): the same companions; another
    # architecture or other data: another key, so another folder; a run keeps its companions beside it
    trained_on = small_cnn()
    trained_on.layers[0].params["kernel"] += 1.0
    assert C.cache_key(trained_on, x, y) == C.cache_key(model, x, y)
    assert C.cache_key(small_cnn(seed=1), x, y) != C.cache_key(model, x, y)
    assert C.cache_key(model, x[:-1], y[:-1]) != C.cache_key(model, x, y)
    assert app2.state.explorer.companions(trained_on, DATASET) is app2.state.explorer.companions(model, DATASET)
    (tmp_path / "run").mkdir()
    folder = C.Companions(model, app.state.explorer.own_data((12, 12, 1), DATASET), run_dir=tmp_path / "run").folder
    assert folder == tmp_path / "run" / "lesson" / C.cache_key(model, x, y)


def test_model_without_data_gets_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    app = create_app(small_cnn(), runs_root=tmp_path / "runs", allowed_hosts=("testserver",))
    with served(app) as c:
        status = wait_ready(c, deadline=30)
    for name in ("mlp", "gap", "sharing"):
        assert status[name]["status"] == "none"
        assert "\n" not in status[name]["message"] and "not known" in status[name]["message"]
    assert status["untrained"]["status"] == "ready"       # needs no data
    assert not (tmp_path / "cache").exists()
