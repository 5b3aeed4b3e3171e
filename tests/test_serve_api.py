"""The explorer's HTTP interface (``cnnlab serve``) through Starlette's test client: every route, every refusal."""
import base64
import contextlib
import io
import json
import time
from pathlib import Path

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
JSON = {"Content-Type": "application/json"}


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


@contextlib.contextmanager
def served(app, **kw):
    """A test client that opened the page first, so it holds the server's secret cookie as the page does."""
    with TestClient(app, **kw) as c:
        assert c.get("/").status_code == 200
        yield c


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(every_kind_model(), class_names=["a", "b", "c"], runs_root=tmp_path_factory.mktemp("runs"),
                     allowed_hosts=HOSTS, max_upload=200_000)
    with served(app) as c:
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
    assert d["source"] == "shapes" and len(d["examples"]) == 5 and "not known" in d["note"]
    assert client.get("/api/examples?n=5&source=shapes").json()["note"] is None
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
def optimum_checked(client, model, img, layer, channel, query=""):
    """``POST /api/unit/optimum`` for one unit, its numbers recomputed: the forward pass of the returned picture
    and of the prepared input at the unit, and noise of the input's norm drawn here (not the route's)."""
    r = client.post(f"/api/unit/optimum?layer={layer}&channel={channel}{query}", content=png(img))
    assert r.status_code == 200, (layer, r.text)
    d = r.json()
    x, _ = prepare_input(png(img), model.input_shape)
    best = np.asarray(d["image"]["data"], np.float32)
    assert d["radius"] == pytest.approx(float(np.linalg.norm(x)), rel=1e-5)
    assert np.linalg.norm(best) <= d["radius"] * (1 + 1e-5)
    noise = np.random.default_rng(11).standard_normal((24,) + tuple(model.input_shape))
    noise *= d["radius"] / np.linalg.norm(noise.reshape(24, -1), axis=1)[:, None, None, None]
    out = model.forward(np.concatenate([best[None], x[None], noise]).astype(np.float32), capture=[layer])[1][layer]
    at = out[(slice(None), channel)] if out.ndim == 2 else out[:, d["position"][0], d["position"][1], channel]
    np.testing.assert_allclose([d["value"], d["input_value"]], at[:2], rtol=1e-4, atol=1e-5)
    return d, at[2:]


def test_what_a_unit_looks_for(client, image):
    """An input of the current input's norm optimised for a unit of every kind of layer excites it more than the
    input and than random inputs of that norm; the sentence says so with the numbers."""
    model = every_kind_model()
    for layer, channel in (("conv2d", 1), ("batch_norm", 2), ("leaky_relu", 0), ("conv2d_1", 4),
                           ("max_pool2d", 3), ("dense", 5), ("tanh", 2), ("dense_1", 1)):
        d, on_noise = optimum_checked(client, model, image, layer, channel)
        assert d["value"] > max(d["input_value"], on_noise.max(), max(d["random_values"])), layer
        assert d["sentence"].startswith("The picture is what this unit looks for") and f"{d['value']:.3g}" in d["sentence"]
    d, _ = optimum_checked(client, model, image, "conv2d_1", 0, "&y=2&x=1")           # the unit the details show
    assert d["position"] == [2, 1]
    assert optimum_checked(client, model, image, "tanh", 0)[0]["optimised"] == "dense"   # through the activation
    for query, status in (("layer=nope&channel=0", 404), ("channel=0", 400), ("layer=conv2d", 400),
                          ("layer=conv2d&channel=4", 400), ("layer=conv2d&channel=0&y=99", 400)):
        r = client.post(f"/api/unit/optimum?{query}", content=png(image))
        assert r.status_code == status and r.json()["error"], query


def test_what_a_unit_of_a_graph_model_looks_for(tmp_path):
    """resnet8 (RGB, residual sums): a unit after a sum and an output unit."""
    model = cnnlab.models.get("resnet8")()
    img = np.random.default_rng(3).uniform(0, 1, model.input_shape)
    with served(create_app(model, allowed_hosts=HOSTS, runs_root=tmp_path)) as client:
        for layer in ("add", model.layers[-1].name):
            d, on_noise = optimum_checked(client, model, img, layer, 3)
            assert d["value"] > max(d["input_value"], on_noise.max()), layer


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


def test_other_web_pages_cannot_act_on_the_server(tmp_path, image):
    """The issue's cross-site requests: a page on another site may send a "simple" POST (text/plain, its
    own Origin, no secret); each refusal alone answers 403, and no job starts. The page's own requests
    (same origin, the cookie set by ``GET /``, JSON) pass."""
    app = create_app(every_kind_model(), allowed_hosts=HOSTS, runs_root=tmp_path)
    job = json.dumps({"dataset": "shapes", "epochs": 1})
    evil = {"Origin": "http://evil.example"}
    with TestClient(app) as stranger:                  # never opened the page: no secret
        r = stranger.post("/api/runs", content=job, headers={**evil, "Content-Type": "text/plain"})
        assert r.status_code == 403 and "evil.example" in r.json()["error"]
        r = stranger.post("/api/runs", content=job, headers=JSON)
        assert r.status_code == 403 and "token" in r.json()["error"]
        assert stranger.post("/api/runs/anything/stop").status_code == 403
        assert stranger.post("/api/predict", content=png(image)).status_code == 403
    with served(app) as c:
        cookie = c.get("/").headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        for headers in (evil, {"Origin": "null"}, {"Origin": "http://testserver:9999"}, {"Sec-Fetch-Site": "cross-site"}):
            r = c.post("/api/runs", content=job, headers={**JSON, **headers})
            assert r.status_code == 403 and "refused" in r.json()["error"], headers
            assert c.post("/api/runs/anything/stop", headers=headers).status_code == 403, headers
        r = c.post("/api/runs", content=job, headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and "application/json" in r.json()["error"]
        r = c.post("/api/runs", content=job, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 415
        assert c.get("/api/runs").json()["jobs"] == []                         # nothing started
        # the page's own request, with its Origin, passes the guard (and is then judged on its content)
        r = c.post("/api/predict", content=png(image), headers={"Origin": "http://testserver"})
        assert r.status_code == 200
        for dataset in ("/etc", "../../etc", str(tmp_path.parent), "~"):
            r = c.post("/api/runs", json={"dataset": dataset, "epochs": 1})
            assert r.status_code == 400 and "built-in name or a folder inside" in r.json()["error"], dataset
        r = c.post("/api/runs", json={"model": "/etc/hostname", "epochs": 1})
        assert r.status_code == 400 and "model" in r.json()["error"]
        assert c.get("/api/runs").json()["jobs"] == []


def test_json_errors(client):
    for body in (b"{not json", b"\xff\xfe", b"[1, 2"):
        r = client.post("/api/runs", content=body, headers=JSON)
        assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = client.post("/api/runs", json=[1, 2])
    assert r.status_code == 400 and "JSON object" in r.json()["error"]
    r = client.post("/api/runs", json={"epochs": 1, "colour": "blue"})
    assert r.status_code == 400 and "colour" in r.json()["error"]
    r = client.post("/api/runs", json={"epochs": -1})
    assert r.status_code == 400 and "epochs" in r.json()["error"]
    r = client.post("/api/runs", content=b"{" + b" " * 70_000 + b"}", headers=JSON)
    assert r.status_code == 413
    for name in ("..", "..%2F..%2Fetc", "nothing-here"):
        r = client.get(f"/api/runs/{name}")
        assert r.status_code == 404 and r.json()["error"], name
    assert client.get("/api/model?run=..").status_code == 404 and client.get("/api/filters?run=x/y").status_code == 404


def test_internal_errors_are_json_without_traceback(tmp_path):
    model = every_kind_model()
    model.layers[0].forward = None                   # breaks the forward pass
    with served(create_app(model, allowed_hosts=HOSTS, runs_root=tmp_path), raise_server_exceptions=False) as c:
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
    with served(app) as c:
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
    with served(app) as c:
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
    with served(create_app(every_kind_model(), allowed_hosts=HOSTS, runs_root=tmp_path)) as c:
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
    with served(create_app(model, allowed_hosts=HOSTS, runs_root=tmp_path)) as client:
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


# ---------------------------------------------------------------------------
# The model's own data: --data-dir, as cnnlab train has it
# ---------------------------------------------------------------------------
@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A ``--data-dir`` holding MNIST-format IDX files (random pictures, written here: CI never skips),
    and a dataset folder of the same format; ``$CNNLAB_DATA`` and the cache point at empty folders."""
    from test_datasets import make_idx_set
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    arrays = make_idx_set(tmp_path / "data" / "mnist", n_train=200, n_test=24, size=28, seed=4)
    make_idx_set(tmp_path / "data" / "digits", n_train=8, n_test=4, size=28, seed=5)
    return tmp_path / "data", arrays


def decoded(example):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(example["png"]))))


def test_examples_come_from_the_models_own_data(data_dir, tmp_path):
    """An MNIST model's examples are MNIST's test images found through --data-dir, in order, with their labels;
    without the files, shapes pictures and a note saying why."""
    folder, arrays = data_dir
    images, labels = arrays["t10k"]
    mnist_run = {"dataset": "mnist", "data_dir": None, "dataset_options": {}}
    with served(create_app(cnnlab.models.lenet5(), allowed_hosts=HOSTS, runs_root=tmp_path / "runs",
                           dataset=mnist_run, data_dir=folder)) as c:
        d = c.get("/api/examples?n=6").json()
        assert d["source"] == "mnist" and d["note"] is None and d["split"] == "test"
        assert [e["label"] for e in d["examples"]] == labels[:6].tolist()
        for e, img in zip(d["examples"], images):
            np.testing.assert_array_equal(decoded(e), img)
        assert c.get("/api/examples?n=6&source=test").json()["examples"] == d["examples"]
    with served(create_app(cnnlab.models.lenet5(), allowed_hosts=HOSTS, runs_root=tmp_path / "runs",
                           dataset=mnist_run)) as c:
        d = c.get("/api/examples?n=6").json()
        assert d["source"] == "shapes" and "mnist" in d["note"] and "--data-dir" in d["note"]


def test_training_choices_are_what_is_on_disk(data_dir, tmp_path):
    folder, _ = data_dir
    with served(create_app(every_kind_model(), allowed_hosts=HOSTS, runs_root=tmp_path / "runs",
                           data_dir=folder)) as c:
        d = c.get("/api/choices").json()
    found = {x["name"]: x for x in d["datasets"]}
    assert found["mnist"]["available"] and Path(found["mnist"]["where"]) == folder / "mnist"
    assert not found["cifar10"]["available"] and "--data-dir" in found["cifar10"]["why"]
    assert not found["fashion-mnist"]["available"] and found["shapes"]["available"]
    assert found["digits"]["available"] and Path(found["digits"]["where"]) == folder / "digits"
    assert d["models"] == list(cnnlab.models.ZOO) and "mnist" in d["augment"] and "none" in d["augment"]
    from cnnlab.serve.jobs import JobManager
    jobs = JobManager(tmp_path / "runs", data_dir=folder)
    checked = jobs.check_sources({"dataset": "digits", "model": "lenet5"})
    assert checked["dataset"] == str((folder / "digits").resolve()) and checked["data_dir"] == str(folder)


def test_an_mnist_job_from_the_data_dir_streams_every_batch(data_dir, tmp_path):
    """A job on ``mnist`` found through --data-dir trains; its filters answer (empty) before the first save;
    every batch of a short run is a point; the run's examples are its own test images."""
    folder, arrays = data_dir
    app = create_app(every_kind_model(), allowed_hosts=HOSTS, runs_root=tmp_path / "runs", data_dir=folder)
    with served(app) as c:
        r = c.post("/api/runs", json={"dataset": "mnist", "model": "lenet5", "epochs": 1, "batch_size": 8})
        assert r.status_code == 201, r.text
        job = r.json()["id"]
        f = c.get(f"/api/filters?run={job}")                 # the child has not saved anything yet
        assert f.status_code == 200 and f.json()["kernel"] is None and "no saved weights" in f.json()["message"]
        events = sse(c, f"/api/runs/{job}/events")
        assert events[-1]["data"]["status"] == "completed", events[-1]
        steps = [e["data"]["step"] for e in events if e["type"] == "batch"]
        assert steps == list(range(1, 200 // 8 + 1))         # 25 batches, 25 points
        assert c.get(f"/api/filters?run={job}").json()["kernel"]["shape"] == [5, 5, 1, 6]
        d = c.get(f"/api/examples?run={job}&n=4").json()
        assert d["source"] == "mnist" and [e["label"] for e in d["examples"]] == arrays["t10k"][1][:4].tolist()


# ---------------------------------------------------------------------------
# Words for a browser, the page's options, and inputs unlike the training data
# ---------------------------------------------------------------------------
def test_notes_are_plain_words_and_the_options_are_query_parameters(data_dir, tmp_path):
    folder, _ = data_dir
    with served(create_app(cnnlab.models.lenet5(), allowed_hosts=HOSTS, runs_root=tmp_path / "runs",
                           dataset={"dataset": "mnist"}, data_dir=folder)) as c:
        ink = np.ones((200, 160))
        ink[60:140, 70:90] = 0.0                                  # a dark stroke on white paper, off centre
        d = c.post("/api/predict?input=drawing", content=png(ink)).json()
        assert len(d["notes"]) == 2 and all(n.startswith("Your drawing") for n in d["notes"]), d["notes"]
        assert "20x20 box and centred" in d["notes"][1] and "as MNIST digits are" in d["notes"][1]
        assert not any("--" in n for n in d["notes"]) and "untick" in d["notes"][0]
        kept = c.post("/api/predict?input=upload&invert=no", content=png(ink)).json()
        assert not any("inverted" in n for n in kept["notes"]) and "your picture" in kept["notes"][0].lower()
        plain = c.post("/api/predict?invert=no&center=no", content=png(ink)).json()
        assert plain["notes"] == [] and plain["probabilities"] != d["probabilities"]
        # the unit route prepares the picture the same way: its value is the forward pass of that input
        x, _ = prepare_input(png(ink), (28, 28, 1), invert="no", center="no")
        u = c.post("/api/unit?layer=conv2d&channel=0&y=3&x=4&invert=no&center=no", content=png(ink)).json()
        assert abs(u["model_value"] - layer_outputs(cnnlab.models.lenet5(), x)["conv2d"][3, 4, 0]) < 1e-5
        assert c.post("/api/predict?center=sideways", content=png(ink)).status_code == 400


def calibrated(client, body, query=""):
    """The ``novelty`` of a prediction once the measure is calibrated (in the background: until then
    ``far`` is null and the message says it is being calibrated)."""
    deadline = time.time() + 60
    while True:
        novelty = client.post("/api/predict" + query, content=body).json()["novelty"]
        if "being calibrated" not in (novelty["message"] or "") or time.time() > deadline:
            return novelty
        time.sleep(0.1)


def test_predictions_say_when_an_input_is_far_from_the_training_data(data_dir, tmp_path):
    """The served measure is cnnlab.analysis.novelty calibrated on the model's own data (here the IDX
    fixture found through --data-dir); without the data, no warning and a sentence why."""
    from cnnlab.analysis.novelty import Novelty
    folder, arrays = data_dir
    model = cnnlab.models.lenet5()
    with served(create_app(model, allowed_hosts=HOSTS, runs_root=tmp_path / "runs",
                           dataset={"dataset": "mnist"}, data_dir=folder)) as c:
        blank = calibrated(c, png(np.zeros((28, 28))))
        own = calibrated(c, png(arrays["t10k"][0][3] / 255), "?center=no")
    (x, _), (xt, _) = [(a[..., None].astype(np.float32) / 255, b) for a, b in (arrays["train"], arrays["t10k"])]
    reference = Novelty.fit(model, x, xt)
    for answer, image in ((blank, np.zeros((28, 28, 1), np.float32)), (own, xt[3])):
        expected = reference.judge(image)
        assert answer["dataset"] == "mnist" and abs(answer["score"] - expected["score"]) < 1e-6 * expected["score"]
        assert answer["threshold"] == pytest.approx(reference.threshold) and answer["far"] == expected["far"]
        assert answer["far"] == (answer["score"] > answer["threshold"]) and "Mahalanobis" in answer["measure"]
    assert blank["far"] and "unlike the mnist images" in blank["message"]
    with served(create_app(model, allowed_hosts=HOSTS, runs_root=tmp_path / "runs")) as c:
        none = calibrated(c, png(np.zeros((28, 28))))
    assert none["far"] is None and "not known" in none["message"]
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
