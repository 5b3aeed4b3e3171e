"""Steps 1-7 of the lesson: how the convolution step works (Q1), what it has to do with the convolution
of probability theory (Q4), and the first reasons it works (Q2): sharing, equivariance, matched filters.

The steps live in :mod:`.how_neuron` (1-3), :mod:`.how_probability` (4), :mod:`.how_maps` (5, 6) and
:mod:`.how_matched` (7); :mod:`.how_common` holds what they share.
"""
from __future__ import annotations

from .base import Step
from .how_maps import maps, sharing
from .how_matched import matched
from .how_neuron import convolution, neuron, vector
from .how_probability import probability

STEPS = [
    Step("vector", "An image as a vector", ("Q1",), vector),
    Step("neuron", "One neuron on one patch", ("Q1",), neuron),
    Step("convolution", "The same neuron at every position", ("Q1",), convolution),
    Step("probability", "Convolution in probability theory", ("Q4",), probability),
    Step("maps", "Many filters, many feature maps", ("Q1",), maps),
    Step("sharing", "Equivariance, and what sharing buys", ("Q2",), sharing),
    Step("matched", "Matched filtering", ("Q2", "Q3"), matched),
]
