"""Tests for cnnlab.datasets: file formats, corruption handling, lookup and downloads.

Small files are generated in the real formats; the real datasets in
``../shared/data`` are used when present. No test touches the network.
"""
import gzip
import hashlib
import io
import tarfile
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab._io import CnnlabFileError
from cnnlab.datasets import (
    CIFAR10_CLASSES, SHAPES_CLASSES, SOURCES, DatasetNotFoundError, download_file, extract_tar,
    find_cifar10_files, from_arrays, load_cifar10, load_cifar10_files, load_dataset,
    load_fashion_mnist, load_folder_dataset, load_idx_pair, load_image_folder, load_mnist,
    load_shapes, read_cifar10_bin, read_idx,
)
from cnnlab.datasets.official import IDX_FILES

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TYPE_BYTES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Keep the user's data and cache out of reach, and refuse any URL but file://."""
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real_urlopen = urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        if not str(url).startswith("file:"):
            raise urllib.error.URLError(f"network disabled in tests: {url}")
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)


def idx_bytes(array, type_byte=0x08):
    array = np.asarray(array)
    header = bytes([0, 0, type_byte, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(TYPE_BYTES[type_byte]).tobytes()


def write(path, data, gz=False):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def make_idx_set(folder, n_train=6, n_test=4, size=5, seed=0):
    """Write the four MNIST-style .gz files; return the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write(Path(folder) / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(images), gz=True)
        write(Path(folder) / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(labels), gz=True)
        arrays[prefix] = (images, labels)
    return arrays


def cifar_bytes(labels, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return np.column_stack([np.asarray(labels, np.uint8), pixels]).tobytes(), pixels


def save_image(path, array, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path, format=fmt)
    return path


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("type_byte", sorted(TYPE_BYTES))
def test_read_idx_round_trip_every_type(tmp_path, type_byte, gz):
    array = np.arange(-12, 12).reshape(2, 3, 4) if type_byte != 0x08 else np.arange(24).reshape(2, 3, 4)
    path = write(tmp_path / ("a.idx.gz" if gz else "a.idx"), idx_bytes(array, type_byte), gz=gz)
    out = read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_load_idx_pair_round_trip(tmp_path):
    arrays = make_idx_set(tmp_path)
    x, y = load_idx_pair(tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz")
    assert x.shape == (6, 5, 5, 1) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[..., 0] * 255, arrays["train"][0], atol=1e-4)
    np.testing.assert_array_equal(y, arrays["train"][1])


@pytest.mark.parametrize("data, message", [
    (b"\x01\x00\x08\x01" + bytes(8), "bad magic number"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x02xx", "unknown element type 0x07"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated inside its header"),
    (b"\x00\x00", "too short"),
    (idx_bytes(np.zeros((3, 4, 4)))[:-5],
     "is truncated: for shape (3, 4, 4) of uint8 expected 48 bytes of data, got 43"),
    (idx_bytes(np.zeros((3, 4, 4))) + b"\0", "has extra bytes: for shape (3, 4, 4) of uint8 expected 48 bytes"),
    (idx_bytes(np.zeros(3), 0x0C)[:-1], "of int32 expected 12 bytes of data, got 11"),
])
def test_read_idx_rejects_corrupt_files(tmp_path, data, message):
    path = write(tmp_path / "bad-idx3-ubyte", data)
    with pytest.raises(CnnlabFileError, match="bad-idx3-ubyte") as err:
        read_idx(path)
    assert message in str(err.value)


def test_read_idx_rejects_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((10, 8, 8))), mtime=0)
    truncated = write(tmp_path / "cut.gz", good[: len(good) // 2])
    garbage = write(tmp_path / "garbage.gz", b"this is not gzip data")
    for path in (truncated, garbage):
        with pytest.raises(CnnlabFileError, match=f"{path.name} is not a valid gzip file"):
            read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(CnnlabFileError, match="nowhere.gz does not exist"):
        read_idx(tmp_path / "nowhere.gz")


def test_load_idx_pair_rejects_mismatched_counts_and_bad_labels(tmp_path):
    images = write(tmp_path / "img-idx3", idx_bytes(np.zeros((3, 2, 2))))
    two = write(tmp_path / "two-labels-idx1", idx_bytes([1, 2]))
    with pytest.raises(CnnlabFileError, match="img-idx3 has 3 images but label file .*two-labels-idx1 has 2"):
        load_idx_pair(images, two)
    big = write(tmp_path / "big-labels-idx1", idx_bytes([1, 10, 2]))
    with pytest.raises(CnnlabFileError, match=r"big-labels-idx1 has label 10 at index 1, outside 0..9"):
        load_idx_pair(images, big)
    assert load_idx_pair(images, big, num_classes=11)[1].tolist() == [1, 10, 2]
    flat = write(tmp_path / "flat-idx1", idx_bytes(np.zeros(3)))
    with pytest.raises(CnnlabFileError, match="flat-idx1 must hold uint8 images of shape"):
        load_idx_pair(flat, big)


# ---------------------------------------------------------------- CIFAR-10


def test_cifar_round_trip_channel_and_row_order(tmp_path):
    data, pixels = cifar_bytes([3, 0, 9])
    x, y = read_cifar10_bin(write(tmp_path / "b.bin", data))
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.float32 and y.tolist() == [3, 0, 9]
    i, row, col = 2, 5, 17
    for channel in range(3):
        assert x[i, row, col, channel] * 255 == pytest.approx(pixels[i, channel * 1024 + row * 32 + col], abs=1e-3)


@pytest.mark.parametrize("data, message", [
    (b"", "is 0 bytes long, not a nonzero multiple of 3073"),
    (bytes(3073 * 2 + 100), "is 6246 bytes long, not a nonzero multiple of 3073"),
    (cifar_bytes([1, 2, 10, 11])[0], "has label 10 in record 2, outside 0..9"),
])
def test_cifar_rejects_corrupt_files(tmp_path, data, message):
    path = write(tmp_path / "data_batch_1.bin", data)
    with pytest.raises(CnnlabFileError, match="data_batch_1.bin") as err:
        read_cifar10_bin(path)
    assert message in str(err.value)
    with pytest.raises(CnnlabFileError, match="missing.bin does not exist"):
        read_cifar10_bin(tmp_path / "missing.bin")


def test_cifar_folder_layouts(tmp_path):
    full = tmp_path / "full" / "cifar-10-batches-bin"
    for i in range(1, 6):
        write(full / f"data_batch_{i}.bin", cifar_bytes([i] * 2, seed=i)[0])
    write(full / "test_batch.bin", cifar_bytes([0])[0])
    (x_train, y_train), (x_test, _) = load_cifar10(tmp_path / "full")
    assert x_train.shape == (10, 32, 32, 3) and y_train.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert x_test.shape == (1, 32, 32, 3)

    (full / "data_batch_4.bin").unlink()
    with pytest.raises(CnnlabFileError, match="cifar-10-batches-bin has .* but lacks data_batch_4.bin"):
        find_cifar10_files(tmp_path / "full")

    write(tmp_path / "sample" / "data_batch_1_first2.bin", cifar_bytes([1, 2])[0])
    write(tmp_path / "sample" / "test_batch_first1.bin", cifar_bytes([7])[0])
    (x_train, _), (_, y_test) = load_cifar10(tmp_path / "sample")
    assert len(x_train) == 2 and y_test.tolist() == [7]
    with pytest.raises(ValueError, match="no CIFAR-10 test files"):
        load_cifar10_files(tmp_path / "sample" / "test_batch_first1.bin", [])


# ---------------------------------------------------------------- image folders


def test_image_folder_round_trip_and_color_modes(tmp_path):
    gray = np.arange(48).reshape(6, 8) * 5
    color = np.stack([gray, 255 - gray, np.full_like(gray, 7)], -1)
    save_image(tmp_path / "b_dogs" / "1.png", gray)
    save_image(tmp_path / "a_cats" / "1.bmp", gray)
    save_image(tmp_path / "a_cats" / "2.PNG", color)
    (tmp_path / "a_cats" / "notes.txt").write_text("ignored")

    x, y, names = load_image_folder(tmp_path)
    assert names == ["a_cats", "b_dogs"] and y.tolist() == [0, 0, 1]
    assert x.shape == (3, 6, 8, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[1] * 255, color, atol=1e-3)
    np.testing.assert_allclose(x[2, ..., 1] * 255, gray, atol=1e-3)

    x, _, _ = load_image_folder(tmp_path, color_mode="grayscale")
    assert x.shape == (3, 6, 8, 1)
    x, _, _ = load_image_folder(tmp_path, image_size=4, color_mode="rgb")
    assert x.shape == (3, 4, 4, 3)
    (tmp_path / "a_cats" / "2.PNG").unlink()
    assert load_image_folder(tmp_path)[0].shape == (2, 6, 8, 1)
    with pytest.raises(ValueError, match="color_mode must be one of"):
        load_image_folder(tmp_path, color_mode="cmyk")


def test_image_folder_rejects_bad_content(tmp_path):
    save_image(tmp_path / "a" / "ok.png", np.zeros((5, 5)))
    bad = tmp_path / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(CnnlabFileError, match="broken.png is damaged or truncated"):
        load_image_folder(tmp_path)
    bad.unlink()

    save_image(tmp_path / "b" / "wide.jpg", np.zeros((5, 9, 3)))
    with pytest.raises(CnnlabFileError, match=r"wide.jpg is 9x5 but .*ok.png is 5x5; pass image_size"):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, image_size=(5, 5))[0].shape == (2, 5, 5, 3)

    (tmp_path / "c_empty").mkdir()
    with pytest.raises(CnnlabFileError, match="class folder .*c_empty holds no images"):
        load_image_folder(tmp_path, image_size=(5, 5))
    with pytest.raises(CnnlabFileError, match="c_empty has no class subfolders"):
        load_image_folder(tmp_path / "c_empty")


def test_folder_dataset_with_train_test_and_with_split(tmp_path):
    for split, n in (("train", 3), ("test", 1)):
        for cls in ("x", "y"):
            for i in range(n):
                save_image(tmp_path / "tt" / split / cls / f"{i}.png", np.full((4, 4), 50 * i))
    (x_tr, y_tr), (x_te, y_te), names = load_folder_dataset(tmp_path / "tt")
    assert names == ["x", "y"] and x_tr.shape == (6, 4, 4, 1) and x_te.shape == (2, 4, 4, 1)

    for cls in ("p", "q"):
        for i in range(10):
            save_image(tmp_path / "flat" / cls / f"{i}.png", np.full((3, 3), i * 20 + (cls == "q")))
    (x_tr, y_tr), (x_te, y_te), _ = load_folder_dataset(tmp_path / "flat", seed=1)
    assert len(x_tr) == 16 and np.bincount(y_te).tolist() == [2, 2]
    (again, _), _, _ = load_folder_dataset(tmp_path / "flat", seed=1)
    np.testing.assert_array_equal(again, x_tr)
    (other, _), _, _ = load_folder_dataset(tmp_path / "flat", seed=2)
    assert not np.array_equal(other, x_tr)


# ---------------------------------------------------------------- arrays in memory


def test_from_arrays_converts_and_validates():
    x, y = from_arrays(np.full((2, 3, 3), 255, np.uint8), [1, 0])
    assert x.shape == (2, 3, 3, 1) and x.dtype == np.float32 and x.max() == 1.0 and y.dtype == np.int64
    cases = [
        ((np.zeros((2, 3)), [0, 1]), r"got shape \(2, 3\)"),
        ((np.zeros((2, 3, 8, 8)), [0, 1]), "looks channels-first"),
        ((np.full((2, 3, 3), 2.0), [0, 1]), "got values from 2.0 to 2.0"),
        ((np.zeros((2, 3, 3), np.int32), [0, 1]), "got dtype int32"),
        ((np.zeros((2, 3, 3)), [0.0, 1.0]), "got dtype float64 with shape"),
        ((np.zeros((2, 3, 3)), [0, 1, 2]), "x has 2 images but y has 3 labels"),
        ((np.zeros((2, 3, 3)), [-1, 1]), "got values from -1 to 1"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            from_arrays(*args)
    with pytest.raises(ValueError, match=r"labels must be 0..2; got values from 0 to 3"):
        from_arrays(np.zeros((2, 3, 3)), [0, 3], num_classes=3)


# ---------------------------------------------------------------- lookup and downloads


def test_lookup_order_path_env_cache(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "given" / "mnist", n_train=2)
    make_idx_set(tmp_path / "env" / "mnist", n_train=3)
    make_idx_set(tmp_path / "cache" / "cnnlab" / "mnist", n_train=4)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))
    assert len(load_mnist(tmp_path / "given")[0][0]) == 2
    assert len(load_mnist(tmp_path / "given" / "mnist")[0][0]) == 2
    assert len(load_mnist()[0][0]) == 3
    monkeypatch.delenv("CNNLAB_DATA")
    assert len(load_mnist()[0][0]) == 4
    with pytest.raises(DatasetNotFoundError, match="data folder .*typo does not exist"):
        load_mnist(tmp_path / "typo")


def test_uncompressed_idx_files_are_found(tmp_path):
    arrays = make_idx_set(tmp_path)
    for name in IDX_FILES:
        gz = tmp_path / f"{name}.gz"
        (tmp_path / name).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    (x, y), _ = load_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(y, arrays["train"][1])


def serve_mnist_files(folder, source_key="mnist", md5=True):
    """Write a small IDX set to ``folder`` and a source whose mirrors point at it."""
    make_idx_set(folder)
    files = tuple(replace(f, md5=hashlib.md5((folder / f.name).read_bytes()).hexdigest() if md5 else "0" * 32,
                          content_sha256=None) for f in SOURCES[source_key].files)
    return replace(SOURCES[source_key], mirrors=((folder / "absent").as_uri() + "/", folder.as_uri() + "/"),
                   files=files)


def test_download_into_cache_with_mirror_fallback(tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "mnist", serve_mnist_files(tmp_path / "server"))
    (x, y), (xt, yt) = load_mnist()
    assert x.shape == (6, 5, 5, 1) and xt.shape == (4, 5, 5, 1)
    cached = sorted(p.name for p in (tmp_path / "cache" / "cnnlab" / "mnist").iterdir())
    assert cached == sorted(f"{n}.gz" for n in IDX_FILES)


def test_bad_checksum_leaves_nothing_in_cache(tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "fashion-mnist", serve_mnist_files(tmp_path / "server", "fashion-mnist", md5=False))
    with pytest.raises(CnnlabFileError, match="train-images-idx3-ubyte.gz does not match its checksum"):
        load_fashion_mnist()
    cache = tmp_path / "cache" / "cnnlab" / "fashion-mnist"
    assert not cache.exists() or not any(cache.iterdir())


def test_content_checksum_accepts_a_different_gzip_wrapping(tmp_path):
    content = idx_bytes(np.arange(10))
    served = write(tmp_path / "f.gz", gzip.compress(content, compresslevel=1))
    dest = download_file(served.as_uri(), tmp_path / "out" / "f.gz", md5="0" * 32,
                         content_sha256=hashlib.sha256(content).hexdigest(), progress=False)
    assert gzip.decompress(dest.read_bytes()) == content


def test_not_found_without_network_says_what_to_do(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_mnist()
    message = str(err.value)
    for part in ["download failed", "network disabled", "train-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz", str(tmp_path / "cache" / "cnnlab" / "mnist"),
                 "--data-dir", "$CNNLAB_DATA"]:
        assert part in message
    with pytest.raises(DatasetNotFoundError, match="downloading is turned off. Put the files data_batch_1.bin"):
        load_cifar10(download=False)


def make_tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_cifar_download_extracts_the_archive(tmp_path, monkeypatch):
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": cifar_bytes([i - 1])[0] for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = cifar_bytes([9, 8])[0]
    (tmp_path / "server").mkdir()
    archive = make_tar(tmp_path / "server" / "cifar-10-binary.tar.gz", members)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    source = replace(SOURCES["cifar10"], mirrors=(archive.parent.as_uri() + "/",),
                     files=(replace(SOURCES["cifar10"].files[0], md5=md5),))
    monkeypatch.setitem(SOURCES, "cifar10", source)
    (x, y), (xt, yt) = load_cifar10()
    assert y.tolist() == [0, 1, 2, 3, 4] and yt.tolist() == [9, 8]
    cache = tmp_path / "cache" / "cnnlab" / "cifar10"
    assert not (cache / "cifar-10-binary.tar.gz").exists()


@pytest.mark.parametrize("bad_name", ["../escape.bin", "/abs/escape.bin", "ok/../../escape.bin"])
def test_extract_tar_rejects_unsafe_members(tmp_path, bad_name):
    archive = make_tar(tmp_path / "evil.tar.gz", {"fine.bin": b"1", bad_name: b"2"})
    with pytest.raises(CnnlabFileError, match="evil.tar.gz has an unsafe member"):
        extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.bin").exists()
    corrupt = write(tmp_path / "cut.tar.gz", archive.read_bytes()[:40])
    with pytest.raises(CnnlabFileError, match="cut.tar.gz is corrupt"):
        extract_tar(corrupt, tmp_path / "out")


# ---------------------------------------------------------------- registry


def test_load_dataset_names_and_paths(tmp_path):
    with pytest.raises(ValueError, match="'imagenet': valid names are mnist, fashion-mnist, cifar10, shapes, or"):
        load_dataset("imagenet")
    train, test, info = load_dataset("shapes", n_train=20, n_test=10)
    assert info == {"name": "shapes", "class_names": SHAPES_CLASSES, "input_shape": (28, 28, 1)}

    make_idx_set(tmp_path / "idx")
    (x, _), _, info = load_dataset(tmp_path / "idx", num_classes=12)
    assert info["input_shape"] == (5, 5, 1) and len(info["class_names"]) == 12

    write(tmp_path / "cif" / "data_batch_1.part.bin", cifar_bytes([1])[0])
    write(tmp_path / "cif" / "test_batch.part.bin", cifar_bytes([2])[0])
    _, _, info = load_dataset(str(tmp_path / "cif"))
    assert info["class_names"] == CIFAR10_CLASSES and info["input_shape"] == (32, 32, 3)

    for cls in ("left", "right"):
        for i in range(5):
            save_image(tmp_path / "imgs" / cls / f"{i}.png", np.full((6, 7, 3), i))
    (x, y), (xt, yt), info = load_dataset(tmp_path / "imgs")
    assert info == {"name": "imgs", "class_names": ["left", "right"], "input_shape": (6, 7, 3)}
    assert len(x) == 8 and len(xt) == 2


# ---------------------------------------------------------------- shapes


def test_shapes_dataset():
    (x, y), (xt, yt) = load_shapes(n_train=1000, n_test=200, seed=3)
    assert x.shape == (1000, 28, 28, 1) and xt.shape == (200, 28, 28, 1)
    assert x.dtype == np.float32 and y.dtype == np.int64 and 0 <= x.min() and x.max() <= 1
    assert np.bincount(y).tolist() == [100] * 10 and len(SHAPES_CLASSES) == 10
    (x2, y2), _ = load_shapes(n_train=1000, n_test=50, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(load_shapes(n_train=1000, n_test=1, seed=4)[0][0], x)
    ink = x[..., 0] > 0.25
    rows = (ink.sum(2) * np.arange(28)).sum(1) / ink.sum((1, 2))
    for label in range(10):
        assert rows[y == label].std() > 1.5, SHAPES_CLASSES[label]
    assert load_shapes(n_train=10, n_test=10, image_size=40)[0][0].shape == (10, 40, 40, 1)


# ---------------------------------------------------------------- the real datasets


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="real MNIST not available")
def test_real_mnist():
    (x, y), (xt, yt) = load_mnist(SHARED / "mnist")
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
    assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1
    assert y[:5].tolist() == [5, 0, 4, 1, 9] and yt[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(y).min() > 5000 and np.bincount(yt).min() > 850
    for f in SOURCES["mnist"].files[1:]:
        assert hashlib.sha256(gzip.decompress((SHARED / "mnist" / f.name).read_bytes())).hexdigest() == f.content_sha256


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="real Fashion-MNIST not available")
def test_real_fashion_mnist_and_its_checksums():
    (x, y), (xt, yt) = load_fashion_mnist(SHARED)  # found in the fashion-mnist/ subfolder
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10
    for f in SOURCES["fashion-mnist"].files:
        assert hashlib.md5((SHARED / "fashion-mnist" / f.name).read_bytes()).hexdigest() == f.md5


@pytest.mark.skipif(not (SHARED / "cifar10-sample").is_dir(), reason="CIFAR-10 sample not available")
def test_real_cifar10_sample():
    (x, y), (xt, yt) = load_cifar10(SHARED / "cifar10-sample")
    assert x.shape == (4000, 32, 32, 3) and xt.shape == (1000, 32, 32, 3)
    assert y[:5].tolist() == [6, 9, 9, 4, 1] and yt[:5].tolist() == [3, 8, 8, 0, 6]
    assert np.bincount(y, minlength=10).min() > 300 and 0 <= x.min() and x.max() <= 1
