"""cnnlab.images: every mode, orientation, bombs, damaged files, the background rule and MNIST's normalization."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnnlab import cli, images
from cnnlab._io import CnnlabFileError
from cnnlab.explain import subject as SUB

RNG = np.random.default_rng(0)
LEVELS = RNG.integers(0, 256, (5, 7)).astype(np.uint8)            # an 8-bit gray picture, 7 wide and 5 high


def saved(img, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def luma(rgb):
    return rgb.astype(np.float64) @ [0.299, 0.587, 0.114]


# ---------------------------------------------------------------------------
# Every mode, each compared with the value the mode stands for
# ---------------------------------------------------------------------------
def test_gray_modes_are_scaled_to_their_own_range():
    g = LEVELS / 255.0
    np.testing.assert_allclose(images.read_image(saved(Image.fromarray(LEVELS)))[..., 0], g, atol=1e-6)
    bits = LEVELS > 127
    one = Image.fromarray(bits).convert("1")
    np.testing.assert_array_equal(images.read_image(saved(one))[..., 0], bits.astype(np.float32))
    sixteen = (LEVELS.astype(np.uint16) * 257 + 3).astype(np.uint16)  # levels 8-bit can not hold
    img16 = Image.fromarray(sixteen)
    assert img16.mode == "I;16"
    x = images.read_image(saved(img16))[..., 0]
    np.testing.assert_allclose(x, sixteen / 65535.0, atol=1e-6)       # scaled, not clipped to 255
    assert x.max() > 0.5 and len(np.unique(x)) == len(np.unique(sixteen))
    i32 = Image.fromarray(sixteen.astype(np.int32), "I")
    np.testing.assert_allclose(images.read_image(saved(i32, "TIFF"))[..., 0], sixteen / 65535.0, atol=1e-6)
    f = Image.fromarray((LEVELS / 255.0).astype(np.float32), "F")
    np.testing.assert_allclose(images.read_image(saved(f, "TIFF"))[..., 0], g, atol=1e-6)


def test_colour_modes_give_rgb_and_luma():
    rgb = RNG.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    x = images.read_image(saved(Image.fromarray(rgb)), channels=3)
    np.testing.assert_allclose(x, rgb / 255.0, atol=1e-6)
    np.testing.assert_allclose(images.read_image(saved(Image.fromarray(rgb)))[..., 0], luma(rgb) / 255, atol=1e-5)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    for data in (saved(cmyk, "TIFF"), saved(cmyk, "JPEG", quality=100)):
        y = images.read_image(data, channels=3)
        assert y.shape == (5, 7, 3)
        assert np.abs(y - rgb / 255.0).mean() < 0.05                 # CMYK back to the same colours
    gray3 = images.read_image(saved(Image.fromarray(LEVELS)), channels=3)
    assert gray3.shape == (5, 7, 3) and np.all(gray3[..., 0] == gray3[..., 2])


def test_transparency_is_composited_on_white():
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0] = 200                                              # red ink
    rgba[..., 3] = np.linspace(0, 255, 7).astype(np.uint8)          # from transparent to opaque, left to right
    x = images.read_image(saved(Image.fromarray(rgba)), channels=3)
    a = rgba[..., 3:] / 255.0
    np.testing.assert_allclose(x, a * rgba[..., :3] / 255.0 + (1 - a) * 1.0, atol=1e-6)
    la = np.stack([LEVELS, np.full_like(LEVELS, 0)], axis=-1)      # fully transparent: all paper
    np.testing.assert_allclose(images.read_image(saved(Image.fromarray(la, "LA"))), 1.0)
    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    x = images.read_image(saved(pal, transparency=0), channels=3)   # index 0 transparent
    np.testing.assert_allclose(x[0, 0], [1, 1, 1])
    np.testing.assert_allclose(x[0, 1], np.array([10, 20, 30]) / 255, atol=1e-6)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)).convert("P") for v in (30, 220)]
    data = saved(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    np.testing.assert_allclose(images.read_image(data), 30 / 255.0, atol=2 / 255)


def test_exif_orientation_is_applied():
    img = Image.fromarray(LEVELS)                                   # 7 wide, 5 high
    exif = Image.Exif()
    exif[0x0112] = 6                                                # "rotate 90 clockwise to view"
    x = images.read_image(saved(img, "JPEG", quality=100, exif=exif))[..., 0]
    assert x.shape == (7, 5)
    np.testing.assert_allclose(x, np.rot90(LEVELS, -1) / 255.0, atol=0.03)


def test_one_resize_filter_stays_in_range_and_averages():
    x = images.read_image(saved(Image.fromarray(LEVELS)), size=(10, 14))
    assert x.shape == (10, 14, 1) and 0 <= x.min() and x.max() <= 1
    checker = np.indices((40, 40)).sum(axis=0) % 2 * 255
    small = images.read_image(saved(Image.fromarray(checker.astype(np.uint8))), size=10)
    np.testing.assert_allclose(small, 0.5, atol=0.02)              # shrinking averages (no aliasing)


# ---------------------------------------------------------------------------
# What is refused, with one line naming the file
# ---------------------------------------------------------------------------
def bomb_png(width=40000, height=40000) -> bytes:
    """A valid PNG header announcing width x height 1-bit pixels, with a tiny compressed body: a few kB."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    row = b"\0" + b"\0" * ((width + 7) // 8)
    body = zlib.compress(row * 64, 9)                               # only the first rows: enough to lure a decoder
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_bomb_is_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(bomb_png())
    assert p.stat().st_size < 10_000
    with pytest.raises(CnnlabFileError, match=r"bomb.png has 1,600,000,000 pixels, more than the 64,000,000"):
        images.read_image(p)
    with pytest.raises(CnnlabFileError, match="uploaded image has 1,600,000,000 pixels"):
        images.read_image(p.read_bytes())
    for w, h in ((9000, 9000), (10000, 10000)):                     # above cnnlab's limit, below or at Pillow's
        with pytest.raises(images.ImageTooLarge, match=f"({w}x{h} = )?{w * h:,} pixels, more than"):
            images.read_image(bomb_png(w, h))
    with pytest.raises(images.ImageTooLarge):                        # Pillow's own refusal, typed the same
        images.read_image(p)
    assert issubclass(images.ImageTooLarge, CnnlabFileError)


def test_a_damaged_file_is_not_too_large():
    with pytest.raises(CnnlabFileError) as e:
        images.read_image(b"\x89PNG\r\n\x1a\n broken")
    assert not isinstance(e.value, images.ImageTooLarge)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 3)])
def test_encode_png_round_trips_through_the_reader(shape):
    a = RNG.integers(0, 256, shape).astype(np.uint8)
    channels = 3 if len(shape) == 3 and shape[2] == 3 else 1
    back = images.read_image(images.encode_png(a), channels=channels)
    np.testing.assert_array_equal((back * 255).round().astype(np.uint8), a.reshape(5, 7, channels))
    floats = a.astype(np.float64) / 255                                # floats in [0, 1] are rounded to 8 bits
    np.testing.assert_array_equal(images.encode_png(floats), images.encode_png(a))
    with Image.open(io.BytesIO(images.encode_png(Image.fromarray(LEVELS)))) as im:
        np.testing.assert_array_equal(np.asarray(im), LEVELS)


@pytest.mark.parametrize("content, problem", [
    (b"", "is empty"), (b"hello, I am text\n", "is not a picture"), (None, "does not exist"),
    ("truncated", "damaged or truncated"), (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not a picture"),
])
def test_damaged_files_are_refused(tmp_path, content, problem):
    p = tmp_path / "pic.png"
    if content == "truncated":
        content = saved(Image.fromarray(RNG.integers(0, 256, (64, 64, 3)).astype(np.uint8)))[:300]
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(CnnlabFileError, match=problem) as e:
        images.read_image(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------
# MNIST's normalization and the background rule
# ---------------------------------------------------------------------------
def seven(size, box, light_on_dark=False):
    """A 7 drawn with strokes of width box // 8 in the box (left, top, right, bottom) of a size x size page."""
    img = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(img)
    l, t, r, b = box
    w = max(1, (r - l) // 8)
    d.line([(l, t), (r, t), (l + (r - l) // 3, b)], fill=0, width=w)
    return img if not light_on_dark else Image.fromarray(255 - np.asarray(img))


def test_a_small_digit_in_a_corner_becomes_the_centred_digit():
    centred = images.prepare_input(saved(seven(280, (70, 40, 210, 240))), (28, 28, 1))[0]
    corner = images.prepare_input(saved(seven(280, (6, 4, 48, 64))), (28, 28, 1))[0]
    plain = images.prepare_input(saved(seven(280, (6, 4, 48, 64))), (28, 28, 1), center="no")[0]
    assert np.abs(corner - centred).mean() < 0.03 and np.corrcoef(corner.ravel(), centred.ravel())[0, 1] > 0.95
    assert np.corrcoef(plain.ravel(), centred.ravel())[0, 1] < 0.3      # without it they differ
    ys, xs = np.nonzero(corner[..., 0] > 0.5)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 in (19, 20, 21)   # the 20x20 box
    w = corner[..., 0]
    com = [(w.sum(axis=1) * np.arange(28)).sum() / w.sum(), (w.sum(axis=0) * np.arange(28)).sum() / w.sum()]
    np.testing.assert_allclose(com, 13.5, atol=0.75)                # centre of mass in the middle


def test_normalization_only_for_mnist_style_models():
    data = saved(seven(100, (2, 2, 30, 40)))
    assert images.is_mnist_style((28, 28, 1)) and images.is_mnist_style((28, 28, 1), "mnist")
    assert not images.is_mnist_style((28, 28, 1), "shapes") and not images.is_mnist_style((32, 32, 1))
    _, notes = images.prepare_input(data, (28, 28, 1), dataset="shapes")
    assert not any("centre" in n for n in notes)
    _, notes = images.prepare_input(data, (28, 28, 1), dataset="mnist")
    assert any("centred by its centre of mass" in n and "--no-center" in n for n in notes)


def test_background_rule_and_its_options():
    dark_ink = saved(seven(56, (10, 10, 46, 46)))
    x, notes = images.prepare_input(dark_ink, (28, 28, 1), center="no")
    assert x[0, 0, 0] < 0.05 and len(notes) == 1 and "inverted" in notes[0] and "--keep-background" in notes[0]
    kept, notes = images.prepare_input(dark_ink, (28, 28, 1), invert="no", center="no")
    np.testing.assert_allclose(kept, 1 - x, atol=1e-6) and not notes
    light_ink = saved(seven(56, (10, 10, 46, 46), light_on_dark=True))
    y, notes = images.prepare_input(light_ink, (28, 28, 1), center="no")
    assert not notes
    np.testing.assert_allclose(y, x, atol=1e-6)
    rgb, notes = images.prepare_input(saved(seven(56, (10, 10, 46, 46)).convert("RGB")), (28, 28, 3))
    assert rgb[0, 0, 0] > 0.95 and not notes                         # colour models: photos are left alone


def test_predict_and_explain_treat_a_picture_the_same(tmp_path, capsys):
    """One rule: the array and the notes `cnnlab predict` uses are those of the explain tools."""
    from cnnlab.models import lenet5
    model = lenet5(seed=3)
    model.save(tmp_path / "m.safetensors")
    pic = tmp_path / "seven.png"
    seven(200, (10, 8, 60, 70)).save(pic)
    assert cli.main(["predict", str(tmp_path / "m.safetensors"), str(pic), "--top-k", "10"]) == 0
    out, err = capsys.readouterr()
    x = SUB.prepare_image(pic, (28, 28, 1), log=None)
    probs = model.predict(x[None])[0]
    shown = {int(line.split()[1]): float(line.split()[2].rstrip("%")) for line in out.splitlines()[1:]}
    for k, p in shown.items():
        assert abs(p - 100 * probs[k]) < 0.006
    notes = images.prepare_input(pic, (28, 28, 1))[1]
    assert len(notes) == 2 and err.splitlines() == [f"note: {n}" for n in notes]
    assert cli.main(["predict", str(tmp_path / "m.safetensors"), str(pic), "--no-center", "--keep-background"]) == 0
    assert capsys.readouterr().err == ""
