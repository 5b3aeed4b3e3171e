"""The explorer's HTTP interface (``cnnlab serve``) through Starlette's test client: every route, every refusal."""
import base64
import io
import json
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import cnnlab  # noqa: E402
from cnnlab.images import prepare_input  # noqa: E402
from cnnlab import layers as L  # noqa: E402
from cnnlab import runs  # noqa: E402
from cnnlab.datasets import SHAPES_CLASSES  # noqa: E402
from cnnlab.serve.app import create_app  # noqa: E402

HOSTS = ("testserver",)


def png(a) -> bytes:
    """float image (H, W) or (H, W, 3) in [0, 1] -> PNG bytes."""
    a = (np.clip(np.asarray(a), 0, 1) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def every_kind_model():
    """Strides, padding, dilation, groups, BatchNorm, both poolings, LeakyReLU, dense: 20x18 grayscale."""
    m = cnnlab.Sequential([
        L.Conv2D(4, 3, strides=(1, 2), padding=(1, 2), dilation=(2, 1)), L.BatchNorm(), L.LeakyReLU(0.1),
        L.Conv2D(6, (3, 2), padding="same", groups=2), L.MaxPool2D(2, padding=1), L.ReLU(),
        L.AvgPool2D(2), L.Flatten(), L.Dense(7), L.Tanh(), L.Dense(3)], input_shape=(20, 18, 1), seed=3)
    rng = np.random.default_rng(0)
    bn = m.layers[1]
    bn.buffers["running_mean"][:] = rng.normal(0, 0.3, 4)
    bn.buffers["running_var"][:] = rng.uniform(0.5, 2, 4)
    bn.params["gamma"][:] = rng.uniform(0.5, 1.5, 4)
    bn.params["beta"][:] = rng.normal(0, 0.2, 4)
    return m


@pytest.fixture(scope="module")
def image():
    """A random picture on a dark border (the background the light-background rule leaves as it is)."""
    a = np.random.default_rng(1).uniform(0, 1, (20, 18))
    a[[0, -1], :] *= 0.3
    a[:, [0, -1]] *= 0.3
    return a


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(every_kind_model(), class_names=["a", "b", "c"], runs_root=tmp_path_factory.mktemp("runs"),
                     allowed_hosts=HOSTS, max_upload=200_000)
    with TestClient(app) as c:
        yield c


def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and "<canvas" in r.text and "text/html" in r.headers["content-type"]
    r = client.get("/static/app.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    for bad in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/nothing"):
        r = client.get(bad)
        assert r.status_code == 404 and "error" in r.json(), bad


def test_model_description(client):
    d = client.get("/api/model").json()
    assert d["input_shape"] == [20, 18, 1] and d["class_names"] == ["a", "b", "c"]
    model = every_kind_model()
    assert [x["name"] for x in d["layers"]] == [l.name for l in model.layers]
    assert [x["output_shape"] for x in d["layers"]] == [list(l.output_shape) for l in model.layers]
    assert d["layers"][0]["class"] == "Conv2D" and d["layers"][0]["config"]["dilation"] == [2, 1]
    assert [x["inputs"] for x in d["layers"][:3]] == [["input"], ["conv2d"], ["batch_norm"]]


def test_predict_probabilities_and_activations(client, image):
    model = every_kind_model()
    x = np.asarray(Image.open(io.BytesIO(png(image))), np.float32)[..., None] / 255
    expected = model.predict(x[None], workers=1)[0]
    r = client.post("/api/predict", content=png(image))
    assert r.status_code == 200
    p = r.json()["probabilities"]
    assert len(p) == 3 and abs(sum(p) - 1) < 1e-6
    np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-6)
    acts = client.post("/api/predict?activations=1", content=png(image)).json()["activations"]
    packed = client.post("/api/predict?activations=base64", content=png(image)).json()["activations"]
    h = x[None]
    for layer, a, b in zip(model.layers, acts, packed):
        h = layer.forward(h)
        assert a["name"] == layer.name and a["shape"] == list(layer.output_shape)
        np.testing.assert_allclose(np.array(a["data"]), h[0], rtol=1e-5, atol=1e-6)
        raw = np.frombuffer(base64.b64decode(b["data"]), "<f4").reshape(b["shape"])
        np.testing.assert_allclose(raw, h[0], rtol=1e-5, atol=1e-6)


def test_pictures_are_prepared_as_cnnlab_predict_prepares_them(client, image):
    """The one image reader's background rule: a light-background picture is inverted, and the answer says so."""
    dark = client.post("/api/predict", content=png(image)).json()
    light = client.post("/api/predict", content=png(1 - image)).json()
    assert dark["notes"] == []
    assert len(light["notes"]) == 1 and "inverted" in light["notes"][0]
    np.testing.assert_allclose(light["probabilities"], dark["probabilities"], rtol=1e-6, atol=1e-7)


def test_rgb_and_jpeg_inputs_are_converted(client, image):
    buf = io.BytesIO()
    Image.fromarray((np.stack([image] * 3, -1) * 255).astype(np.uint8)).resize((36, 40)).save(buf, format="JPEG")
    r = client.post("/api/predict", content=buf.getvalue())
    assert r.status_code == 200 and len(r.json()["probabilities"]) == 3


def layer_outputs(model, x):
    """Every layer's output for one image: {name: array}; a chain layer by layer, a graph by its own forward."""
    if hasattr(model, "inbound_names") and not isinstance(model, cnnlab.Sequential):
        _, acts = model.forward(x[None], capture=True)
        return {k: np.array(v[0]) for k, v in acts.items()}
    out, h = {}, x[None]
    for layer in model.layers:
        h = layer.forward(h)
        out[layer.name] = np.array(h[0])
    return out


def unit_reference(outputs, name, c, i, j):
    a = outputs[name]
    return float(a[i, j, c] if a.ndim == 3 else a[c])


def test_unit_detail_of_every_layer_equals_the_forward_pass(client, image):
    model = every_kind_model()
    x = np.asarray(Image.open(io.BytesIO(png(image))), np.float32)[..., None] / 255
    rng = np.random.default_rng(2)
    outputs = layer_outputs(model, x)
    for layer in model.layers:
        shape = layer.output_shape
        for _ in range(3):
            c = int(rng.integers(shape[-1]))
            i, j = (int(rng.integers(shape[0])), int(rng.integers(shape[1]))) if len(shape) == 3 else (0, 0)
            r = client.post(f"/api/unit?layer={layer.name}&channel={c}&y={i}&x={j}", content=png(image))
            assert r.status_code == 200, r.text
            d = r.json()
            ref = unit_reference(outputs, layer.name, c, i, j)
            assert abs(d["model_value"] - ref) < 1e-5 and abs(d["value"] - ref) < 1e-4, (layer.name, d["value"], ref)
            if d["kind"] == "conv":
                products = np.array(d["products"]["data"])
                np.testing.assert_allclose(products, np.array(d["patch"]["data"]) * np.array(d["kernel"]["data"]),
                                           rtol=1e-5, atol=1e-7)
                assert abs(sum(d["channel_sums"]) + d["bias"] - d["value"]) < 1e-5
            if d["kind"] == "dense":
                products = np.array(d["products"]["data"])
                assert abs(products.sum() + d["bias"] - d["value"]) < 1e-4
                top = d["top"]                   # the largest |w x v| first; the rest summed in one number
                assert len(top) == min(10, products.size) and d["rest_count"] == products.size - len(top)
                assert np.all(np.diff(np.abs(products[top])) <= 0)
                others = np.delete(products, top)
                assert others.size == 0 or np.abs(others).max() <= np.abs(products[top]).min()
                assert abs(products[top].sum() + d["rest_sum"] - d["sum"]) < 1e-4


def test_conv_unit_window_follows_stride_padding_dilation(client, image):
    """First layer: strides (1, 2), padding (1, 2), dilation (2, 1): unit (y, x) reads rows y - 1 + 2p and
    columns 2x - 2 + q of the image, zeros outside; the patch is exactly those pixels."""
    x = np.asarray(Image.open(io.BytesIO(png(image))), np.float32) / 255
    d = client.post("/api/unit?layer=conv2d&channel=1&y=0&x=5", content=png(image)).json()
    assert d["rows"] == [-1, 1, 3] and d["cols"] == [8, 9, 10]
    assert d["strides"] == [1, 2] and d["dilation"] == [2, 1] and d["pads"][:1] == [1]
    patch = np.array(d["patch"]["data"])[..., 0]
    expected = np.array([[x[r, c] if 0 <= r < 20 and 0 <= c < 18 else 0.0 for c in d["cols"]] for r in d["rows"]])
    np.testing.assert_allclose(patch, expected, atol=1e-6)
    assert d["receptive_field"] == {"top": -1, "bottom": 3, "left": 8, "right": 10}


def test_grouped_conv_unit_reads_its_group(client, image):
    d = client.post("/api/unit?layer=conv2d_1&channel=5&y=2&x=3", content=png(image)).json()
    assert d["channels"] == [2, 3] and d["groups"] == 2


def test_max_pool_detail_names_the_winner(client, image):
    d = client.post("/api/unit?layer=max_pool2d&channel=0&y=1&x=1", content=png(image)).json()
    win = np.array(d["window"]["data"])
    p, q = d["argmax"]
    assert d["op"] == "max" and win[p, q] == win.max() and abs(win.max() - d["value"]) < 1e-6


def test_examples(client):
    d = client.get("/api/examples?n=5").json()
    assert d["source"] == "shapes" and len(d["examples"]) == 5
    img = Image.open(io.BytesIO(base64.b64decode(d["examples"][0]["png"])))
    assert img.size == (18, 20) and d["examples"][0]["class_name"]
    assert client.get("/api/examples?source=elsewhere").status_code == 400


def test_why_views(client, image):
    f = client.get("/api/why/filters?k=3").json()
    assert f["layer"] == "conv2d" and len(f["filters"]) == 4 and len(f["filters"][0]["top"]) == 3
    top = f["filters"][0]["top"]
    assert all(a["activation"] >= b["activation"] for a, b in zip(top, top[1:]))
    s = client.post("/api/why/saliency?class=2", content=png(image)).json()
    assert s["class_index"] == 2 and s["saliency"]["shape"] == [20, 18] and s["grad_cam"]["shape"] == [20, 18]
    sh = client.post("/api/why/shift?dy=2&dx=-3", content=png(image)).json()
    moved = np.array(sh["image"]["data"])[..., 0]
    x = np.asarray(Image.open(io.BytesIO(png(image))), np.float32) / 255
    np.testing.assert_allclose(moved[2:, :-3], x[:-2, 3:], atol=1e-6)
    assert sh["features_layer"] == "flatten" and sh["features_change"] >= 0
    k = client.get("/api/filters").json()
    assert k["layer"] == "conv2d" and k["kernel"]["shape"] == [3, 3, 1, 4]


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------
def test_refusals(client, image):
    r = client.post("/api/predict", content=b"this is not an image at all")
    assert r.status_code == 400 and "not a picture" in r.json()["error"]
    assert client.post("/api/predict", content=b"").status_code == 400
    r = client.post("/api/predict", content=png(image)[:60])
    assert r.status_code == 400 and "damaged or truncated" in r.json()["error"]
    r = client.post("/api/predict", content=b"\x89PNG" + b"0" * 300_000)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = client.post("/api/predict?activations=maybe", content=png(image))
    assert r.status_code == 400 and "activations" in r.json()["error"]
    for query, status in (("layer=nope&channel=0", 404), ("channel=0", 400), ("layer=conv2d", 400),
                          ("layer=conv2d&channel=99", 400), ("layer=conv2d&channel=x", 400),
                          ("layer=dense&channel=0&y=1", 400), ("layer=conv2d&channel=-1", 400)):
        r = client.post(f"/api/unit?{query}", content=png(image))
        assert r.status_code == status and r.json()["error"], query
    assert client.post("/api/why/shift?dy=30", content=png(image)).status_code == 400
    assert client.post("/api/why/saliency?class=3", content=png(image)).status_code == 400
    assert client.get("/api/predict").status_code == 405 and "error" in client.get("/api/predict").json()


def png_header_only(width, height) -> bytes:
    """A PNG whose header claims ``width x height`` 1-bit pixels, with a tiny (truncated) image stream."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_before_decoding(client):
    """Over cnnlab's pixel limit and over Pillow's own bomb limit: 413, nothing decoded."""
    from cnnlab.images import MAX_PIXELS
    side = int(MAX_PIXELS ** 0.5) + 10
    for w, h in ((side, side), (30000, 30000)):
        r = client.post("/api/predict", content=png_header_only(w, h))
        assert r.status_code == 413 and ("pixels" in r.json()["error"] or "bomb" in r.json()["error"]), r.text


def test_host_header_must_name_the_server(client):
    r = client.get("/api/model", headers={"host": "evil.example:8000"})
    assert r.status_code == 403 and "Host" in r.json()["error"]
    r = client.get("/", headers={"host": "testserver:8000"})
    assert r.status_code == 200


def test_json_errors(client):
    for body in (b"{not json", b"\xff\xfe", b"[1, 2"):
        r = client.post("/api/runs", content=body)
        assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = client.post("/api/runs", content=json.dumps([1, 2]))
    assert r.status_code == 400 and "JSON object" in r.json()["error"]
    r = client.post("/api/runs", content=json.dumps({"epochs": 1, "colour": "blue"}))
    assert r.status_code == 400 and "colour" in r.json()["error"]
    r = client.post("/api/runs", content=json.dumps({"epochs": -1}))
    assert r.status_code == 400 and "epochs" in r.json()["error"]
    r = client.post("/api/runs", content=b"{" + b" " * 70_000 + b"}")
    assert r.status_code == 413
    for name in ("..", "..%2F..%2Fetc", "nothing-here"):
        r = client.get(f"/api/runs/{name}")
        assert r.status_code == 404 and r.json()["error"], name
    assert client.get("/api/model?run=..").status_code == 404 and client.get("/api/filters?run=x/y").status_code == 404


def test_internal_errors_are_json_without_traceback(tmp_path):
    model = every_kind_model()
    model.layers[0].forward = None                   # breaks the forward pass
    with TestClient(create_app(model, allowed_hosts=HOSTS, runs_root=tmp_path), raise_server_exceptions=False) as c:
        r = c.post("/api/predict", content=png(np.zeros((20, 18))))
    assert r.status_code == 500 and r.json()["error"].startswith("internal error: TypeError")
    assert "Traceback" not in r.text


# ---------------------------------------------------------------------------
# Training jobs
# ---------------------------------------------------------------------------
def sse(client, url, headers=None):
    """Every event of a server-sent event stream until the server ends it: [(id, type, data)]."""
    out, ev = [], {}
    with client.stream("GET", url, headers=headers or {}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("id: "):
                ev["id"] = int(line[4:])
            elif line.startswith("event: "):
                ev["type"] = line[7:]
            elif line.startswith("data: "):
                ev["data"] = json.loads(line[6:])
            elif not line and "data" in ev:
                out.append(ev)
                ev = {}
    return out


def test_training_job_lifecycle(tmp_path):
    """One job at a time (409 names the running one); progress streams and resumes from Last-Event-ID;
    a stopped job keeps its last completed epoch and resumes; the run directory is an ordinary run."""
    app = create_app(every_kind_model(), allowed_hosts=HOSTS, runs_root=tmp_path)
    options = {"dataset": "shapes", "dataset_options": {"n_train": 320, "n_test": 64}, "model": "tiny_cnn",
               "epochs": 50, "batch_size": 32, "lr": 0.05}
    with TestClient(app) as c:
        r = c.post("/api/runs", json=options)
        assert r.status_code == 201, r.text
        job = r.json()["id"]
        r2 = c.post("/api/runs", json=options)
        assert r2.status_code == 409 and r2.json()["running"] == job and job in r2.json()["error"]
        with c.stream("GET", f"/api/runs/{job}/events") as r:       # watch until the first epoch is saved
            for line in r.iter_lines():
                if line == "event: epoch":
                    break
        assert c.post(f"/api/runs/{job}/stop").status_code == 200
        events = sse(c, f"/api/runs/{job}/events")
        kinds = [e["type"] for e in events]
        assert kinds[0] == "start" and kinds[-1] == "end" and "batch" in kinds
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        end = events[-1]["data"]
        assert end["status"] == "stopped" and "checkpoint" in end["message"]
        saved = [e["data"]["epoch"] for e in events if e["type"] == "epoch"]
        assert end["epoch"] == saved[-1] == runs.read_state(tmp_path / job)["epoch"] >= 1
        later = sse(c, f"/api/runs/{job}/events", headers={"Last-Event-ID": str(events[1]["id"])})
        assert [e["id"] for e in later] == [e["id"] for e in events[2:]]

        # resume it for one more epoch: an ordinary run directory, continued
        r = c.post("/api/runs", json={"resume": job, "epochs": end["epoch"] + 1})
        assert r.status_code == 201, r.text
        events = sse(c, f"/api/runs/{job}/events")
        assert [e["data"]["epoch"] for e in events if e["type"] == "epoch"] == [end["epoch"] + 1]
        assert events[-1]["data"]["status"] == "completed"
        listed = c.get("/api/runs").json()
        assert [r["name"] for r in listed["runs"]] == [job] and listed["runs"][0]["status"] == "completed"
        run = c.get(f"/api/runs/{job}").json()
        assert [e["epoch"] for e in run["epochs"]] == list(range(1, end["epoch"] + 2)) and run["status"] == "completed"
        # the run's own model serves the same routes
        d = c.get(f"/api/model?run={job}").json()
        assert d["input_shape"] == [28, 28, 1] and d["class_names"] == list(SHAPES_CLASSES)
        assert len(c.get(f"/api/examples?run={job}&source=test&n=2").json()["examples"]) == 2
        assert cnnlab.load(tmp_path / job).num_params == cnnlab.models.tiny_cnn(num_classes=10).num_params
        r = c.post("/api/runs", json={"resume": job, "epochs": 2, "lr": 1})
        assert r.status_code == 400 and "lr" in r.json()["error"]


def test_failed_job_says_why_and_keeps_its_last_epoch(tmp_path):
    app = create_app(every_kind_model(), allowed_hosts=HOSTS, runs_root=tmp_path)
    with TestClient(app) as c:
        r = c.post("/api/runs", json={"dataset": "shapes", "dataset_options": {"n_train": 256, "n_test": 32},
                                      "model": "tiny_cnn", "epochs": 2, "lr": 1e12, "momentum": 0.0})
        events = sse(c, f"/api/runs/{r.json()['id']}/events")
        end = events[-1]["data"]
        assert end["status"] == "failed" and "diverged" in end["message"].lower() and end["epoch"] == 0
        assert c.get("/api/runs").json()["jobs"][0]["status"] == "failed"


def test_events_of_a_run_written_elsewhere(tmp_path):
    """A run directory written by ``cnnlab train`` (no job here): epochs from history.json, then the end."""
    config = runs.make_config(dataset="shapes", dataset_options={"n_train": 256, "n_test": 32}, model="tiny_cnn",
                              epochs=2, workers=1)
    runs.run_training(config, tmp_path / "outside", verbose=0, plot=False)
    with TestClient(create_app(every_kind_model(), allowed_hosts=HOSTS, runs_root=tmp_path)) as c:
        events = sse(c, "/api/runs/outside/events")
        assert [e["type"] for e in events] == ["epoch", "epoch", "end"] and events[-1]["data"]["status"] == "completed"
        assert [e["type"] for e in sse(c, "/api/runs/outside/events", {"Last-Event-ID": "1"})] == ["epoch", "end"]


@pytest.mark.parametrize("name", ["lenet5", "mnist_fast", "cifar_small", "resnet8"])
def test_zoo_models_every_layer_unit_matches_the_forward_pass(name, tmp_path):
    """The explorer's routes on the zoo's models (BatchNorm, dropout, global average pooling, RGB input):
    one unit of every layer, recomputed from its parts, equals the forward pass."""
    model = cnnlab.models.get(name)()
    h, w, c = model.input_shape
    img = np.random.default_rng(5).uniform(0, 1, (h, w, c) if c == 3 else (h, w))
    # The explorer prepares a picture as `cnnlab predict` does (for lenet5, of unrecorded training data,
    # MNIST's normalization): the reference starts from the same prepared input.
    x, _ = prepare_input(png(img), model.input_shape)
    rng = np.random.default_rng(6)
    outputs = layer_outputs(model, x)
    with TestClient(create_app(model, allowed_hosts=HOSTS, runs_root=tmp_path)) as client:
        d = client.get("/api/model").json()
        assert [l["output_shape"] for l in d["layers"]] == [list(l.output_shape) for l in model.layers]
        p = client.post("/api/predict?activations=base64", content=png(img)).json()
        logits = outputs[model.layers[-1].name].astype(np.float64)
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(p["probabilities"], expected, rtol=1e-4, atol=1e-6)
        for layer in model.layers:
            shape = layer.output_shape
            ch = int(rng.integers(shape[-1]))
            i, j = (int(rng.integers(shape[0])), int(rng.integers(shape[1]))) if len(shape) == 3 else (0, 0)
            r = client.post(f"/api/unit?layer={layer.name}&channel={ch}&y={i}&x={j}", content=png(img))
            assert r.status_code == 200, (layer.name, r.text)
            u = r.json()
            ref = unit_reference(outputs, layer.name, ch, i, j)
            assert abs(u["model_value"] - ref) < 1e-4 and abs(u["value"] - ref) < 1e-4, (layer.name, u["value"], ref)


def test_filters_added_is_the_kernel_minus_its_first_snapshot(tmp_path):
    """``/api/filters/added?run=NAME``: the run's latest first-layer kernel minus the first kernel its
    ``filters.safetensors`` kept, and each filter's relative change, against the files read directly."""
    import subprocess
    import sys
    from safetensors.numpy import load_file
    subprocess.run([sys.executable, "-m", "cnnlab", "train", "--dataset", "shapes", "--model", "tiny_cnn", "--epochs", "1",
                    "--limit", "192", "--batch-size", "32", "--snapshot-filters", "2", "--out", str(tmp_path / "snap")],
                   check=True, capture_output=True, timeout=300)
    app = create_app(every_kind_model(), allowed_hosts=HOSTS, runs_root=tmp_path)
    with TestClient(app) as c:
        d = c.get("/api/filters/added?run=snap").json()
        snaps = load_file(str(tmp_path / "snap" / runs.FILTERS_FILE))
        k0 = snaps[min(snaps)].astype(np.float64)
        k = np.asarray(cnnlab.load(tmp_path / "snap" / runs.LAST_FILE).layers[0].params["kernel"], np.float64)
        added = np.frombuffer(base64.b64decode(d["added"]["data"]), "<f4").reshape(d["added"]["shape"])
        assert d["initial_step"] == 0 and d["layer"] == "conv2d"
        np.testing.assert_allclose(added, k - k0, atol=1e-6)
        assert np.abs(added).max() > 0                           # training moved the filters
        expected = np.linalg.norm((k - k0).reshape(-1, k.shape[-1]), axis=0) / np.linalg.norm(k0.reshape(-1, k.shape[-1]), axis=0)
        np.testing.assert_allclose(d["relative_change"], expected, rtol=1e-5)
        (tmp_path / "snap" / runs.FILTERS_FILE).unlink()
        r = c.get("/api/filters/added?run=snap")
        assert r.status_code == 404 and "snapshot" in r.json()["error"]
        assert c.get("/api/filters/added").status_code == 400
