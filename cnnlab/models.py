"""Ready-made architectures: ``lenet5`` and a small zoo, by name in ``ZOO``."""
from __future__ import annotations

from .graph import Input
from .layers import Add, BatchNorm, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU
from .model import Model, Sequential


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
    About 6.2 million multiply-adds per image (the second convolution runs as Winograd F(2x2, 5x5)
    with the compiled loops): with ``--augment mnist`` it reaches 99.6% on MNIST in about six
    minutes of training on two cores (see the README's recipes).
    """
    return Sequential([
        *_conv_bn_relu(32, 5), MaxPool2D(2),
        Conv2D(64, 5, use_bias=False), BatchNorm(), ReLU(), MaxPool2D(2),
        Flatten(), Dense(256, use_bias=False), BatchNorm(), ReLU(), Dropout(0.3),
        Dense(num_classes, kernel_initializer="glorot_uniform"),
    ], input_shape=input_shape, seed=seed, name="mnist_fast")


def mnist_accurate(input_shape=(28, 28, 1), num_classes=10, seed=0) -> Sequential:
    """``mnist_fast`` with its second 5x5 convolution replaced by two 3x3 convolutions of 64 filters.

    conv 32@5x5 same -> BN -> ReLU -> max-pool 2 -> [conv 64@3x3 same -> BN -> ReLU] x2 -> max-pool 2
    -> dense 256 -> BN -> ReLU -> dropout 0.3 -> dense ``num_classes``.
    About 12.3 million multiply-adds per image, twice ``mnist_fast``'s, but the 3x3 layers run as
    Winograd F(2x2, 3x3): an epoch takes about 1.8x as long as ``mnist_fast``'s (37 s against 21 s
    in the README's MNIST recipes). More accurate for the same training time
    (see the README's recipes: 99.68-99.74% on MNIST in under ten minutes on two cores, by seed
    and engine version).
    """
    return Sequential([
        *_conv_bn_relu(32, 5), MaxPool2D(2),
        *_conv_bn_relu(64), *_conv_bn_relu(64), MaxPool2D(2),
        Flatten(), Dense(256, use_bias=False), BatchNorm(), ReLU(), Dropout(0.3), Dense(num_classes),
    ], input_shape=input_shape, seed=seed, name="mnist_accurate")


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


def _basic_block(x, filters, strides):
    """He et al.'s basic block: ``relu(F(x) + shortcut(x))`` with ``F`` = 3x3 conv -> BN -> ReLU -> 3x3 conv -> BN.

    Where the block halves the map and changes the width, the shortcut is a strided
    1x1 convolution with BatchNorm (the paper's option B); elsewhere it is ``x`` itself.
    """
    y = Conv2D(filters, 3, strides=strides, padding=1, use_bias=False)(x)
    y = ReLU()(BatchNorm()(y))
    y = BatchNorm()(Conv2D(filters, 3, padding=1, use_bias=False)(y))
    if strides != 1 or x.shape[-1] != filters:
        x = BatchNorm()(Conv2D(filters, 1, strides=strides, use_bias=False)(x))
    return ReLU()(Add()([y, x]))


def _resnet(depth, input_shape, num_classes, seed, name) -> Model:
    """The CIFAR ResNets of He et al. 2016 (section 4.2): depth = 6 n + 2.

    conv 16@3x3 -> BN -> ReLU -> n blocks of 16 filters -> n blocks of 32 (the first halves the map)
    -> n blocks of 64 (the first halves the map) -> global average pool -> dense ``num_classes``.
    """
    n = (depth - 2) // 6
    inputs = Input(input_shape)
    x = ReLU()(BatchNorm()(Conv2D(16, 3, padding=1, use_bias=False)(inputs)))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(n):
            x = _basic_block(x, filters, 2 if stage > 0 and block == 0 else 1)
    outputs = Dense(num_classes, kernel_initializer="glorot_uniform")(GlobalAvgPool2D()(x))
    return Model(inputs, outputs, seed=seed, name=name)


def resnet20(input_shape=(32, 32, 3), num_classes=10, seed=0) -> Model:
    """ResNet-20 for 32x32 images: 3 stages of 3 basic blocks (16, 32, 64 filters); 0.27 M parameters.

    He et al. report 8.75% error on CIFAR-10 (with option-A shortcuts and their training recipe).
    """
    return _resnet(20, input_shape, num_classes, seed, "resnet20")


def resnet8(input_shape=(32, 32, 3), num_classes=10, seed=0) -> Model:
    """ResNet-8: one basic block per stage (16, 32, 64 filters); 78 k parameters, fast to train."""
    return _resnet(8, input_shape, num_classes, seed, "resnet8")


# Every ready-made architecture by name: ``ZOO[name](input_shape=..., num_classes=..., seed=...)``.
ZOO = {"lenet5": lenet5, "mnist_fast": mnist_fast, "mnist_accurate": mnist_accurate, "cifar_small": cifar_small,
       "tiny_cnn": tiny_cnn, "resnet20": resnet20, "resnet8": resnet8}


def get(name: str):
    """The zoo function for ``name`` (``mnist-fast`` and ``mnist_fast`` both work)."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in ZOO:
        raise ValueError(f"unknown model {name!r}; the zoo has {', '.join(ZOO)} (or give an architecture .json file)")
    return ZOO[key]
