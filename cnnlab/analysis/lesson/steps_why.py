"""Steps 8-14 of the lesson: why the first layer finds edges and what finds corners (Q3), sub-sampling
and the classifier (Q1), invariance measured and what the model looks at (Q2), and a place to try.

The steps live in ``why_edges`` (8, 10), ``why_head`` (9, 11), ``why_invariance`` (12, 13) and ``tryit`` (14).
"""
from __future__ import annotations

from .base import Step
from .tryit import tryit
from .why_edges import edges, parts
from .why_head import classifier, pooling
from .why_invariance import invariance, looks

STEPS = [
    Step("edges", "Why the first layer ends up with edges", ("Q3",), edges),
    Step("pooling", "Sub-sampling", ("Q1", "Q2"), pooling),
    Step("parts", "Deeper layers: parts made of parts", ("Q3",), parts),
    Step("classifier", "The classifier", ("Q1",), classifier),
    Step("invariance", "Invariance, measured", ("Q2",), invariance),
    Step("looks", "What the model looks at", ("Q2",), looks),
    Step("try", "Try it yourself", ("Q1",), tryit),
]
