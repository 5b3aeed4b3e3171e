"""The lesson: from one neuron to *why* convolution works, every step computed from a model and an input.

A step is a function ``fn(ctx) -> dict`` of a :class:`Context` (the model, the current input, the
model's data when at hand, the companion models). It returns plain Python and NumPy values; the
explorer (``cnnlab.serve``) turns arrays into JSON and draws them, ``cnnlab explain`` and the notebooks
read the same numbers and the same sentences. Nothing here imports a web framework or matplotlib.

What a step returns (every key but ``paragraphs`` may be omitted)::

    {"paragraphs": [str, ...],      # the text, at most ~120 words; model-dependent sentences come
                                    # from cnnlab.analysis.texts, chosen by rules from "numbers"
     "numbers":    {name: number},  # the key numbers the text and figures state (tests check them)
     "figures":    [figure, ...],   # see below; each has "alt": its text alternative with the numbers
     "predict":    {"question": str, "choices": [str], "answer": int, "reveal": str} | None,
                                    # asked before the figures are shown
     "link":       {"view": "unit"|"overview"|"why"|"training", "layer", "c", "y", "x"} | None,
                                    # the detailed view the step summarises
     "applies":    bool,            # False: the step does not apply to this model ...
     "why_not":    str}             # ... and this one line says why

Figures (arrays are NumPy; the server packs them)::

    {"kind": "maps",   "items": [{"label", "map": (H, W) or (H, W, 3)}], "signed": bool, "alt"}
                       # optional: "shared": False (each item on its own scale), "size" (px), "title"
    {"kind": "curve",  "x": [..], "series": [{"name", "y": [..]}], "xlabel", "ylabel", "alt"}
    {"kind": "bars",   "labels": [..], "values": [..], "alt"}
    {"kind": "table",  "header": [..], "rows": [[..]], "alt"}
    {"kind": "grid",   "values": (h, w), "label", "alt"}            # a small array of numbers
    {"kind": "stepper", "layer": name, "channel": c, "y", "x", "alt"}  # the stepping window (/api/unit),
                                                                     # starting at unit (y, x)
    {"kind": "slide",  "x": (n,), "p": (n,), "q": (n,), "z": (m,), "products": (m, n), "result": (m,),
                       "p_label", "q_label", "result_label", "alt"}
                       # a 1-D convolution p * q as a slide: for each z[j] (a row), the products
                       # p(x_i) q(z_j - x_i) of p with the flipped q laid so that it ends at x_i, and their
                       # sum result[j] (step 4: two dice, x = 1..6, z = 2..12; see how_probability)
    {"kind": "tryit", "kernels": [..], "limits": {name: [lo, hi]}, "options": {..}, "input", "kernel",
     "output", "pooled" (arrays; pooled None without pooling), "sizes": {"input", "kernel", "output",
     "pooled"}, "route": "/api/lesson/try", "alt"}                   # step 14 (.tryit): the page asks the
                                                                     # route again when a control changes
    Any figure may carry "label": a title to draw above it.
"""
from __future__ import annotations

from . import steps_how, steps_why
from .base import Context, Step, not_applicable

__all__ = ["Context", "Step", "not_applicable", "outline", "step"]


def _steps() -> list[Step]:
    return [*steps_how.STEPS, *steps_why.STEPS]


def outline() -> list[dict]:
    """Every step's number (from 1), id, title and questions."""
    return [{"step": n, "id": s.id, "title": s.title, "questions": list(s.questions)}
            for n, s in enumerate(_steps(), 1)]


def step(n: int, ctx: Context) -> dict:
    """Step ``n`` (from 1) computed for ``ctx``: the step's dict with ``step``, ``count``, ``id``,
    ``title``, ``questions`` and ``applies`` filled in."""
    steps = _steps()
    if not 1 <= n <= len(steps):
        raise ValueError(f"the lesson has steps 1 to {len(steps)}, not {n}")
    s = steps[n - 1]
    out = {"applies": True, "numbers": {}, "figures": [], "predict": None, "link": None, **s.fn(ctx)}
    out.update(step=n, count=len(steps), id=s.id, title=s.title, questions=list(s.questions))
    return out
