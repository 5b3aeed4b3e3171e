"""Layers of a convolutional network, each with a hand-written forward and backward pass.

Start with ``conv.py``: the convolution, its naive reference and the fast im2col path.
"""
from .activations import ClippedReLU, LeakyReLU, ReLU, Sigmoid, Tanh
from .base import Layer
from .conv import Conv2D, conv2d_naive
from .core import Dense, Dropout, Flatten
from .local import LocallyConnected2D
from .lrn import LocalResponseNorm
from .merge import Add, Concatenate
from .norm import BatchNorm
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D, Subsample
from .shuffle import ChannelShuffle

LAYERS = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, AvgPool2D, Subsample, GlobalAvgPool2D, ReLU, LeakyReLU,
                                       Tanh, Sigmoid, ClippedReLU, Flatten, Dense, Dropout, BatchNorm,
                                       LocallyConnected2D, Add, Concatenate, LocalResponseNorm, ChannelShuffle)}


def register(cls):
    """Make a layer class known to ``Sequential.from_config`` (and so to saved models)."""
    LAYERS[cls.__name__] = cls
    return cls


__all__ = sorted(LAYERS) + ["Layer", "conv2d_naive", "register", "LAYERS"]
