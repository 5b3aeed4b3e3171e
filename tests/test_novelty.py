"""The novelty measure (``cnnlab.analysis.novelty``): calibrated on a model's own held-out images, it flags
at most 5% of other held-out test images and at least 90% of foreign inputs, each prepared as the explorer
prepares a picture (``cnnlab.images.prepare_input``)."""
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

import cnnlab
from cnnlab.analysis.novelty import Novelty, summaries
from cnnlab.datasets import load_cifar10_files, load_mnist, load_shapes
from cnnlab.images import prepare_input

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def png(a) -> bytes:
    a = np.asarray(a)
    a = a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a
    buf = io.BytesIO()
    Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def photograph(seed, side=600) -> bytes:
    """A photograph-like picture: smooth colour regions and soft edges, large, as a phone's would be."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.uniform(0, 255, (24, 24, 3)).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
    return _encode(img.filter(ImageFilter.GaussianBlur(side / 80)))


def _encode(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def foreign_inputs(shape, dataset, others):
    """Foreign pictures, each prepared for a model taking ``shape`` trained on ``dataset``: {kind: (N, H, W, C)}."""
    rng = np.random.default_rng(11)
    prep = lambda data: prepare_input(data, shape, dataset=dataset)[0]           # noqa: E731
    sets = {"uniform noise": [png(rng.uniform(0, 1, (28, 28))) for _ in range(60)],
            "blank": [png(np.full((28, 28), v)) for v in np.linspace(0, 1, 11)],
            "photograph": [photograph(s) for s in range(30)],
            **{k: [png(a) for a in v] for k, v in others.items()}}
    cifar = SHARED / "cifar10-sample"
    if (cifar / "test_batch_first1000.bin").is_file():
        _, (cx, _) = load_cifar10_files([cifar / "data_batch_1_first4000.bin"], [cifar / "test_batch_first1000.bin"])
        sets["grayscale CIFAR-10"] = [png(a.mean(-1)) for a in cx[:100]]
    return {k: np.stack([prep(d) for d in v]) for k, v in sets.items()}


def check_rates(model, x_train, x_test, shape, dataset, others):
    """Calibrate on test images [0, 500), count flags on test images [500, ...) (also sent through the
    explorer's preparation, as PNG files) and on the foreign inputs."""
    novelty = Novelty.fit(model, x_train, x_test[:500])
    own = float(novelty.flags(x_test[500:]).mean())
    prepared = np.stack([prepare_input(png(a), shape, dataset=dataset)[0] for a in x_test[500:900]])
    own_prepared = float(novelty.flags(prepared).mean())
    foreign = {k: novelty.flags(v) for k, v in foreign_inputs(shape, dataset, others).items()}
    pooled = float(np.concatenate(list(foreign.values())).mean())
    rates = {k: round(float(v.mean()), 3) for k, v in foreign.items()}
    print(f"held-out flagged {own:.3f} (prepared {own_prepared:.3f}); foreign {pooled:.3f} {rates}")
    assert own <= 0.05 and own_prepared <= 0.05, (own, own_prepared)
    assert pooled >= 0.9, rates
    assert min(rates.values()) >= 0.75, rates                # and no kind of foreign input mostly missed
    return novelty


def test_summaries_are_the_stated_statistics():
    model = cnnlab.models.tiny_cnn(input_shape=(12, 10, 1), seed=0)
    x = np.random.default_rng(0).uniform(0, 1, (3, 12, 10, 1)).astype(np.float32)
    z = summaries(model, x)
    np.testing.assert_allclose(z["input"][:, 0], x.mean((1, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(z["input"][:, 2], (x > 0.5).mean((1, 2, 3)))
    np.testing.assert_allclose(z["input"][:, 4], np.abs(x[:, :, 1:] - x[:, :, :-1]).mean((1, 2, 3)), rtol=1e-6)
    h = x
    for layer in model.layers:
        h = layer.forward(h)
        if layer.name in z:
            c = h.shape[-1]
            np.testing.assert_allclose(z[layer.name][:, :c], h.mean((1, 2)), rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(z[layer.name][:, c:], h.std((1, 2)), rtol=1e-4, atol=1e-6)
    assert len(z) > 2


def test_a_shapes_model_flags_foreign_inputs_not_its_own():
    (x, y), (xt, _) = load_shapes(2000, 1300, seed=2)
    model = cnnlab.models.tiny_cnn(seed=0)
    model.fit(x, y, epochs=2, batch_size=64, optimizer=cnnlab.optim.SGD(lr=0.05, momentum=0.9), verbose=0)
    others = {}
    if (SHARED / "mnist").is_dir():
        _, (digits, _) = load_mnist(SHARED / "mnist", download=False)
        others["MNIST digits"] = digits[:100]
    check_rates(model, x, xt, (28, 28, 1), "shapes", others)


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="MNIST's files are not in ../shared/data/mnist")
def test_an_mnist_model_flags_foreign_inputs_not_its_own():
    (x, y), (xt, _) = load_mnist(SHARED / "mnist", download=False)
    model = cnnlab.models.lenet5(seed=0)
    model.fit(x[:3000], y[:3000], epochs=1, batch_size=64, optimizer=cnnlab.optim.SGD(lr=0.05, momentum=0.9),
              verbose=0)
    _, (shapes, _) = load_shapes(1, 100, seed=3)
    check_rates(model, x[:2000], xt[:1300], (28, 28, 1), "mnist", {"shapes pictures": shapes})
