"""``cnnlab explain conv``: the numbers in conv.json against an independent computation, the GIF, the page."""
import argparse
import json
import re

import numpy as np
import pytest
from PIL import Image

from cnnlab.datasets import SHAPES_CLASSES, load_shapes
from cnnlab.explain import explain_conv
from cnnlab.explain.cli import TOOLS, register
from cnnlab.explain.conv import NAMED_KERNELS, edge_detector
from test_explain_features import write_idx


def reference_conv(x, k, bias, stride, pads, dilation):
    """Plain loops over output cells, taps and channels (no cnnlab code)."""
    x = np.asarray(x, float)
    k = np.asarray(k, float)
    if x.ndim == 2:
        x = x[:, :, None]
    if k.ndim == 2:
        k = k[:, :, None]
    t, b, l, r = pads
    h, w, c = x.shape
    xp = np.zeros((h + t + b, w + l + r, c))
    xp[t:t + h, l:l + w] = x
    kh, kw, _ = k.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho = (xp.shape[0] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[1] - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((ho, wo))
    for i in range(ho):
        for j in range(wo):
            acc = bias
            for p in range(kh):
                for q in range(kw):
                    for ch in range(c):
                        acc += xp[i * sh + p * dh, j * sw + q * dw, ch] * k[p, q, ch]
            y[i, j] = acc
    return y


def same_pads(n, k, s, d):
    total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def check_page(path, kinds=("png", "gif")):
    text = path.read_text(encoding="utf-8")
    for kind in kinds:
        assert f"data:image/{kind};base64," in text
    assert "http://" not in text and "https://" not in text
    assert not re.search(r'(src|href)="(?!data:|#)', text), "every src/href must be inline"
    return text


def gif_frames(path):
    with Image.open(path) as im:
        return im.n_frames


def test_classic_example(tmp_path):
    res = explain_conv(out=tmp_path)
    data = json.loads((tmp_path / "conv.json").read_text())
    assert data["input"] == [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]
    assert data["kernel"] == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    assert data["output"] == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
    assert data["stride"] == [1, 1] and data["padding"] == "valid" and data["dilation"] == [1, 1]
    assert data["bias"] == 0
    x, k = np.array(data["input"]), np.array(data["kernel"])
    assert len(data["positions"]) == 9
    for rec in data["positions"]:                   # every step's products are the window times the kernel
        i, j = rec["row"], rec["col"]
        window = x[i:i + 3, j:j + 3]
        np.testing.assert_array_equal(rec["products"], window * k)
        assert rec["sum"] == (window * k).sum() and rec["value"] == data["output"][i][j]
    assert data["frames"] == 9 and gif_frames(tmp_path / "conv.gif") == 9
    page = check_page(tmp_path / "conv.html")
    assert "prev" in page and "next" in page and 'type="range"' in page
    assert page.count("data:image/png;base64,") >= 9 + 1       # the frames and the final output
    for name in ("conv_output.png", "conv_step_first.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 300
    assert set(res["files"]) >= {"gif", "html", "json"}


@pytest.mark.parametrize("opts", [
    dict(stride=2, padding="same", kernel="sobel-x", shape=(7, 7, 1)),
    dict(stride=1, padding=1, dilation=2, channels=3, shape=None),
    dict(stride=(1, 2), padding=(0, 1), kernel="[[1, -2, 0.5], [0, 3, -1]]", bias=0.5, shape=(5, 6, 1)),
    dict(stride=1, padding="same", kernel="blur", dilation=(2, 1), shape=(6, 5, 2)),
])
def test_options_match_an_independent_convolution(tmp_path, opts):
    opts = dict(opts)
    shape = opts.pop("shape")
    image = None
    if shape is not None:
        image = np.random.default_rng(3).integers(0, 4, shape).astype(float) / 2
        image = image[:, :, 0] if shape[2] == 1 else image
    explain_conv(out=tmp_path, image=image, **opts)
    d = json.loads((tmp_path / "conv.json").read_text())
    x, k = np.array(d["input"]), np.array(d["kernel"])
    if image is not None:
        np.testing.assert_allclose(x, image)
    if "kernel" in opts and opts["kernel"] in NAMED_KERNELS:
        np.testing.assert_allclose(k if k.ndim == 2 else k[:, :, 0], NAMED_KERNELS[opts["kernel"]])
    stride = tuple(d["stride"])
    dil = tuple(d["dilation"])
    kh, kw = k.shape[:2]
    h, w = x.shape[:2]
    if d["padding"] == "same":
        pads = (*same_pads(h, kh, stride[0], dil[0]), *same_pads(w, kw, stride[1], dil[1]))
    elif isinstance(d["padding"], list):
        pads = (d["padding"][0],) * 2 + (d["padding"][1],) * 2
    else:
        pads = (d["padding"],) * 4
    assert tuple(d["pads"]) == pads
    expected = reference_conv(x, k, opts.get("bias", 0.0), stride, pads, dil)
    np.testing.assert_allclose(d["output"], expected, atol=1e-9)
    assert d["bias"] == opts.get("bias", 0.0)
    n = expected.size
    assert d["frames"] == n and len(d["positions"]) == n and gif_frames(tmp_path / "conv.gif") == n
    for rec in d["positions"]:
        np.testing.assert_allclose(np.sum(rec["products"]) + d["bias"], expected[rec["row"], rec["col"]], atol=1e-9)
    check_page(tmp_path / "conv.html")


def test_user_image_and_kernel_from_a_model(tmp_path):
    from cnnlab.layers import Conv2D, Dense, Flatten
    from cnnlab.model import Sequential
    pic = (np.arange(100).reshape(10, 10) * 2.5).astype(np.uint8)
    Image.fromarray(pic).save(tmp_path / "pic.png")
    model = Sequential([Conv2D(3, 3, strides=2, padding="same", name="c1"), Flatten(), Dense(2)],
                       input_shape=(8, 8, 1), seed=1)
    model["c1"].params["bias"][:] = [0.1, -0.2, 0.3]
    model.save(tmp_path / "m.safetensors")
    explain_conv(out=tmp_path / "o", image=tmp_path / "pic.png", size=6, model=tmp_path / "m.safetensors",
                 layer="c1", filter=1)
    d = json.loads((tmp_path / "o" / "conv.json").read_text())
    x, k = np.array(d["input"]), np.array(d["kernel"])
    assert x.shape == (6, 6) and 0 <= x.min() and x.max() <= 1
    expected_img = np.asarray(Image.fromarray(pic.astype(np.float32) / 255, "F").resize(
        (6, 6), Image.Resampling.BILINEAR), float)                    # cnnlab.images' one filter, on float pixels
    np.testing.assert_allclose(x, expected_img, atol=1e-6)
    np.testing.assert_allclose(k, model["c1"].params["kernel"][:, :, 0, 1], rtol=1e-6)
    assert d["bias"] == pytest.approx(-0.2)
    # The layer's stride and padding are used unless others are given.
    assert d["stride"] == [2, 2] and d["padding"] == "same" and d["pads"] == [0, 1, 0, 1]
    np.testing.assert_allclose(d["output"], reference_conv(x, k, d["bias"], (2, 2), (0, 1, 0, 1), (1, 1)), atol=1e-6)
    explain_conv(out=tmp_path / "p", model=tmp_path / "m.safetensors", filter=0, padding="valid", size=7)
    d = json.loads((tmp_path / "p" / "conv.json").read_text())
    assert d["padding"] == "valid" and d["stride"] == [2, 2] and d["source"]["image"] == "shapes example"
    x, k = np.array(d["input"]), np.array(d["kernel"])
    assert x.shape == (7, 7) and x.max() == pytest.approx(1.0)
    np.testing.assert_allclose(d["output"], reference_conv(x, k, d["bias"], (2, 2), (0,) * 4, (1, 1)), atol=1e-6)
    assert d["source"]["layer"] == "c1" and d["source"]["filter"] == 0


def test_cli_registers_every_tool_and_runs_conv(tmp_path):
    parser = argparse.ArgumentParser(prog="cnnlab")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    explain = sub.choices["explain"]
    tools = next(a for a in explain._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(tools) - {"all"} == {m.__name__.rsplit(".", 1)[1].replace("_", "-") for m in TOOLS} >= {
        "conv", "weight-sharing", "matched-filter", "features", "invariance", "saliency"}
    args = parser.parse_args(["explain", "conv", "--out", str(tmp_path), "--image", "[[1, 2, 0], [0, 1, 3], [2, 2, 1]]",
                              "--kernel", "[[1, -1], [2, 0]]", "--padding", "same", "--stride", "1,1", "--bias", "1"])
    assert args.func(args) == 0
    d = json.loads((tmp_path / "conv.json").read_text())
    x, k = np.array(d["input"]), np.array(d["kernel"])
    pads = (0, 1, 0, 1)                        # a 2x2 kernel with "same": the extra row/column at the end
    assert tuple(d["pads"]) == pads
    np.testing.assert_allclose(d["output"], reference_conv(x, k, 1.0, (1, 1), pads, (1, 1)))
    assert gif_frames(tmp_path / "conv.gif") == 9


def test_bad_inputs_are_explained(tmp_path):
    with pytest.raises(ValueError, match="named kernels"):
        explain_conv(out=tmp_path, kernel="not-a-kernel")
    with pytest.raises(ValueError, match="max_frames"):
        explain_conv(out=tmp_path, image=np.zeros((30, 30)), max_frames=100)
    with pytest.raises(ValueError, match="channels"):
        explain_conv(out=tmp_path, kernel=np.ones((3, 3, 2)), channels=3)


def ink_border_by_hand(x, threshold=0.5):
    """Pixels whose 3x3 neighbourhood (background outside the picture) holds both ink and background."""
    h, w = x.shape
    out = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            around = [0 <= a < h and 0 <= b < w and x[a, b] > threshold
                      for a in range(i - 1, i + 2) for b in range(j - 1, j + 2)]
            out[i, j] = any(around) and not all(around)
    return out


def test_edge_detector_on_the_default_subject_matches_a_float64_convolution(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))      # an empty cache
    monkeypatch.chdir(tmp_path)                                          # no ./data: the default subject is shapes
    explain_conv(out=tmp_path / "o", index=3)
    e = json.loads((tmp_path / "o" / "conv.json").read_text())["edges"]
    _, (xt, yt) = load_shapes(n_train=1, n_test=4, seed=0)
    x = xt[3, :, :, 0].astype(np.float64)
    assert e["dataset"] == "shapes" and e["index"] == 3 and e["class_name"] == SHAPES_CLASSES[yt[3]]
    np.testing.assert_allclose(e["image"], x, atol=1e-7)
    found = edge_detector(x)                       # the numbers behind the picture, before JSON rounds them
    border = ink_border_by_hand(x)
    np.testing.assert_array_equal(found["border"], border)
    assert [k["name"] for k in e["kernels"]] == ["horizontal edges", "vertical edges"]
    for i, k in enumerate(e["kernels"]):
        expected = reference_conv(x, NAMED_KERNELS[k["kernel_name"]], 0.0, (1, 1), (1, 1, 1, 1), (1, 1))
        np.testing.assert_allclose(found["maps"][i], expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(e["maps"][i], expected, atol=1e-8)
        strong = np.abs(expected) >= 0.5 * np.abs(expected).max()
        assert k["strong"] == strong.sum()
        assert k["on_border"] == pytest.approx((strong & border).sum() / strong.sum())
        assert k["border_share"] == pytest.approx(border.mean())
        assert k["on_border"] > 2 * k["border_share"]          # the kernels fire where the ink has edges
    with Image.open(tmp_path / "o" / "edge_detector.png") as im:
        assert im.format == "PNG" and im.size[0] > 1000
    page = check_page(tmp_path / "o" / "conv.html")
    assert "Why: edge detectors on test image #3 of shapes" in page
    assert "shape&#x27;s ink" in page and "digit" not in page.lower()
    for k in e["kernels"]:
        assert f"{k['strong']} strong responses" in page and f"{k['on_border']:.0%} of them on the ink&#x27;s border" in page


def test_edge_detector_names_mnist_when_it_is_the_data(tmp_path):
    (x, y), (xt, yt) = load_shapes(n_train=20, n_test=5, seed=2)       # stand-ins for digits, in MNIST's files
    folder = tmp_path / "d" / "mnist"
    folder.mkdir(parents=True)
    for prefix, images, labels in (("train", x, y), ("t10k", xt, yt)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", (images[..., 0] * 255).round())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    res = explain_conv(out=tmp_path / "o", data_dir=tmp_path / "d", index=1)
    e = res["edges"]
    assert e["dataset"] == "mnist" and e["class_name"] == str(yt[1])
    np.testing.assert_allclose(e["image"], (xt[1, :, :, 0] * 255).round() / 255, atol=1e-6)
    page = (tmp_path / "o" / "conv.html").read_text()
    assert "test image #1 of mnist" in page and "digit&#x27;s ink" in page
    with pytest.raises(ValueError, match="index"):
        explain_conv(out=tmp_path / "o", data_dir=tmp_path / "d", index=5)
