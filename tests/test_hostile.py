"""Damaged and hostile files through the real command line.

Each case ends with one line on stderr naming the file and the problem, a non-zero exit status, no
traceback, no code run (a pickle that would create a marker file must not), and every file that was
on disk before still there, unchanged. ``CNNLAB_HOSTILE_TABLE=PATH`` writes the table of what each
case printed as Markdown.
"""
import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from cnnlab import cli
from cnnlab.layers import Conv2D, Dense, Flatten, ReLU
from cnnlab.model import Sequential

TABLE = []


@pytest.fixture(scope="module", autouse=True)
def table():
    yield
    out = os.environ.get("CNNLAB_HOSTILE_TABLE")
    if out:
        rows = ["| input | command | printed (stderr) |", "| --- | --- | --- |"]
        rows += [f"| {what} | `{cmd}` | `{line}` |" for what, cmd, line in TABLE]
        Path(out).write_text("\n".join(rows) + "\n")


class Marker:
    """A pickle payload: unpickling it would create the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def refuse(capsys, root: Path, what: str, argv, *expected):
    """Run ``cnnlab ARGV``; check the refusal; record it for the table; return the line printed."""
    before = snapshot(root)
    marker = root.parent / f"{root.name}-executed"
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    short = " ".join(str(a).replace(str(root) + "/", "") for a in argv)
    short = short if len(short) < 160 else short[:60] + " ... " + short[-40:]
    TABLE.append((what, f"cnnlab {short}", (lines[-1] if lines else "").replace(str(root) + "/", "")))
    assert code not in (0, None), f"{what}: exit status 0\n{out}\n{err}"
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("cnnlab: error: "), f"{what}:\n{err}"
    for text in expected:
        assert text in lines[0], f"{what}: {text!r} not in {lines[0]!r}"
    assert not marker.exists(), f"{what}: code in the file was run"
    after = snapshot(root)
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert not changed, f"{what}: {changed} overwritten or lost"
    return lines[0]


# ---------------------------------------------------------------------------
# Files: good ones, to damage
# ---------------------------------------------------------------------------
def idx_bytes(array, type_byte=0x08):
    array = np.asarray(array)
    return bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_folder(root, damage=None):
    """Four small MNIST-style IDX files in root/idx; ``damage(name, bytes) -> bytes or None`` (None: leave out)."""
    d = root / "idx"
    d.mkdir()
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (6, 28, 28)).astype(np.uint8), (np.arange(6) % 10).astype(np.uint8)
    for name, arr in zip(IDX_NAMES, (x, y, x, y)):
        data = idx_bytes(arr)
        if damage is not None:
            data = damage(name, data)
        if data is not None:
            (d / name).write_bytes(data)
    return d


def cifar_folder(root, damage=None):
    d = root / "cifar"
    d.mkdir()
    rng = np.random.default_rng(0)
    records = np.concatenate([np.arange(4, dtype=np.uint8)[:, None],
                              rng.integers(0, 256, (4, 3072)).astype(np.uint8)], axis=1)
    for name in ("data_batch_sample.bin", "test_batch.bin"):
        data = records.tobytes()
        (d / name).write_bytes(damage(name, data) if damage else data)
    return d


def png_bytes(size=8, value=None):
    a = np.random.default_rng(size).integers(0, 256, (size, size)).astype(np.uint8) if value is None else \
        np.full((size, size), value, np.uint8)
    from io import BytesIO
    buf = BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width=40000, height=40000):
    """A valid PNG header announcing width x height pixels, a few kB long."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    idat = zlib.compress((b"\0" + b"\0" * ((width + 7) // 8)) * 16, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def tiny_model(input_shape=(8, 8, 1)):
    return Sequential([Conv2D(2, 3, name="c"), ReLU(), Flatten(), Dense(3, name="d")], input_shape=input_shape, seed=0)


def model_file(root, name="m.safetensors", tensors=None, arch=None):
    """A model file; ``tensors`` / ``arch`` replace the real weights / architecture."""
    model = tiny_model()
    t = {k: np.ascontiguousarray(v) for k, v in model.state_dict().items()} if tensors is None else tensors
    a = model.get_config() if arch is None else arch
    path = root / name
    save_file(t, str(path), metadata={"cnnlab_architecture": a if isinstance(a, str) else json.dumps(a),
                                      "format": "np"})
    return path


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "files"
    r.mkdir()
    return r


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert cli.main(["train", "--dataset", "shapes", "--model", "tiny_cnn", "--limit", "100", "--batch-size", "50",
                     "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    return out


def test_model_file_helper_makes_a_loadable_model(root, capsys):
    """The good versions load: what the damaged ones are refused against is the damage, not the helper."""
    path = model_file(root)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "ok.png")
    assert cli.main(["predict", str(path), str(root / "ok.png")]) == 0
    d = idx_folder(root)
    from cnnlab.datasets import load_dataset
    assert load_dataset(d)[0][0].shape == (6, 28, 28, 1)
    assert load_dataset(cifar_folder(root))[0][0].shape == (4, 32, 32, 3)
    capsys.readouterr()


# ---------------------------------------------------------------------------
# Datasets: IDX, CIFAR-10 binary, image folders (through cnnlab train)
# ---------------------------------------------------------------------------
def train_on(d, root):
    return ["train", "--dataset", d, "--model", "tiny_cnn", "--epochs", "1", "--quiet", "--out", root / "out"]


def _set(name, which, data):
    return data if name != which else None


IDX_CASES = {
    "IDX: bad magic": (lambda n, b: b"\x12\x34" + b[2:] if n == IDX_NAMES[0] else b, "bad magic number"),
    "IDX: truncated": (lambda n, b: b[:-100] if n == IDX_NAMES[0] else b, "is truncated"),
    "IDX: count mismatch": (lambda n, b: idx_bytes(np.arange(5, dtype=np.uint8)) if n == IDX_NAMES[1] else b,
                            "has 6 images but"),
    "IDX: label out of range": (lambda n, b: idx_bytes(np.array([0, 1, 42, 3, 4, 5], np.uint8))
                                if n == IDX_NAMES[1] else b, "label 42"),
    "IDX: .gz that is not gzip": (None, "not a valid gzip file"),
    "IDX: empty file": (lambda n, b: b"" if n == IDX_NAMES[0] else b, "0 bytes long"),
    "IDX: a file missing": (lambda n, b: None if n == IDX_NAMES[3] else b, IDX_NAMES[3]),
}


@pytest.mark.parametrize("case", list(IDX_CASES))
def test_idx(case, root, capsys):
    damage, expected = IDX_CASES[case]
    if damage is None:
        d = idx_folder(root)
        (d / IDX_NAMES[0]).rename(d / (IDX_NAMES[0] + ".gz"))
        (d / (IDX_NAMES[0] + ".gz")).write_bytes(b"\x1f\x8b not really gzip")
    else:
        d = idx_folder(root, damage)
    refuse(capsys, root, case, train_on(d, root), expected)


CIFAR_CASES = {
    "CIFAR-10: truncated record": (lambda n, b: b[:-7], "not a nonzero multiple of 3073"),
    "CIFAR-10: label out of range": (lambda n, b: bytes([11]) + b[1:], "label 11 in record 0"),
    "CIFAR-10: empty file": (lambda n, b: b"" if n == "test_batch.bin" else b, "0 bytes long"),
}


@pytest.mark.parametrize("case", list(CIFAR_CASES))
def test_cifar(case, root, capsys):
    damage, expected = CIFAR_CASES[case]
    refuse(capsys, root, case, train_on(cifar_folder(root, damage), root), expected)


FOLDER_CASES = {
    "image folder: a corrupt image": (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "bad.png"),
    "image folder: a truncated image": ("truncated", "bad.png is damaged or truncated"),
    "image folder: a bomb image": ("bomb", "bad.png has 1,600,000,000 pixels"),
    "image folder: a text file named .png": (b"just some text\n", "bad.png is not a picture"),
    "image folder: an empty class folder": (None, "holds no images"),
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_image_folder(case, root, capsys):
    content, expected = FOLDER_CASES[case]
    d = root / "pics"
    for cls in ("a", "b"):
        (d / cls).mkdir(parents=True)
        for i in range(3):
            (d / cls / f"{i}.png").write_bytes(png_bytes(8 + i % 1))
    if content is None:
        (d / "c").mkdir()
    else:
        content = bomb_png() if content == "bomb" else png_bytes(64)[:200] if content == "truncated" else content
        (d / "b" / "bad.png").write_bytes(content)
    refuse(capsys, root, case, train_on(d, root), expected)


# ---------------------------------------------------------------------------
# Pictures given to predict and to every explain tool that takes one
# ---------------------------------------------------------------------------
PICTURES = {
    "text": (b"this is not a picture\n", "is not a picture"),
    "empty": (b"", "is empty"),
    "bomb": ("bomb", "has 1,600,000,000 pixels"),
    "missing": (None, "does not exist"),
    "truncated": ("truncated", "is damaged or truncated"),
}


def picture_commands(root, pic, model28):
    return {
        "predict": ["predict", model28, pic],
        "explain conv --image": ["explain", "conv", "--image", pic, "--out", root / "o"],
        "explain features --image": ["explain", "features", "--model", model28, "--image", pic, "--out", root / "o"],
        "explain saliency --image": ["explain", "saliency", "--model", model28, "--image", pic, "--out", root / "o"],
        "explain invariance --image": ["explain", "invariance", "--model", model28, "--dataset", "shapes",
                                       "--image", pic, "--n-train", "50", "--n-test", "20", "--epochs", "1",
                                       "--no-canvas", "--out", root / "o"],
        "explain matched-filter --image": ["explain", "matched-filter", "--image", pic, "--out", root / "o"],
        "explain matched-filter --template": ["explain", "matched-filter", "--template", pic, "--out", root / "o"],
    }


@pytest.fixture(scope="module")
def model28(tmp_path_factory):
    from cnnlab.models import tiny_cnn
    path = tmp_path_factory.mktemp("m28") / "m28.safetensors"
    tiny_cnn(input_shape=(28, 28, 1), num_classes=10).save(path)
    return path


@pytest.mark.parametrize("picture", list(PICTURES))
@pytest.mark.parametrize("command", list(picture_commands(Path("r"), "p", "m")))
def test_pictures(command, picture, root, model28, capsys):
    content, expected = PICTURES[picture]
    pic = root / "pic.png"
    if content is not None:
        content = bomb_png() if content == "bomb" else png_bytes(64)[:200] if content == "truncated" else content
        pic.write_bytes(content)
    argv = picture_commands(root, pic, model28)[command]
    refuse(capsys, root, f"{command}: {picture}", argv, "pic.png", expected)


# ---------------------------------------------------------------------------
# Model files (safetensors) for predict, evaluate and summary
# ---------------------------------------------------------------------------
def _good(root):
    return model_file(root, "good.safetensors").read_bytes()


MODEL_CASES = {
    "safetensors: truncated": (lambda r: _good(r)[:len(_good(r)) // 2], "not a readable safetensors file"),
    "safetensors: huge header length": (lambda r: struct.pack("<Q", 2 ** 62) + b"{}", "not a readable safetensors"),
    "safetensors: a pickle": (lambda r: pickle.dumps(Marker(r.parent / f"{r.name}-executed")),
                              "not a readable safetensors file"),
    "safetensors: empty": (lambda r: b"", "not a readable safetensors file"),
    "safetensors: NaN weights": (lambda r: model_file(r, tensors={
        **{k: np.ascontiguousarray(v) for k, v in tiny_model().state_dict().items()},
        "c.kernel": np.full((3, 3, 1, 2), np.nan, np.float32)}).read_bytes(), "NaN"),
    "safetensors: wrong shapes": (lambda r: model_file(r, tensors={
        **{k: np.ascontiguousarray(v) for k, v in tiny_model().state_dict().items()},
        "d.kernel": np.zeros((5, 3), np.float32)}).read_bytes(), "'d.kernel' has shape (5, 3)"),
    "safetensors: unknown layer class": (lambda r: model_file(r, arch={
        **tiny_model().get_config(), "layers": [{"class": "os.system", "name": "x", "config": {}}]}).read_bytes(),
        "unknown class 'os.system'"),
    "safetensors: architecture not JSON": (lambda r: model_file(r, arch="{not json").read_bytes(), "not valid JSON"),
    "safetensors: architecture with wrong types": (lambda r: model_file(r, arch={
        **tiny_model().get_config(), "input_shape": "28x28"}).read_bytes(), "input_shape"),
    "safetensors: layer config with wrong types": (lambda r: model_file(r, arch={
        **tiny_model().get_config(), "layers": [{"class": "Dense", "name": "d", "config": {"units": "ten"}}]})
        .read_bytes(), "units"),
    "safetensors: layers not a list": (lambda r: model_file(r, arch={"layers": {"a": 1}}).read_bytes(), "layers"),
    "safetensors: loss of the wrong type": (lambda r: model_file(r, arch={
        **tiny_model().get_config(), "loss": "softmax"}).read_bytes(), "loss"),
}


@pytest.mark.parametrize("command", ["predict", "evaluate", "summary"])
@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_model_files(case, command, root, capsys):
    make, expected = MODEL_CASES[case]
    data = make(root)
    for p in root.glob("*.safetensors"):
        p.unlink()
    path = root / "model.safetensors"
    path.write_bytes(data)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "ok.png")
    argv = {"predict": ["predict", path, root / "ok.png"], "evaluate": ["evaluate", path, "--dataset", "shapes"],
            "summary": ["summary", path]}[command]
    refuse(capsys, root, f"{case} ({command})", argv, "model.safetensors", expected)


# ---------------------------------------------------------------------------
# JSON: architecture files, a run's configuration and state
# ---------------------------------------------------------------------------
ARCH_CASES = {
    "architecture: not JSON": ("{'layers': []", "not valid JSON"),
    "architecture: not UTF-8": (b"\xff\xfe{\x00}", "not UTF-8"),
    "architecture: a list": ("[1, 2, 3]", "layers"),
    "architecture: layer config of the wrong type": (
        {"input_shape": [8, 8, 1], "layers": [{"class": "Conv2D", "config": {"filters": "many", "kernel_size": 3}}]},
        "filters"),
    "architecture: config not an object": (
        {"input_shape": [8, 8, 1], "layers": [{"class": "Conv2D", "config": [4, 3]}]}, "config"),
    "architecture: input_shape of the wrong type": (
        {"input_shape": [8, "a", 1], "layers": [{"class": "Flatten", "config": {}}]}, "input_shape"),
    "architecture: nested 100000 deep": ("[" * 100000 + "]" * 100000, "nested"),
    "architecture: a billion filters": (
        {"input_shape": [28, 28, 1], "layers": [{"class": "Conv2D", "config": {"filters": 1000000000, "kernel_size": 5}}]},
        "memory"),
    "architecture: a pickle": ("pickle", "not UTF-8"),
}


@pytest.mark.parametrize("command", ["summary", "train --model"])
@pytest.mark.parametrize("case", list(ARCH_CASES))
def test_architecture_files(case, command, root, capsys):
    content, expected = ARCH_CASES[case]
    path = root / "arch.json"
    if content == "pickle":
        content = pickle.dumps(Marker(root.parent / f"{root.name}-executed"))
    path.write_bytes(content if isinstance(content, bytes) else
                     (content if isinstance(content, str) else json.dumps(content)).encode())
    argv = ["summary", path] if command == "summary" else \
        ["train", "--dataset", "shapes", "--model", path, "--epochs", "1", "--limit", "50", "--quiet",
         "--out", root / "out"]
    refuse(capsys, root, f"{case} ({command})", argv, "arch.json", expected)


RUN_CASES = {
    "run config: epochs a string": ("config.json", lambda c: {**c, "epochs": "five"}, "epochs"),
    "run config: optimizer a number": ("config.json", lambda c: {**c, "optimizer": 3}, "optimizer"),
    "run config: a list": ("config.json", lambda c: [c], "expected a JSON object"),
    "run config: not JSON": ("config.json", lambda c: "{", "not valid JSON"),
    "run config: dataset_options wrong types": ("config.json", lambda c: {**c, "dataset_options": {"n_train": "x"}},
                                                "n_train"),
    "run state: epoch a string": ("state.json", lambda s: {**s, "epoch": "one"}, "epoch"),
    "run state: rng_state a number": ("state.json", lambda s: {**s, "rng_state": 5}, "rng_state"),
    "run state: bit generator unknown": ("state.json", lambda s: {**s, "rng_state": {"bit_generator": "os.system",
                                                                                     "state": {}}}, "rng_state"),
    "run state: best_metric a string": ("state.json", lambda s: {**s, "best_metric": "high"}, "best_metric"),
    "run state: history entries wrong": ("history.json", lambda h: {**h, "loss": "low"}, "history"),
}


@pytest.mark.parametrize("case, command", [(case, command) for case in RUN_CASES
                                           for command in ("train --resume", "evaluate", "predict")
                                           if command == "train --resume" or RUN_CASES[case][0] == "config.json"
                                           and (command == "evaluate" or "dataset_options" not in case)])
def test_run_files(case, command, run_dir, root, capsys):
    name, damage, expected = RUN_CASES[case]
    named = name if "dataset_options" not in case else "shapes"    # the option is named, by the dataset's reader
    run = root / "run"
    shutil.copytree(run_dir, run)
    original = json.loads((run / name).read_text())
    damaged = damage(original)
    (run / name).write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(root / "ok.png")
    argv = {"train --resume": ["train", "--resume", run, "--epochs", "2", "--quiet"],
            "evaluate": ["evaluate", run, "--limit", "20"], "predict": ["predict", run, root / "ok.png"]}[command]
    refuse(capsys, root, f"{case} ({command})", argv, named, expected)


# ---------------------------------------------------------------------------
# Kernels given to explain conv
# ---------------------------------------------------------------------------
KERNELS = {
    "kernel: not numbers": ('[[1, "a"], [0, 1]]', "nested list of numbers"),
    "kernel: not JSON": ("[[1, 0]", "not valid JSON"),
    "kernel: nested 100000 deep": ("[" * 100000 + "]" * 100000, "nested too deeply"),
    "kernel: NaN": ("[[1, NaN], [0, 1]]", "non-finite"),
    "kernel: infinity": ("[[1, 1e999], [0, 1]]", "non-finite"),
    "kernel: ragged": ("[[1, 2], [3]]", "nested list of numbers"),
    "kernel: empty": ("[]", "kernel"),
    "kernel: a number": ("3", "kernel"),
    "kernel file: text": ("file:not json at all", "kernel.json is not valid JSON"),
    "kernel file: missing": ("missing", "kernel.json"),
    "kernel file: NaN": ("file:[[NaN]]", "kernel.json contains non-finite"),
    "kernel file: not UTF-8": ("file:\udcff\udcfe", "kernel.json is not UTF-8"),
}


@pytest.mark.parametrize("case", list(KERNELS))
def test_kernels(case, root, capsys):
    text, expected = KERNELS[case]
    if text.startswith("file:"):
        (root / "kernel.json").write_bytes(text[5:].encode("utf-8", "surrogateescape"))
        text = root / "kernel.json"
    elif text == "missing":
        text = root / "kernel.json"
    refuse(capsys, root, case, ["explain", "conv", "--kernel", text, "--out", root / "o"], expected)


def test_a_gzip_bomb_of_idx_is_not_inflated_blindly(root, capsys, monkeypatch):
    """A .gz that inflates to more than memory allows is refused after that many bytes, not inflated whole."""
    from cnnlab.datasets import idx
    monkeypatch.setattr(idx, "available_memory", lambda: 8 << 20)   # reads stop at 4 MB of the 64 MB inside
    d = idx_folder(root)
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 1_000_000, 1000, 1000)
    with gzip.open(d / (IDX_NAMES[0] + ".gz"), "wb", compresslevel=9) as f:
        f.write(header)
        zeros = b"\0" * (1 << 20)
        for _ in range(64):
            f.write(zeros)
    (d / IDX_NAMES[0]).unlink()
    refuse(capsys, root, "IDX: gzip bomb (inflates to 64 MB, 4 MB allowed)", train_on(d, root), IDX_NAMES[0],
           "holds more than 4,194,304 bytes")
