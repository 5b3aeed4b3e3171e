"""The HTML basics: escaping, pictures inlined as ``data:`` URIs, tables.

The explain tools' self-contained pages (``cnnlab.explain.common``) and the notebook display
(``cnnlab.notebook``) write their HTML with these; this module imports nothing of cnnlab.
"""
from __future__ import annotations

import base64
import html


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def img_tag(data: bytes, alt: str, mime: str = "image/png", width=None, attrs: str = "") -> str:
    """An ``<img>`` with the picture inlined as a data URI."""
    w = f' style="max-width:{width}"' if width else ""
    return f'<img src="{data_uri(data, mime)}" alt="{html.escape(alt)}"{w} {attrs}>'


def esc(text) -> str:
    return html.escape(str(text))


def table_html(header, rows) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
