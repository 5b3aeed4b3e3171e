"""The lesson's steps 1-7 (cnnlab.analysis.lesson.steps_how): every key number recomputed independently
(PyTorch for the convolutions, np.convolve for the dice, slicing for shifts and patches), the rules where the
wording flips, and every step on every kind of model (grayscale and RGB, Sequential and graph, no conv)."""
import numpy as np
import pytest

from cnnlab import models
from cnnlab.analysis import lesson, texts as T
from cnnlab.analysis.lesson import how_matched
from cnnlab.analysis.lesson.how_common import N_IMAGES
from cnnlab.datasets.shapes import load_shapes
from cnnlab.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from cnnlab.layers.geometry import resolve_padding
from cnnlab.model import Sequential

torch = pytest.importorskip("torch")        # the reference of every convolution here
tf = torch.nn.functional

FIGURE_KINDS = {"maps", "curve", "bars", "table", "grid", "stepper", "slide"}
MAX_WORDS = 130


@pytest.fixture(scope="module")
def shapes():
    (xtr, ytr), (xt, yt) = load_shapes(120, 20, seed=3)
    return ((xtr, ytr), (xt, yt), [str(i) for i in range(10)], "shapes")


@pytest.fixture(scope="module")
def mlp(shapes):
    (xtr, ytr), _, _, _ = shapes
    net = Sequential([Flatten(), Dense(16), ReLU(), Dense(10)], input_shape=(28, 28, 1), seed=0)
    net.fit(xtr, ytr, epochs=1, batch_size=32, verbose=0)
    return net


SHARING = {"conv": {"params": 1234, "accuracy": 0.91}, "local": {"params": 56789, "accuracy": 0.83},
           "dense": {"params": 1300, "accuracy": 0.74}, "n_train": 500}


def _ctx(model, x, data=None, companions=None):
    return lesson.Context(model=model, x=np.asarray(x, np.float32), class_names=[], data=data,
                          companions={} if companions is None else companions)


def _built(fn, **kw):
    m = fn(**kw)
    m.build(m.input_shape)
    return m


def torch_conv(layer, x):
    """The layer's output for one image x (H, W, C), by PyTorch, float64: (Ho, Wo, F)."""
    t, b, l, r = resolve_padding(layer.padding, x.shape[:2], layer.kernel_size, layer.strides, layer.dilation)
    xt = torch.tensor(np.asarray(x, np.float64)).permute(2, 0, 1)[None]
    xt = tf.pad(xt, (l, r, t, b))
    k = torch.tensor(np.asarray(layer.params["kernel"], np.float64)).permute(3, 2, 0, 1)
    bias = torch.tensor(np.asarray(layer.params["bias"], np.float64)) if "bias" in layer.params else None
    y = tf.conv2d(xt, k, bias, stride=layer.strides, dilation=layer.dilation, groups=layer.groups)
    return y[0].permute(1, 2, 0).numpy()


def _check_shape(out):
    assert out["paragraphs"] and all(isinstance(p, str) and p for p in out["paragraphs"])
    assert sum(len(p.split()) for p in out["paragraphs"]) <= MAX_WORDS
    for k, v in out["numbers"].items():
        assert isinstance(v, (int, float)) and np.isfinite(v), (k, v)
    for f in out["figures"]:
        assert f["kind"] in FIGURE_KINDS and f.get("alt"), f


def _onnx_model(tmp_path):
    """A PyTorch network exported to ONNX and imported, as `cnnlab serve net.onnx` reads it."""
    from cnnlab.onnx import load
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                  torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 10)).eval()
        path = tmp_path / "net.onnx"
        torch.onnx.export(net, torch.zeros((1, 1, 28, 28)), str(path), dynamo=False, input_names=["input"],
                          output_names=["out"], dynamic_axes={"input": {0: "batch"}})
    finally:
        torch.set_default_dtype(previous)
    return load(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["lenet5", "tiny_cnn", "resnet8", "mnist_fast", "mlp_only", "onnx"])
def test_every_step_on_every_kind_of_model(name, shapes, mlp, tmp_path):
    if name == "mlp_only":
        model = Sequential([Flatten(), Dense(20), ReLU(), Dense(10)], input_shape=(28, 28, 1))
    elif name == "onnx":
        model = _onnx_model(tmp_path)
    else:
        model = _built(models.get(name))
    h, w, c = model.input_shape
    x = np.random.default_rng(1).uniform(0, 1, (h, w, c))
    data = shapes if c == 1 else LookupError("no CIFAR-10 here")
    companions = {"mlp": mlp, "sharing": SHARING} if c == 1 else {"mlp": "The MLP is still training (epoch 1 of 4)."}
    ctx = _ctx(model, x, data, companions)
    for n in range(1, 8):
        out = lesson.step(n, ctx)
        _check_shape(out)
        if name == "mlp_only" and n not in (1, 4):
            assert not out["applies"] and "no convolution" in out["why_not"]
        else:
            assert out["applies"], (n, out)
    if c == 3:                                      # companions and data missing: one line each, no crash
        assert "still training" in " ".join(lesson.step(1, ctx)["paragraphs"])
        assert "not available" in " ".join(lesson.step(6, ctx)["paragraphs"])
        assert "no CIFAR-10 here" in " ".join(lesson.step(7, ctx)["paragraphs"])
        ctx.companions["sharing"] = {"conv": {"params": 1, "accuracy": 0.5}}            # incomplete: said, no crash
        assert "not available" in " ".join(lesson.step(6, ctx)["paragraphs"])


def test_step1_counts_the_weights_and_the_mlp_templates_move_with_position(shapes, mlp):
    model = _built(models.lenet5)
    x = shapes[1][0][0]
    out = lesson.step(1, _ctx(model, x, shapes, {"mlp": mlp}))
    nb = out["numbers"]
    assert nb["inputs"] == 28 * 28 and nb["units"] == 120 and nb["dense_weights"] == 784 * 120
    assert nb["conv_params"] == 5 * 5 * 6 + 6
    k = mlp.layers[1].params["kernel"].astype(np.float64)
    moved = np.zeros_like(x)
    moved[3:, 3:] = x[:-3, :-3]                                     # 3 px down and right, zeros in
    r0, r1 = x.reshape(-1) @ k, moved.reshape(-1) @ k
    assert nb["mlp_shift_change"] == pytest.approx(np.linalg.norm(r1 - r0) / np.linalg.norm(r0), rel=1e-6)
    assert f"{100 * nb['mlp_shift_change']:.0f}%" in out["paragraphs"][1]
    assert len(out["figures"][1]["items"]) == 8
    mlp_only = Sequential([Flatten(), Dense(33), ReLU(), Dense(10)], input_shape=(28, 28, 1))
    plain = lesson.step(1, _ctx(mlp_only, x, shapes, {"mlp": "The MLP waits for data."}))
    assert plain["numbers"]["units"] == 33 and "conv_params" not in plain["numbers"]
    assert "The MLP waits for data." in plain["paragraphs"]


@pytest.mark.parametrize("name", ["lenet5", "resnet8"])
def test_step2_one_neuron_equals_the_layer_at_the_strongest_position(name):
    model = _built(models.get(name), seed=2)
    h, w, c = model.input_shape
    x = np.random.default_rng(5).uniform(0, 1, (h, w, c))
    out = lesson.step(2, _ctx(model, x))
    nb = out["numbers"]
    layer = next(l for l in model.layers if isinstance(l, Conv2D))
    ref = torch_conv(layer, x.astype(np.float32).astype(np.float64))
    y, xx, f = np.unravel_index(np.argmax(ref), ref.shape)
    assert (nb["filter"], nb["y"], nb["x"]) == (f, y, xx)
    assert nb["value"] == pytest.approx(ref[y, xx, f], rel=1e-5, abs=1e-6)
    assert nb["value"] == pytest.approx(nb["sum"] + nb["bias"], abs=1e-12)
    assert nb["relu"] == max(0.0, nb["value"]) and nb["difference"] < 1e-5
    products = out["figures"][2]["values"]
    assert products.sum() == pytest.approx(nb["sum"], abs=1e-9)
    assert out["link"] == {"view": "unit", "layer": layer.name, "c": f, "y": y, "x": xx}
    if name == "resnet8":                                            # no bias, a BatchNorm after it
        assert nb["bias"] == 0 and "no bias" in out["paragraphs"][0] and "BatchNorm" in out["paragraphs"][1]
    else:
        assert "ReLU" in out["paragraphs"][1]


CONFIGS = [dict(kernel_size=3, strides=1, padding="same", dilation=1), dict(kernel_size=5, strides=2, padding=1),
           dict(kernel_size=(3, 2), strides=(2, 1), padding="valid", dilation=2),
           dict(kernel_size=4, strides=3, padding="same")]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_step3_output_size_and_weights_against_pytorch(cfg):
    rng = np.random.default_rng(len(str(cfg)))
    hw, c = (int(rng.integers(11, 17)), int(rng.integers(11, 17))), int(rng.integers(1, 4))
    model = Sequential([Conv2D(4, **cfg), ReLU(), Flatten(), Dense(3)], input_shape=(*hw, c))
    x = rng.uniform(0, 1, (*hw, c))
    out = lesson.step(3, _ctx(model, x))
    nb = out["numbers"]
    layer = model.layers[0]
    ref = torch_conv(layer, x)
    assert (nb["output_h"], nb["output_w"]) == ref.shape[:2]
    q = out["predict"]
    assert q["choices"][q["answer"]] == f"{ref.shape[0]}\u00d7{ref.shape[1]}" and len(set(q["choices"])) >= 2
    kh, kw = layer.kernel_size
    assert nb["conv_params"] == kh * kw * c * 4 + 4
    assert nb["dense_weights"] == hw[0] * hw[1] * c * ref.shape[0] * ref.shape[1] * 4
    ones = Conv2D(1, **cfg, use_bias=False)                          # the connections a window keeps, by PyTorch:
    ones.build((*hw, c), dtype=np.float64)                           # a ones kernel on a ones image counts them
    ones.params["kernel"][...] = 1.0
    assert nb["window_weights"] == round(torch_conv(ones, np.ones((*hw, c))).sum()) * 4
    assert nb["window_weights"] < nb["dense_weights"]


def test_step4_dice_and_the_bridge():
    model = _built(models.lenet5, seed=1)
    x = np.random.default_rng(0).uniform(0, 1, (28, 28, 1))
    out = lesson.step(4, _ctx(model, x))
    slide = next(f for f in out["figures"] if f["kind"] == "slide")
    p, q = np.full(6, 1 / 6), np.full(6, 1 / 6)
    np.testing.assert_allclose(slide["result"], np.convolve(p, q), atol=1e-12)
    np.testing.assert_allclose(slide["products"].sum(axis=1), slide["result"], atol=1e-12)
    for j, z in enumerate(slide["z"]):
        for i, xv in enumerate(slide["x"]):
            expect = p[i] * q[z - xv - 1] if 1 <= z - xv <= 6 else 0.0
            assert slide["products"][j, i] == pytest.approx(expect, abs=1e-12)
    nb = out["numbers"]
    assert nb["peak_sum"] == 7 and nb["peak_probability"] == pytest.approx(6 / 36)
    assert nb["jitter_difference"] < 1e-12 and nb["stacked_difference"] < 1e-9
    assert (nb["composed_h"], nb["composed_w"]) == (5 + 2, 5 + 2)
    # receptive fields by the textbook recursion: r += (k - 1) * jump, jump *= stride
    r, jump, expected = 1, 1, {}
    for layer in model.layers:
        k, s = (layer.kernel_size[0], layer.strides[0]) if isinstance(layer, Conv2D) else \
            (layer.pool_size[0], layer.strides[0]) if isinstance(layer, MaxPool2D) else (1, 1)
        r, jump = r + (k - 1) * jump, jump * s
        if isinstance(layer, Conv2D):
            expected[layer.name] = r
    for name, size in expected.items():
        assert nb[f"receptive_field_h_{name}"] == size == nb[f"receptive_field_w_{name}"]
    assert "unflipped" in out["paragraphs"][0] and "14\u00d714" in out["paragraphs"][-1]


def test_step5_every_map_of_the_first_layer():
    model = _built(models.tiny_cnn, seed=4)
    x = np.random.default_rng(2).uniform(0, 1, (28, 28, 1))
    out = lesson.step(5, _ctx(model, x))
    ref = torch_conv(model.layers[0], x.astype(np.float32).astype(np.float64))
    nb = out["numbers"]
    assert (nb["filters"], nb["map_h"], nb["map_w"]) == (8, 28, 28)
    assert nb["strongest"] == int(np.unravel_index(np.argmax(ref), ref.shape)[2])
    assert nb["active_fraction"] == pytest.approx(np.mean(ref > 0), abs=2 / ref.size)
    maps = out["figures"][0]["items"]
    assert len(maps) == 8
    np.testing.assert_allclose(maps[3]["map"], ref[:, :, 3], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2, (2, 3)])
def test_step6_maps_move_with_the_input(stride):
    model = Sequential([Conv2D(5, 3, strides=stride, padding="same"), ReLU(), Flatten(), Dense(3)],
                       input_shape=(20, 20, 1), seed=3)
    x = np.zeros((20, 20, 1))
    x[6:12, 5:9] = np.random.default_rng(0).uniform(0.2, 1, (6, 4, 1))
    out = lesson.step(6, _ctx(model, x, companions={"sharing": SHARING}))
    nb = out["numbers"]
    d = nb["shift"]
    sy, sx = (stride, stride) if isinstance(stride, int) else stride
    assert d % sy == 0 and d % sx == 0 and d >= 3
    layer = model.layers[0]
    moved = np.zeros_like(x)
    moved[d:, d:] = x[:-d, :-d]
    a, b = torch_conv(layer, moved), torch_conv(layer, x)
    my, mx, bd = d // sy, d // sx, nb["border"]
    assert (nb["map_shift_y"], nb["map_shift_x"]) == (my, mx)
    inner = (slice(my + bd, a.shape[0] - my - bd), slice(mx + bd, a.shape[1] - mx - bd))
    shifted = np.zeros_like(b)
    shifted[my:, mx:] = b[:-my, :-mx]
    assert np.abs(a[inner] - shifted[inner]).max() < 1e-5 and nb["max_difference"] < 1e-5
    assert out["predict"]["answer"] == 0
    table = next(f for f in out["figures"] if f["kind"] == "table")
    assert [r[1] for r in table["rows"]] == [1234, 56789, 1300]
    assert nb["conv_accuracy"] == 0.91 and "Sharing wins" in out["paragraphs"][-1]


def test_sharing_and_equivariance_wording_flips():
    params = {"conv": 100, "local": 1000, "dense": 120}
    assert "Sharing wins" in T.lesson_sharing_result(300, params, {"conv": 0.9, "local": 0.8, "dense": 0.7})
    assert "about the same" in T.lesson_sharing_result(300, params, {"conv": 0.9, "local": 0.895, "dense": 0.7})
    assert "did not win" in T.lesson_sharing_result(300, params, {"conv": 0.8, "local": 0.9, "dense": 0.7})
    assert "unchanged" in T.lesson_equivariance(3, (3, 3), 1e-7, 1e-7, 2)
    assert "2 rows and 1 column of" in T.lesson_equivariance(4, (2, 1), 1e-7, 1e-7, 2)
    broken = T.lesson_equivariance(3, (3, 3), 0.2, 0.1, 0)
    assert "do not simply move" in broken and "equivariant" not in broken


def test_step7_matched_filtering(shapes, monkeypatch):
    monkeypatch.setattr(how_matched, "SAMPLE", 10 ** 9)              # every patch: the full rank correlation
    model = _built(models.lenet5, seed=6)
    x = shapes[1][0][4]
    out = lesson.step(7, _ctx(model, x, shapes))
    nb = out["numbers"]
    layer = model.layers[0]
    ref = torch_conv(layer, x.astype(np.float64))
    f = int(np.unravel_index(np.argmax(ref), ref.shape)[2])
    assert nb["filter"] == f
    offered = [int(c.split()[-1]) for c in out["predict"]["choices"]]
    assert offered[out["predict"]["answer"]] == f
    assert nb["kernel_norm"] * nb["patch_norm"] * nb["cosine"] == pytest.approx(nb["response"], rel=1e-9)
    assert nb["response"] + nb["bias"] == pytest.approx(ref[nb["y"], nb["x"], f], rel=1e-5, abs=1e-6)
    # the rank correlations from patches cut out by PyTorch's unfold
    images = shapes[0][0][:N_IMAGES]
    xt = tf.pad(torch.tensor(images.astype(np.float64)).permute(0, 3, 1, 2), (2, 2, 2, 2))
    patches = tf.unfold(xt, 5).permute(0, 2, 1).reshape(-1, 25).numpy()
    k = layer.params["kernel"][..., f].reshape(-1).astype(np.float64)
    norm = np.linalg.norm(patches, axis=1)
    resp = patches @ k
    keep = (norm > 0) & (resp > 0)                                  # the patches the filter answers
    resp, norm = resp[keep], norm[keep]
    cos = resp / (norm * np.linalg.norm(k))

    def rho(a, b):
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        return np.corrcoef(ra, rb)[0, 1]
    assert nb["rho_norm"] == pytest.approx(rho(resp, norm), abs=0.02)
    assert nb["rho_cosine"] == pytest.approx(rho(resp, cos), abs=0.02)
    assert nb["answered"] == keep.sum()
    assert nb["response_mean_cosine"] > nb["random_cosine_mean"]
    text = " ".join(out["paragraphs"])
    assert f"{nb['rho_norm']:.2f}" in text and f"{nb['rho_cosine']:.2f}" in text


def test_contrast_or_shape_wording_flips():
    def said(a, b):
        return T.lesson_contrast_or_shape(0, 100, "shapes", a, b, a, b, 0.5, 0.1, 0.2)[0]
    assert "mostly contrast" in said(0.8, 0.4)
    assert "mostly shape" in said(0.3, 0.8)
    assert "about equally" in said(0.5, 0.55)


def test_every_step_through_the_server_equals_the_step_itself(tmp_path):
    """POST /api/lesson/N with a picture: the JSON numbers are the step's own, for a model with strides,
    padding, dilation, groups and BatchNorm (the API tests' model)."""
    from cnnlab.serve.app import create_app
    from tests.test_serve_api import HOSTS, every_kind_model, png, served
    a = np.random.default_rng(1).uniform(0, 1, (20, 18))
    a[[0, -1], :] *= 0.3
    a[:, [0, -1]] *= 0.3
    app = create_app(every_kind_model(), class_names=["a", "b", "c"], runs_root=tmp_path, allowed_hosts=HOSTS)
    x = np.round(np.clip(a, 0, 1) * 255)[..., None] / 255            # the picture as the server prepares it
    with served(app) as client:
        for n in range(1, 8):
            r = client.post(f"/api/lesson/{n}", content=png(a))
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["step"] == n and got["applies"] and got["paragraphs"]
            assert all(f.get("alt") for f in got["figures"])
            direct = lesson.step(n, _ctx(every_kind_model(), x))
            for k, v in direct["numbers"].items():
                assert got["numbers"][k] == pytest.approx(v, rel=1e-3, abs=2e-3), (n, k)


def test_neuron_and_template_wording_flips():
    def said(value, has_bias=True, after="ReLU"):
        return " ".join(T.lesson_neuron("conv", 0, 1, 2, (3, 3), 1, value - 0.1, 0.1, value, value, has_bias, after))
    assert "keeps it" in said(0.5) and "sets it to 0" in said(-0.5)
    assert "no bias" in said(0.5, has_bias=False) and "no bias" not in said(0.5)
    assert "BatchNorm" in said(0.5, after="BatchNorm") and "ReLU keeps" not in said(0.5, after="BatchNorm")
    assert "barely change (4.0%)" in T.lesson_mlp_templates(64, 3, 0.04)
    assert "change by 81%" in T.lesson_mlp_templates(64, 3, 0.81)
