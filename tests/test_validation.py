"""Wrong input gives a clear ValueError that says what was received and what was expected."""
import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L


@pytest.mark.parametrize("make,match", [
    (lambda: L.Conv2D(0, 3), r"filters must be a positive integer, received 0"),
    (lambda: L.Conv2D(4, 3, strides=0), r"strides must be a positive integer, received 0"),
    (lambda: L.Conv2D(4, (3, 3, 3)), r"kernel_size must be an int or a pair of ints, received \(3, 3, 3\)"),
    (lambda: L.Conv2D(4, 3, padding="full"), r"padding must be 'valid', 'same'.*received 'full'"),
    (lambda: L.Conv2D(4, 3, padding=-1), r"received -1"),
    (lambda: L.Conv2D(5, 3, groups=2), r"filters \(5\) must be divisible by groups \(2\)"),
    (lambda: L.Conv2D(4, 3, dilation=1.5), r"dilation must be a positive integer, received 1.5"),
    (lambda: L.Conv2D(4, 3, kernel_initializer="magic"), r"unknown initializer 'magic'"),
    (lambda: L.MaxPool2D(0), r"pool_size must be a positive integer, received 0"),
    (lambda: L.MaxPool2D(2, padding=2), r"padding must be at most half the pool size"),
    (lambda: L.Subsample(0), r"stride must be a positive integer, received 0"),
    (lambda: L.Dense(-3), r"units must be a positive integer, received -3"),
    (lambda: L.Dropout(1.0), r"rate must be a number in \[0, 1\), received 1.0"),
    (lambda: L.BatchNorm(momentum=2), r"momentum must be in \[0, 1\], received 2"),
    (lambda: L.LeakyReLU(-1), r"alpha must be a finite number >= 0, received -1"),
    (lambda: L.ClippedReLU(0), r"max_value must be a finite number > 0, received 0"),
    (lambda: cnnlab.optim.SGD(lr=0), r"lr must be a positive number, received 0"),
    (lambda: cnnlab.optim.SGD(lr=0.1, momentum=1.5), r"momentum must be in \[0, 1\), received 1.5"),
    (lambda: cnnlab.optim.Adam(beta1=1.0), r"beta1 must be in \[0, 1\), received 1.0"),
    (lambda: cnnlab.optim.get_schedule("linear"), r"unknown schedule 'linear'"),
    (lambda: cnnlab.losses.get("mse"), r"unknown loss 'mse'"),
])
def test_constructor_arguments_are_validated(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_rank_and_channels():
    conv = L.Conv2D(4, 3)
    with pytest.raises(ValueError, match=r"expects images \(N, H, W, C\); received per-example shape \(28, 28\)"):
        conv.forward(np.zeros((2, 28, 28), np.float32))
    model = cnnlab.models.lenet5()
    with pytest.raises(ValueError, match=r"expected x of shape \(N, 28, 28, 1\), received \(4, 28, 28, 3\)"):
        model.predict(np.zeros((4, 28, 28, 3), np.float32))
    with pytest.raises(ValueError, match=r"expected x of shape \(N, 28, 28, 1\), received \(28, 28, 1\)"):
        model.predict(np.zeros((28, 28, 1), np.float32))
    with pytest.raises(ValueError, match=r"expected floating-point x .* received uint8"):
        model.predict(np.zeros((4, 28, 28, 1), np.uint8))


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"kernel spans 5 pixels along height but the padded input has only 4 "
                                         r"\(input 4 \+ padding 0\)"):
        L.Conv2D(2, 5).forward(np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match=r"kernel spans 7 pixels"):
        cnnlab.Sequential([L.Conv2D(2, 3, dilation=3)], input_shape=(6, 6, 1))


def test_labels_are_checked():
    model = cnnlab.models.lenet5()
    x = np.zeros((4, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match=r"labels y must lie in \[0, 9\] for a 10-class model, received values in \[0, 10\]"):
        model.fit(x, np.array([0, 1, 2, 10]), verbose=0)
    with pytest.raises(ValueError, match=r"expected integer labels y of shape \(4,\), received float64 \(4,\)"):
        model.fit(x, np.zeros(4), verbose=0)


def test_nan_in_a_parameter_update_is_refused_and_weights_are_kept():
    w = np.ones(3)
    g = np.array([0.1, np.nan, 0.2])
    with pytest.raises(ValueError, match=r"gradient of 'dense.kernel' contains NaN or infinity; no parameter was updated"):
        cnnlab.optim.SGD(lr=0.1).step([("dense.kernel", w, g)])
    np.testing.assert_array_equal(w, np.ones(3))


def test_training_stops_on_a_nan_loss_before_touching_weights():
    model = cnnlab.Sequential([L.Flatten(), L.Dense(3)], input_shape=(2, 2, 1))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = np.full((8, 2, 2, 1), np.nan, np.float32)
    with pytest.raises(cnnlab.TrainingDiverged, match=r"the loss became nan at epoch 1, step 1"):
        model.fit(x, np.zeros(8, np.int64), verbose=0)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
