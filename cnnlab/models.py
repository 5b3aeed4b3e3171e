"""Ready-made architectures."""
from __future__ import annotations

from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from .model import Sequential


def lenet5(input_shape=(28, 28, 1), num_classes=10, seed=0) -> Sequential:
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling.

    conv 6@5x5 same -> ReLU -> max-pool 2 -> conv 16@5x5 -> ReLU -> max-pool 2
    -> dense 120 -> ReLU -> dense 84 -> ReLU -> dense ``num_classes``.
    """
    return Sequential([
        Conv2D(6, 5, padding="same"), ReLU(), MaxPool2D(2),
        Conv2D(16, 5), ReLU(), MaxPool2D(2),
        Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(num_classes, kernel_initializer="glorot_uniform"),
    ], input_shape=input_shape, seed=seed, name="lenet5")
