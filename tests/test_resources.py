"""Memory limits stated before allocating: parameters at build, activations at fit and predict."""
import math

import numpy as np
import pytest

from cnnlab import resources
from cnnlab.layers import BatchNorm, Conv2D, Dense, Flatten, LocallyConnected2D, MaxPool2D, ReLU
from cnnlab.model import Sequential
from cnnlab.resources import ResourceLimitError


def layers():
    return [Conv2D(4, 3, padding="same", groups=1), BatchNorm(), ReLU(), Conv2D(6, 3, groups=2, use_bias=False),
            LocallyConnected2D(3, 2, strides=2), MaxPool2D(2), Flatten(), Dense(5)]


def test_param_shapes_are_the_shapes_built():
    model = Sequential(layers(), input_shape=(10, 10, 2))
    shape = (10, 10, 2)
    for layer in model.layers:
        built = {k: v.shape for k, v in {**layer.params, **layer.buffers}.items()}
        assert layer.param_shapes(shape) == built, layer.name
        shape = layer.output_shape
    built = Sequential(layers(), input_shape=(10, 10, 2))
    count, nbytes = resources.parameter_bytes((l, l.input_shape) for l in built.layers)
    stored = sum(v.size for v in model.state_dict().values())
    assert count == stored and nbytes == 2 * 4 * stored


def test_a_model_too_large_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 10_000_000)
    allocated = []
    monkeypatch.setattr(Conv2D, "build_params", lambda self, shape: allocated.append(shape))
    with pytest.raises(ResourceLimitError) as e:
        Sequential([Conv2D(1_000_000, 5)], input_shape=(28, 28, 1))
    assert not allocated
    assert "26,000,000 parameters" in str(e.value) and "208.0 MB (208,000,000 bytes)" in str(e.value)
    assert "10.0 MB of memory available" in str(e.value)


def test_batches_too_large_are_refused_at_fit_and_predict(monkeypatch):
    model = Sequential([Conv2D(8, 3, padding="same"), ReLU(), Flatten(), Dense(3)], input_shape=(16, 16, 1))
    x, y = np.zeros((40, 16, 16, 1), np.float32), np.zeros(40, np.int64)
    per_example = 16 * 16 * 1 + 16 * 16 * 8 + 16 * 16 * 8 + 16 * 16 * 8 + 3
    assert resources.activation_bytes(model, 10, training=True) == 10 * 2 * per_example * 4
    assert resources.activation_bytes(model, 10, training=False) == 10 * (16 * 16 * 1 + 16 * 16 * 8) * 4
    limit = resources.activation_bytes(model, 10, training=True)
    monkeypatch.setattr(resources, "available_memory", lambda: limit)
    model.fit(x[:10], y[:10], batch_size=10, verbose=0)              # exactly fits
    with pytest.raises(ResourceLimitError, match="batches of 20 for training"):
        model.fit(x, y, batch_size=20, verbose=0)
    assert model.predict(x[:3], batch_size=10 ** 9).shape == (3, 3)  # the batch is only as large as the data
    monkeypatch.setattr(resources, "available_memory", lambda: 1000)
    with pytest.raises(ResourceLimitError, match="batches of 3 for inference"):
        model.predict(x[:3])


def test_available_memory_is_a_plausible_number():
    free = resources.available_memory()
    assert 1 << 20 < free < 1 << 50
    assert math.isfinite(free)
