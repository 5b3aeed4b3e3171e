"""What every lesson step shares: its input (:class:`Context`) and its entry (:class:`Step`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import texts


@dataclass
class Context:
    """What a step may read. ``x``: the current input ``(H, W, C)`` float32, prepared as the model
    reads it; ``data``: ``((x_train, y_train), (x_test, y_test), class_names, source)`` of the model's
    own data, or a ``LookupError`` saying why there is none; ``companions``: name -> model or a
    sentence saying why it is not ready (see :mod:`.companions`)."""
    model: object
    x: np.ndarray
    class_names: list = field(default_factory=list)
    data: object = None
    companions: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    questions: tuple        # which of the learner's questions it answers: "Q1".."Q4"
    fn: object


def not_applicable(why: str) -> dict:
    """A step that does not apply to this model: one line saying why."""
    return {"applies": False, "why_not": why, "paragraphs": [why], "figures": []}


def companion(ctx, name):
    """``(object, None)`` when companion ``name`` is ready, else ``(None, the one line saying why not)``."""
    c = ctx.companions.get(name) if ctx.companions else None
    if c is None:
        return None, texts.lesson_companion_missing(name)
    if isinstance(c, str):
        return None, c
    return c, None
