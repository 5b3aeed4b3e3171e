"""The lesson's steps 8-14 (cnnlab.analysis.lesson.steps_why): their key numbers recomputed independently
(PyTorch, plain NumPy, a run's own filter snapshots), and the rules where the wording must flip."""
import copy
import json

import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L, models
from cnnlab.analysis import filters, lesson, texts
from cnnlab.analysis.baselines import cnn_gap
from cnnlab.analysis.layers import capture, first_conv, layer_inputs
from cnnlab.analysis.lesson import tryit
from cnnlab.analysis.lesson.companions import untrained_copy
from cnnlab.serve import compute
from test_lesson_how import torch_conv        # the PyTorch reference of a convolution, float64

torch = pytest.importorskip("torch")
F = torch.nn.functional
NO_DATA = LookupError("no data in this test")


def stroke_image(h=28, w=28, c=1):
    """An L-shaped stroke in the middle: a corner, two edges, room to move 8 pixels either way on 28x28."""
    x = np.zeros((h, w, c), np.float32)
    x[h // 2 - 6:h // 2 + 5, w // 2 - 3:w // 2 - 1] = 1.0
    x[h // 2 + 3:h // 2 + 5, w // 2 - 3:w // 2 + 3] = 1.0
    return x


def ctx_for(model, x=None, data=NO_DATA, **companions):
    comp = {"untrained": untrained_copy(model), "mlp": "No MLP here: test.", "gap": "No GAP model here: test.",
            "sharing": "No experiment here: test.", **companions}
    x = stroke_image(*model.input_shape) if x is None else x
    return lesson.Context(model=model, x=x, class_names=[f"class {i}" for i in range(model.num_classes)],
                          data=data, companions=comp)


def by_id(n, ctx):
    return lesson.step(n, ctx)


def mlp_only():
    return cnnlab.Sequential([L.Flatten(), L.Dense(12), L.ReLU(), L.Dense(10)], input_shape=(28, 28, 1))


def nudged(model, seed=1, scale=0.3):
    """``model`` with every weight moved a little from its start: trained-looking, its start still known."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for v in layer.params.values():
            v += (scale * rng.standard_normal(v.shape) * (np.abs(v).mean() + 1e-3)).astype(v.dtype)
    return model


def shift_right(x, s):
    """Zero-filled shift of (N, H, W, C) images by ``s`` columns, written here for the test."""
    out = np.zeros_like(x)
    if s >= 0:
        out[:, :, s:] = x[:, :, :x.shape[2] - s]
    else:
        out[:, :, :s] = x[:, :, -s:]
    return out


def torch_imported():
    """A PyTorch LeNet-like network exported to ONNX and read by cnnlab's importer (channels first in
    PyTorch; cnnlab's own layers after the import)."""
    pytest.importorskip("onnx")
    import tempfile
    from cnnlab.onnx.importer import load
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 6 * 6, 10)).float().eval()
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/net.onnx"
        torch.onnx.export(net, torch.zeros(2, 1, 28, 28, dtype=torch.float32), path, dynamo=False,
                          input_names=["input"], output_names=["out"], dynamic_axes={"input": {0: "batch"}})
        return load(path)


# ---------------------------------------------------------------------------
# Every step on every kind of model
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("make", [models.lenet5, models.tiny_cnn, models.resnet8, models.mnist_fast, mlp_only,
                                  torch_imported])
def test_every_step_on_every_model(make):
    model = make()
    ctx = ctx_for(model)
    for n in range(8, 15):
        out = lesson.step(n, ctx)
        json.dumps(compute.jsonable(out))                              # what the server sends
        assert out["paragraphs"] and all(isinstance(p, str) and p for p in out["paragraphs"])
        if not out["applies"]:
            assert len(out["paragraphs"]) == 1 and "\n" not in out["why_not"]
    if make is mlp_only:
        for n in (8, 9, 10):
            out = lesson.step(n, ctx)
            assert not out["applies"] and "no convolution" in out["why_not"]


# ---------------------------------------------------------------------------
# Step 8
# ---------------------------------------------------------------------------
def test_untrained_model_is_never_called_an_edge_detector():
    model = models.tiny_cnn()
    out = lesson.step(8, ctx_for(model))
    assert out["numbers"]["trained"] is False
    text = " ".join(out["paragraphs"])
    assert "not an edge detector" in text and "detectors" not in text.replace("not an edge detector", "")
    assert "added_relative" not in out["numbers"]


def test_what_training_added_matches_the_runs_own_snapshot(tmp_path):
    from cnnlab.runs import make_config, read_filter_snapshots, run_training
    run_training(make_config(model="tiny_cnn", dataset="shapes", dataset_options={"n_train": 192, "n_test": 64},
                             epochs=1, batch_size=32, snapshot_filters=3, workers=1), tmp_path, verbose=0, plot=False)
    model = cnnlab.load(tmp_path)
    snaps = read_filter_snapshots(tmp_path / "filters.safetensors")
    k0 = np.asarray(snaps[min(snaps)], np.float64)                    # the run's own record of the start
    k = np.asarray(first_conv(model).params["kernel"], np.float64)
    out = lesson.step(8, ctx_for(model))
    assert out["numbers"]["trained"] is True
    assert out["numbers"]["added_relative"] == pytest.approx(np.linalg.norm(k - k0) / np.linalg.norm(k0), rel=1e-6)
    assert out["numbers"]["oriented"] == filters.oriented(k, initial=k0)["count"]
    assert out["paragraphs"][0] == texts.filters_sentence(out["numbers"]["oriented"], 8, trained=True)
    # the patch sum: one patch per output position of the 28x28 'same' convolution, equal to the layer's gradient
    assert out["numbers"]["gradient_positions"] == 28 * 28 and out["numbers"]["gradient_difference"] < 1e-4


def test_gradient_identity_against_pytorch():
    """The step states the kernel's gradient for this input; PyTorch's autograd gives the same through the
    first convolution (a model of conv -> ReLU -> dense, the loss with the predicted class)."""
    model = cnnlab.Sequential([L.Conv2D(3, 3), L.ReLU(), L.Flatten(), L.Dense(4)], input_shape=(8, 8, 1), seed=2)
    x = np.random.default_rng(0).uniform(0, 1, (8, 8, 1)).astype(np.float32)
    from cnnlab.analysis.lesson.why_edges import _gradient_check
    conv = first_conv(model)
    _gradient_check(model, conv, x)
    ours = np.asarray(conv.grads["kernel"], np.float64)
    k = torch.tensor(np.asarray(conv.params["kernel"], np.float64).transpose(3, 2, 0, 1), requires_grad=True)
    dense = model.layers[3]
    h = F.relu(F.conv2d(torch.tensor(x, dtype=torch.float64).permute(2, 0, 1)[None], k,
                        torch.tensor(np.asarray(conv.params["bias"], np.float64))))
    z = h.permute(0, 2, 3, 1).reshape(1, -1) @ torch.tensor(np.asarray(dense.params["kernel"], np.float64)) \
        + torch.tensor(np.asarray(dense.params["bias"], np.float64))
    F.cross_entropy(z, z.argmax(1)).backward()
    np.testing.assert_allclose(ours, k.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-4, atol=1e-6)


def test_random_filters_are_read_from_the_sharing_experiment():
    model = nudged(models.tiny_cnn())
    sharing = {"conv": {"params": 100, "accuracy": 0.9}, "local": {"params": 900, "accuracy": 0.85},
               "dense": {"params": 100, "accuracy": 0.6}, "random_filters": {"params": 100, "accuracy": 0.7},
               "n_train": 2000, "n_test": 1000}
    out = lesson.step(8, ctx_for(model, sharing=sharing))
    assert out["numbers"]["random_filters_accuracy"] == 0.7
    assert texts.random_filters_sentence(0.9, 0.7, 0.1) in out["paragraphs"][-1]


# ---------------------------------------------------------------------------
# Step 9
# ---------------------------------------------------------------------------
def test_pooling_three_ways_against_pytorch():
    model = models.lenet5()
    x = stroke_image()
    out = lesson.step(9, ctx_for(model, x))
    fig = out["figures"][0]["items"]
    c = int(fig[0]["label"].split("channel ")[1])
    pool = next(l for l in model.layers if isinstance(l, (L.MaxPool2D, L.AvgPool2D)))
    _, acts = capture(model, x)
    maps = layer_inputs(model, pool, x[None])[0]
    t = torch.tensor(np.asarray(maps, np.float64)).permute(2, 0, 1)[None]
    np.testing.assert_allclose(fig[0]["map"], maps[..., c], rtol=1e-6)
    np.testing.assert_allclose(fig[1]["map"], maps[::2, ::2, c], rtol=1e-6)
    np.testing.assert_allclose(fig[2]["map"], F.avg_pool2d(t, 2)[0, c].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fig[3]["map"], F.max_pool2d(t, 2)[0, c].numpy(), rtol=1e-5, atol=1e-6)
    assert out["numbers"]["own_difference"] < 1e-5
    assert out["numbers"]["pooled_size"] == [maps.shape[0] // 2, maps.shape[1] // 2]
    # the change after a 1-pixel shift, recomputed: the map of the shifted input, max-pooled by PyTorch
    moved = layer_inputs(model, pool, shift_right(x[None], 1))[0]
    p0, p1 = (F.max_pool2d(torch.tensor(np.asarray(m, np.float64)).permute(2, 0, 1)[None], 2).numpy()
              for m in (maps, moved))
    assert out["numbers"]["change"]["max"][1] == pytest.approx(np.linalg.norm(p1 - p0) / np.linalg.norm(p0), rel=1e-4)
    assert texts.pooling_sentence(2, out["numbers"]["change"], 1) in out["paragraphs"]


def test_a_model_without_pooling_says_so():
    plain = cnnlab.Sequential([L.Conv2D(4, 3, padding="same"), L.ReLU(), L.Flatten(), L.Dense(3)],
                              input_shape=(12, 12, 1))
    out = lesson.step(9, ctx_for(plain, stroke_image(12, 12)))
    text = " ".join(out["paragraphs"])
    assert "no pooling" in text and out["numbers"]["pooling_layers"] == 0
    pooled = lesson.step(9, ctx_for(models.lenet5()))
    assert "no pooling" not in " ".join(pooled["paragraphs"])


# ---------------------------------------------------------------------------
# Step 10
# ---------------------------------------------------------------------------
def test_second_layer_unit_against_pytorch():
    model = models.lenet5()
    x = stroke_image()
    out = lesson.step(10, ctx_for(model, x))
    n = out["numbers"]
    second = [l for l in model.layers if isinstance(l, L.Conv2D)][1]
    inp = layer_inputs(model, second, x[None])[0]
    ref = torch_conv(second, inp)
    assert n["value"] == pytest.approx(ref[n["y"], n["x"], n["channel"]], rel=1e-5, abs=1e-6)
    assert ref[..., n["channel"]].max() == pytest.approx(n["value"], rel=1e-5, abs=1e-6)   # the strongest unit
    # each first-layer map's share: the convolution of that map alone, bias left out
    for m in range(inp.shape[2]):
        only = np.zeros_like(inp)
        only[..., m] = inp[..., m]
        share = torch_conv(second, only)[n["y"], n["x"], n["channel"]] - float(second.params["bias"][n["channel"]])
        assert n["channel_sums"][m] == pytest.approx(share, rel=1e-4, abs=1e-6)
    assert n["maps_summed"] == 6 and n["receptive_field"] == [5 + 1 + 2 * 4] * 2   # 5x5 conv, 2x2 pool (+1), 5x5 conv (+4 steps of 2)
    text = out["paragraphs"][0]
    assert "combinations" in text and "corners" not in text           # an untrained model: no corner claims


def test_corners_only_where_two_oriented_edges_meet():
    model = cnnlab.Sequential([L.Conv2D(4, 5, padding="same"), L.ReLU(), L.MaxPool2D(2),
                               L.Conv2D(2, 3, padding="same"), L.ReLU(), L.Flatten(), L.Dense(3)],
                              input_shape=(16, 16, 1), seed=0)
    k = np.zeros((5, 5, 1, 4), np.float32)
    k[1, :, 0, 0], k[3, :, 0, 0] = -1, 1                               # a horizontal edge
    k[:, 1, 0, 1], k[:, 3, 0, 1] = -1, 1                               # a vertical edge
    k[..., 2] = np.random.default_rng(0).standard_normal((5, 5, 1)) * 0.1
    k[..., 3] = np.random.default_rng(1).standard_normal((5, 5, 1)) * 0.1
    model.layers[0].params["kernel"][...] = k
    k2 = np.zeros((3, 3, 4, 2), np.float32)
    k2[:, :, 0, 0], k2[:, :, 1, 0] = 1.0, 1.0                          # unit 0 adds the two edges
    model.layers[3].params["kernel"][...] = k2
    x = stroke_image(16, 16)
    x[:] = 0
    x[4:12, 4] = 1
    x[11, 4:12] = 1                                                    # an L: a corner
    out = lesson.step(10, ctx_for(model, x))
    assert out["numbers"]["channel"] == 0
    oriented = filters.oriented(k)
    assert oriented["oriented"][0] and oriented["oriented"][1]
    assert "corners" in out["paragraphs"][0]


# ---------------------------------------------------------------------------
# Step 11
# ---------------------------------------------------------------------------
def test_classifier_numbers():
    model = models.lenet5()
    x = stroke_image()
    out = lesson.step(11, ctx_for(model, x))
    z = np.asarray(out["numbers"]["logits"])
    np.testing.assert_allclose(z, model.logits(x[None])[0], rtol=1e-6)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(out["numbers"]["probabilities"], p, rtol=1e-9)
    assert out["numbers"]["features"] == 5 * 5 * 16                     # LeNet-5's flattened 5x5x16 maps
    rows = out["figures"][0]["rows"]
    assert [r[1] for r in rows][:2] == ["Flatten", "Dense"] and rows[-1][2] == "10"
    assert "softmax" in out["paragraphs"][1].lower()


def test_svm_head_is_not_called_probabilities():
    model = cnnlab.Sequential([L.Flatten(), L.Dense(5)], input_shape=(6, 6, 1), loss="svm")
    x = np.random.default_rng(0).uniform(0, 1, (6, 6, 1)).astype(np.float32)
    out = lesson.step(11, ctx_for(model, x))
    z = np.sort(model.logits(x[None])[0])
    assert out["numbers"]["margin"] == pytest.approx(z[-1] - z[-2], rel=1e-6)
    assert "SVM" in out["paragraphs"][1] and "probabilities" not in out["numbers"]


# ---------------------------------------------------------------------------
# Step 12
# ---------------------------------------------------------------------------
def _change(model, x, name, s):
    _, a = capture(model, x)
    _, b = capture(model, shift_right(x[None], s)[0])
    fa, fb = np.ravel(a[name]).astype(np.float64), np.ravel(b[name]).astype(np.float64)
    return np.linalg.norm(fb - fa) / np.linalg.norm(fa)


def test_invariance_wording_flips_between_gap_and_lenet5():
    x = stroke_image()
    lenet = models.lenet5()
    gap = cnnlab.Sequential([L.Conv2D(6, 3, padding="same"), L.ReLU(), L.GlobalAvgPool2D(), L.Dense(10)],
                            input_shape=(28, 28, 1), seed=0)      # one convolution, averaged over all positions
    for model, features in ((lenet, lenet.layers[-2].name), (gap, gap.layers[-2].name)):
        out = lesson.step(12, ctx_for(model, x))
        i8 = out["numbers"]["shifts"].index(8)
        for s in (8, -8):
            got = out["numbers"]["feature_change"][next(iter(out["numbers"]["feature_change"]))]
            assert got[out["numbers"]["shifts"].index(s)] == pytest.approx(_change(model, x, features, s), rel=1e-4)
        out["change8"] = _change(model, x, features, 8)
        if model is gap:
            gap_out = out
        else:
            lenet_out = out
        assert i8 >= 0
    assert gap_out["change8"] < 0.1 < lenet_out["change8"]              # measured: the premise of the flip
    assert "nearly shift-invariant" in gap_out["paragraphs"][0]
    assert "nearly" not in lenet_out["paragraphs"][0]


def test_invariance_compares_with_the_companions():
    x = stroke_image()
    lenet = models.lenet5()
    out = lesson.step(12, ctx_for(lenet, x, gap=cnn_gap((28, 28, 1), 10), mlp=mlp_only()))
    assert set(out["numbers"]["feature_change"]) == {"cnn", "cnn_gap", "mlp"}
    assert "Only the model with global average pooling" in out["paragraphs"][1]


# ---------------------------------------------------------------------------
# Step 13
# ---------------------------------------------------------------------------
def test_sanity_check_rank_correlation():
    model = nudged(models.tiny_cnn(), scale=3.0)
    x = stroke_image() + np.random.default_rng(5).uniform(0, 0.1, (28, 28, 1)).astype(np.float32)   # no max-pool ties
    out = lesson.step(13, ctx_for(model, x))
    items = out["figures"][0]["items"]
    sal, sal_u = items[0]["map"], items[2]["map"]
    k = out["numbers"]["class"]

    def ranks(a):
        """Spearman's ranks, ties averaged, by counting: rank = (number below) + (number equal + 1) / 2."""
        a = np.asarray(a, np.float64).ravel()
        values, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
        below = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return (below + (counts + 1) / 2)[inverse]

    rho = np.corrcoef(ranks(sal), ranks(sal_u))[0, 1]
    assert out["numbers"]["rank_correlation"]["saliency"] == pytest.approx(rho, abs=1e-6)
    # the saliency itself: |dS_k/dx| by finite differences at the strongest pixel
    i, j = np.unravel_index(np.argmax(sal), sal.shape)
    m64 = copy.deepcopy(model).astype(np.float64)
    eps = 1e-6
    xp, xm = x.astype(np.float64), x.astype(np.float64)
    xp[i, j, 0] += eps
    xm[i, j, 0] -= eps
    fd = (m64.logits(xp[None])[0, k] - m64.logits(xm[None])[0, k]) / (2 * eps)
    assert sal[i, j] == pytest.approx(abs(fd), rel=0.05)


def test_an_untrained_model_says_its_maps_show_nothing_learned():
    out = lesson.step(13, ctx_for(models.tiny_cnn()))
    assert "itself untrained" in out["paragraphs"][1]


# ---------------------------------------------------------------------------
# Step 14 and its route
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,size,stride,padding,dilation,pool", [
    ("edge", 3, 1, "valid", 1, 2), ("blur", 5, 2, "same", 1, 0), ("sharpen", 3, 1, "2", 2, 3),
    ("custom", 2, 3, "1,0", 1, 2), ("trained:3", 0, 1, "same", 2, 2)])
def test_try_kernel_against_pytorch(kernel, size, stride, padding, dilation, pool):
    model = models.tiny_cnn()
    x = np.random.default_rng(1).uniform(0, 1, (28, 28, 1)).astype(np.float32)
    values = [0.5, -1.0, 2.0, 0.25] if kernel == "custom" else None
    r = tryit.try_kernel(model, x, kernel, size or 3, stride, padding, dilation, pool, values)
    if kernel.startswith("trained"):
        k = np.asarray(first_conv(model).params["kernel"][..., 3, None], np.float64)[..., 0, :]   # (5, 5, 1)
    else:
        k = {"edge": lambda: np.array([[-1, 0, 1]] * 3, float), "blur": lambda: np.full((5, 5), 1 / 25),
             "sharpen": lambda: 2 * np.eye(3)[1][:, None] * np.eye(3)[1][None] - np.full((3, 3), 1 / 9),
             "custom": lambda: np.array(values).reshape(2, 2)}[kernel]()[..., None]
    np.testing.assert_allclose(r["kernel"], k[..., 0], rtol=1e-12)
    t = torch.tensor(x, dtype=torch.float64).permute(2, 0, 1)[None]
    if padding == "same":
        total = max((-(-28 // stride) - 1) * stride + dilation * (k.shape[0] - 1) + 1 - 28, 0)   # TensorFlow's 'same'
        pads = (total // 2, total - total // 2) * 2
    else:
        ph, pw = (0, 0) if padding == "valid" else ((int(padding),) * 2 if "," not in padding
                                                     else tuple(int(v) for v in padding.split(",")))
        pads = (pw, pw, ph, ph)
    w = torch.tensor(k).permute(2, 0, 1)[None]
    ref = F.conv2d(F.pad(t, pads), w, stride=stride, dilation=dilation)[0, 0].numpy()
    np.testing.assert_allclose(r["output"], ref, rtol=1e-5, atol=1e-6)
    assert r["sizes"]["output"] == list(ref.shape)
    if pool:
        np.testing.assert_allclose(r["pooled"], F.max_pool2d(torch.tensor(ref)[None, None], pool)[0, 0].numpy(),
                                   rtol=1e-5, atol=1e-6)
    else:
        assert r["pooled"] is None


def test_try_step_and_route(tmp_path):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient
    from cnnlab.serve.app import create_app
    from test_serve_api import png
    model = models.tiny_cnn()
    out = lesson.step(14, ctx_for(model))
    fig = out["figures"][0]
    assert fig["kind"] == "tryit" and "trained:0" in fig["kernels"] and out["numbers"]["output_size"] == [26, 26]
    img = np.random.default_rng(3).uniform(0, 1, (28, 28)) * 0.2
    app = create_app(model, runs_root=tmp_path / "runs", allowed_hosts=("testserver",))
    with TestClient(app) as c:
        assert c.get("/").status_code == 200
        r = c.post("/api/lesson/try?kernel=blur&size=3&stride=2&padding=same&pool=2", content=png(img))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["sizes"]["output"] == [14, 14] and body["sizes"]["pooled"] == [7, 7]
        for query, words in [("kernel=wave", "kernel must be one of"), ("size=12", "size must be"),
                             ("stride=x", "'stride' must be an integer"), ("kernel=custom&size=2&values=1,2,3",
                                                                           "needs 4 values"),
                             ("kernel=custom&size=2&values=1,2,a,4", "not a number"),
                             ("kernel=trained:99", "K from 0 to 7"), ("padding=huge", "padding must be"),
                             ("size=9&dilation=4", "spans 33 pixels"), ("pool=9", "pool must be")]:
            r = c.post(f"/api/lesson/try?{query}", content=png(img))
            assert r.status_code == 400 and words in r.json()["error"], (query, r.text)


# ---------------------------------------------------------------------------
# With the model's own data
# ---------------------------------------------------------------------------
def test_steps_with_the_models_own_data():
    from cnnlab.datasets import load_dataset
    (x, y), (xt, yt), info = load_dataset("shapes", n_train=64, n_test=16)
    data = ((x, y), (xt, yt), info["class_names"], "shapes")
    model = models.lenet5()
    ctx = ctx_for(model, data=data)
    edges = lesson.step(8, ctx)
    labels = [f.get("label", "") for f in edges["figures"]]
    assert any("principal components" in l for l in labels) and any("64 of its training images" in l for l in labels)
    comps, ratio = filters.patch_components(x, 5, 5, n=10000)
    assert edges["numbers"]["component_variance"] == pytest.approx(ratio[:8].tolist(), rel=1e-9)
    inv = lesson.step(12, ctx)
    assert inv["numbers"]["n_test"] == 16
    kept = np.mean(np.argmax(model.logits(shift_right(xt, 8)), 1) == np.argmax(model.logits(xt), 1))
    assert inv["numbers"]["kept"]["cnn"][inv["numbers"]["shifts"].index(8)] == pytest.approx(kept)


def test_without_data_the_current_input_is_never_kept_across_inputs():
    model = models.tiny_cnn()
    a = lesson.step(8, ctx_for(model))
    other = np.random.default_rng(0).uniform(0, 1, (28, 28, 1)).astype(np.float32)
    b = lesson.step(8, ctx_for(model, other))
    top = [next(f for f in out["figures"] if "answers most" in f.get("label", "")) for out in (a, b)]
    assert not np.allclose(top[0]["items"][0]["map"], top[1]["items"][0]["map"])


def test_sentences_never_contradict_their_numbers():
    # predictions lost at an intermediate shift and kept at the largest: the lowest is named, not "only 100%"
    text = texts.invariance_sentence("m", [0, 1, 2, 4], [0, 0.3, 0.5, 0.6], [1, 1, 0.5, 1.0])
    assert "only 100%" not in text and "at 2 pixels it keeps only 50%" in text
    # a model whose start is not known (an import): the oriented test it was given is the one stated
    model = torch_imported()
    out = lesson.step(8, ctx_for(model))
    assert "own value at the start" not in out["paragraphs"][0]
    assert out["paragraphs"][0] == texts.filters_sentence(out["numbers"]["oriented"], 4, initial_known=False)
