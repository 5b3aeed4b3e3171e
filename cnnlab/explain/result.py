"""What an explain tool returns: the dict of its numbers (as in its JSON file), shown inline in a notebook.

    r = explain_matched_filter("out/mf")     # writes the files into out/mf, as on the command line
    r["peak_position"]                        # the numbers, as before
    r                                         # a notebook cell shows the pictures and the key numbers

The key numbers are the result's plain values: its top-level numbers, truth values and short texts, and
those one level down (``parameters.conv``); arrays, long lists and file names stay in the dict and the
JSON file. ``cnnlab.notebook`` draws the HTML.
"""
from __future__ import annotations

from pathlib import Path

MAX_TEXT = 80             # a text longer than this is not a key number (it is in the page and the JSON)


class ExplainResult(dict):
    """A tool's result dict with ``title``, ``out`` (the folder of its files) and ``pictures`` (its PNG files,
    in the order the page shows them) for ``_repr_html_``; ``text``: sentences shown under the pictures."""

    def __init__(self, data: dict, title: str, out, pictures=(), text: str = ""):
        super().__init__(data)
        self.title, self.out, self.text = title, Path(out), text
        self.pictures = [self.out / p for p in pictures]

    def key_numbers(self) -> list[tuple[str, object]]:
        """``(name, value)`` for every plain value at the top level and one level down."""
        out = []
        for k, v in self.items():
            if _plain(v):
                out.append((k, v))
            elif isinstance(v, dict):
                out += [(f"{k}.{kk}", vv) for kk, vv in v.items() if _plain(vv)]
        return out

    def _repr_html_(self) -> str:
        from ..notebook import figure_html, heading_html, numbers_html
        from ..html import esc
        pictures = "".join(figure_html(p.read_bytes(), p.name, "image/gif" if p.suffix == ".gif" else "image/png")
                           for p in self.pictures if p.is_file())
        text = f"<p>{esc(self.text)}</p>" if self.text else ""
        return (heading_html(self.title) + pictures + text + "<details><summary>key numbers</summary>"
                + numbers_html(self.key_numbers()) + "</details>"
                + f"<p style='font-size:smaller'>files in <code>{esc(self.out)}</code></p>")


def _plain(v) -> bool:
    import numpy as np
    if isinstance(v, (bool, int, float, np.integer, np.floating)) or v is None:
        return v is not None
    return isinstance(v, str) and len(v) <= MAX_TEXT
