"""Ready-made architectures: ``lenet5`` and a small zoo, by name in ``ZOO``."""
from __future__ import annotations

from .layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU
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


def _conv_bn_relu(filters, kernel_size=3):
    """conv (no bias: BatchNorm's beta replaces it) -> BatchNorm -> ReLU."""
    return [Conv2D(filters, kernel_size, padding="same", use_bias=False), BatchNorm(), ReLU()]


def mnist_fast(input_shape=(28, 28, 1), num_classes=10, seed=0) -> Sequential:
    """A fast, accurate digit model: LeNet's two convolutions, wider, with BatchNorm.

    conv 32@5x5 same -> BN -> ReLU -> max-pool 2 -> conv 64@5x5 -> BN -> ReLU -> max-pool 2
    -> dense 256 -> BN -> ReLU -> dropout 0.3 -> dense ``num_classes``.
    About 6.2 million multiply-adds per image: with ``--augment mnist`` it reaches 99.6% on
    MNIST in about ten minutes of training on two cores (see the README's recipes).
    """
    return Sequential([
        *_conv_bn_relu(32, 5), MaxPool2D(2),
        Conv2D(64, 5, use_bias=False), BatchNorm(), ReLU(), MaxPool2D(2),
        Flatten(), Dense(256, use_bias=False), BatchNorm(), ReLU(), Dropout(0.3),
        Dense(num_classes, kernel_initializer="glorot_uniform"),
    ], input_shape=input_shape, seed=seed, name="mnist_fast")


def cifar_small(input_shape=(32, 32, 3), num_classes=10, seed=0) -> Sequential:
    """A small VGG-style CIFAR-10 model with BatchNorm and global average pooling.

    [conv 32@3x3 -> BN -> ReLU] x2 -> max-pool 2 -> [conv 64@3x3 -> BN -> ReLU] x2 -> max-pool 2
    -> [conv 128@3x3 -> BN -> ReLU] x2 -> max-pool 2 -> global average pool -> dense ``num_classes``.
    Train with ``--augment cifar``.
    """
    return Sequential([
        *_conv_bn_relu(32), *_conv_bn_relu(32), MaxPool2D(2),
        *_conv_bn_relu(64), *_conv_bn_relu(64), MaxPool2D(2),
        *_conv_bn_relu(128), *_conv_bn_relu(128), MaxPool2D(2),
        GlobalAvgPool2D(), Dense(num_classes, kernel_initializer="glorot_uniform"),
    ], input_shape=input_shape, seed=seed, name="cifar_small")


def tiny_cnn(input_shape=(28, 28, 1), num_classes=10, seed=0) -> Sequential:
    """The smallest useful CNN, for demonstrations: trains in seconds.

    conv 8@5x5 same -> ReLU -> max-pool 2 -> conv 16@3x3 same -> ReLU -> max-pool 2 -> dense ``num_classes``.
    """
    return Sequential([
        Conv2D(8, 5, padding="same"), ReLU(), MaxPool2D(2),
        Conv2D(16, 3, padding="same"), ReLU(), MaxPool2D(2),
        Flatten(), Dense(num_classes, kernel_initializer="glorot_uniform"),
    ], input_shape=input_shape, seed=seed, name="tiny_cnn")


# Every ready-made architecture by name: ``ZOO[name](input_shape=..., num_classes=..., seed=...)``.
ZOO = {"lenet5": lenet5, "mnist_fast": mnist_fast, "cifar_small": cifar_small, "tiny_cnn": tiny_cnn}


def get(name: str):
    """The zoo function for ``name`` (``mnist-fast`` and ``mnist_fast`` both work)."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in ZOO:
        raise ValueError(f"unknown model {name!r}; the zoo has {', '.join(ZOO)} (or give an architecture .json file)")
    return ZOO[key]
