"""Shared pieces of the ``explain`` tools: figures, self-contained HTML pages, images, models.

Every page written here is one HTML file with its pictures inlined as base64
``data:`` URIs and its scripts inline, so it opens from disk with no server and
no network. Figures are drawn with matplotlib's object API (no pyplot, no GUI
backend) and every file goes through :func:`cnnlab._io.atomic_write`.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .._io import CnnlabFileError, atomic_write, parse_json, read_json, write_json
from ..html import data_uri, esc, img_tag, table_html  # noqa: F401  (the HTML basics, used by the tools)
from ..plots import (colorbar, colormap as _colormap, figure_png, figure_rgb, new_figure,  # noqa: F401  (the figure basics)
                     save_figure, text_colour)

SIGNED_CMAP = "RdBu_r"        # negative blue, zero white, positive red: for weights and responses
IMAGE_CMAP = "gray"           # grayscale pictures
HEAT_CMAP = "viridis"         # non-negative maps


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------
def quantize_frames(frames, extra_colours=None, samples=10):
    """(H, W, 3) uint8 frames -> palette images (255 colours): small GIF frames and small PNGs.

    One palette serves all frames, so the GIF writer can store each frame as
    its difference from the previous one. It is made from up to ``samples``
    evenly spaced frames plus ``extra_colours`` ((K, 3) uint8, e.g. the colour
    maps in use), so colours that only some frames show are kept.
    """
    from PIL import Image
    frames = list(frames)
    picks = sorted(set(np.linspace(0, len(frames) - 1, min(samples, len(frames))).round().astype(int)))
    sample = np.concatenate([frames[i] for i in picks], axis=0)
    if extra_colours is not None and len(extra_colours):
        strip = np.zeros((1, sample.shape[1], 3), np.uint8)
        cols = np.asarray(extra_colours, np.uint8)[: sample.shape[1]]
        strip[0, :len(cols)] = cols
        sample = np.concatenate([sample] + [strip] * 64, axis=0)   # weight the strip so its colours survive
    palette = Image.fromarray(sample).quantize(colors=255, method=Image.Quantize.FASTOCTREE,
                                               dither=Image.Dither.NONE)
    return [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]


def colormap_colours(names, n=48) -> np.ndarray:
    """``n`` evenly spaced colours of each colour map, as (len(names) * n, 3) uint8."""
    return np.concatenate([(_colormap(name)(np.linspace(0, 1, n))[:, :3] * 255).round().astype(np.uint8)
                           for name in names])


def save_gif(frames, path, duration_ms=600, last_ms=None) -> int:
    """Write frames (uint8 (H, W, 3) arrays or palette images) as a looping GIF, atomically.

    Returns the number of frames in the written file. Pillow drops a frame
    identical to the one before it (merging their durations), so callers
    should draw visibly different frames.
    """
    from PIL import Image
    if not len(frames):
        raise ValueError("save_gif: no frames to write")
    images = frames if isinstance(frames[0], Image.Image) else quantize_frames(frames)
    durations = [duration_ms] * len(images)
    if last_ms is not None:
        durations[-1] = last_ms
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0,
                   disposal=1, optimize=False)
    atomic_write(path, buf.getvalue())
    with Image.open(path) as im:
        return int(getattr(im, "n_frames", 1))


def symmetric_limits(a, floor=1e-12):
    """``(-m, m)`` with ``m = max |a|``: a diverging colour map then puts zero at its centre (white)."""
    m = float(np.max(np.abs(a))) if np.size(a) else 0.0
    m = m if np.isfinite(m) and m > floor else 1.0
    return -m, m


def format_number(v, integers: bool) -> str:
    """Short text for a grid cell: ``4`` for integer data, ``0.37`` otherwise."""
    if integers:
        return str(int(round(float(v))))
    v = float(v)
    if abs(v) < 0.005:
        v = 0.0                                  # no "-0.00"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"


def is_integral(*arrays) -> bool:
    """True when every value of every array is a whole number (then grids print without decimals)."""
    return all(np.all(np.isfinite(a)) and np.allclose(a, np.round(a)) for a in map(np.asarray, arrays))


def show_image(ax, img, title=None, cmap=IMAGE_CMAP, vmin=None, vmax=None):
    """Show an (H, W), (H, W, 1) or (H, W, 3) image; RGB is rescaled to [0, 1] for display."""
    img = np.asarray(img, np.float64)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3:
        lo, hi = img.min(), img.max()
        im = ax.imshow((img - lo) / (hi - lo) if hi > lo else np.zeros_like(img), interpolation="nearest")
    else:
        im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    if title:
        ax.set_title(title)
    return im


# ---------------------------------------------------------------------------
# Self-contained HTML
# ---------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.5}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
img{max-width:100%;height:auto;border:1px solid #eee}
code,pre{background:#f5f5f5;border-radius:3px;padding:0 .25em}
pre{padding:.6em;overflow-x:auto}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f0f0} .note{color:#555;font-size:.92em}
button{font-size:1em;padding:.2em .8em;margin-right:.3em} input[type=range]{width:60%;vertical-align:middle}
"""


def write_html(path, title: str, sections, intro: str = "", script: str = "") -> Path:
    """Write a self-contained page: ``sections`` is a list of ``(heading, html_body)`` pairs.

    ``intro`` and section bodies are HTML (escape user text with :func:`esc`);
    ``script`` is inline JavaScript appended at the end of the body.
    """
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    if intro:
        parts.append(intro)
    for heading, body in sections:
        parts.append(f"<h2>{esc(heading)}</h2>\n{body}")
    if script:
        parts.append(f"<script>\n{script}\n</script>")
    parts.append("</body></html>")
    return atomic_write(path, "\n".join(parts) + "\n")


def frame_player(frames_png, element_id="player", alt="frame", labels=None, interval_ms=700) -> tuple[str, str]:
    """HTML and JavaScript for stepping through PNG frames: prev/next/play buttons and a slider.

    Returns ``(html, script)``. Frames are embedded once, as data URIs in a
    JavaScript array; the arrow keys also step.
    """
    uris = [data_uri(f) for f in frames_png]
    labels = labels or [f"frame {i + 1} of {len(uris)}" for i in range(len(uris))]
    eid = element_id
    body = (f'<div id="{eid}"><div><button id="{eid}-prev">&#9664; prev</button>'
            f'<button id="{eid}-play">play</button><button id="{eid}-next">next &#9654;</button>'
            f'<input type="range" id="{eid}-slider" min="0" max="{len(uris) - 1}" value="0">'
            f' <span id="{eid}-label"></span></div>'
            f'<img id="{eid}-img" src="{uris[0]}" alt="{esc(alt)}"></div>')
    script = f"""
(function(){{
  const frames = {json.dumps(uris)};
  const labels = {json.dumps(labels)};
  const img = document.getElementById("{eid}-img"), slider = document.getElementById("{eid}-slider");
  const label = document.getElementById("{eid}-label"), play = document.getElementById("{eid}-play");
  let i = 0, timer = null;
  function show(k) {{ i = (k + frames.length) % frames.length; img.src = frames[i]; slider.value = i;
                      label.textContent = labels[i]; }}
  document.getElementById("{eid}-prev").onclick = () => show(i - 1);
  document.getElementById("{eid}-next").onclick = () => show(i + 1);
  slider.oninput = () => show(parseInt(slider.value, 10));
  play.onclick = () => {{
    if (timer) {{ clearInterval(timer); timer = null; play.textContent = "play"; }}
    else {{ timer = setInterval(() => show(i + 1), {int(interval_ms)}); play.textContent = "pause"; }}
  }};
  document.addEventListener("keydown", e => {{
    if (e.key === "ArrowLeft") show(i - 1); else if (e.key === "ArrowRight") show(i + 1); }});
  show(0);
}})();
"""
    return body, script


# ---------------------------------------------------------------------------
# Inputs: output folders, JSON, user images, models
# ---------------------------------------------------------------------------
def out_dir(out) -> Path:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CnnlabFileError(f"output path {path} exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def to_jsonable(obj):
    """Arrays to nested lists, numpy scalars to Python numbers, tuples to lists (recursively)."""
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return float(f"{v:.10g}") if np.isfinite(v) else None     # 10 significant digits: 8.88e-16 stays 8.88e-16
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_json(path, obj) -> Path:
    return write_json(path, to_jsonable(obj))


def load_image(path, size=None, channels: int = 1) -> np.ndarray:
    """A picture as float32 (H, W, channels) in [0, 1]: :func:`cnnlab.images.read_image`."""
    from ..images import read_image
    return read_image(path, size, channels)


def load_model(path):
    """The model of a run directory or a ``.safetensors`` file (``cnnlab.runs.resolve_model``)."""
    from ..runs.resolve import resolve_model
    return resolve_model(path, untrained=False).model


def parse_array_text(text, what="array"):
    """A nested list given as JSON text (or the path of a JSON file) -> float64 array."""
    src = str(text)
    if Path(src).suffix.lower() == ".json" or (not src.lstrip().startswith("[") and Path(src).is_file()):
        source = f"{what} file {src}"
        data = read_json(src, f"{what} file")
    else:
        source = what
        data = parse_json(src, what)
    try:
        arr = np.array(data, dtype=np.float64)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{source} must be a nested list of numbers such as [[1, 0], [0, 1]], "
                         f"received {str(text)[:80]!r} ({e})") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{source} contains non-finite values")
    return arr
