"""Steps 8-14 of the lesson: why the first layer finds edges and what finds corners (Q3), sub-sampling
and the classifier (Q1), invariance measured and what the model looks at (Q2), and a place to try."""
from __future__ import annotations

from .base import Step


def _todo(ctx):
    return {"paragraphs": ["(not written yet)"]}


STEPS = [
    Step("edges", "Why the first layer ends up with edges", ("Q3",), _todo),
    Step("pooling", "Sub-sampling", ("Q1", "Q2"), _todo),
    Step("parts", "Deeper layers: parts made of parts", ("Q3",), _todo),
    Step("classifier", "The classifier", ("Q1",), _todo),
    Step("invariance", "Invariance, measured", ("Q2",), _todo),
    Step("looks", "What the model looks at", ("Q2",), _todo),
    Step("try", "Try it yourself", ("Q1",), _todo),
]
