"""Steps 1-7 of the lesson: how the convolution step works (Q1), what it has to do with the convolution
of probability theory (Q4), and the first reasons it works (Q2): sharing, equivariance, matched filters."""
from __future__ import annotations

from .base import Step


def _todo(ctx):
    return {"paragraphs": ["(not written yet)"]}


STEPS = [
    Step("vector", "An image as a vector", ("Q1",), _todo),
    Step("neuron", "One neuron on one patch", ("Q1",), _todo),
    Step("convolution", "The same neuron at every position", ("Q1",), _todo),
    Step("probability", "Convolution in probability theory", ("Q4",), _todo),
    Step("maps", "Many filters, many feature maps", ("Q1",), _todo),
    Step("sharing", "Equivariance, and what sharing buys", ("Q2",), _todo),
    Step("matched", "Matched filtering", ("Q2", "Q3"), _todo),
]
