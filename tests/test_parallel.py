"""Data parallelism: sharded steps compute the same gradients as one process."""
import os

import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L
from cnnlab.parallel import DataParallel, shard_slices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="worker processes need os.fork")


def small_cnn(seed=0, extra=()):
    return cnnlab.Sequential([L.Conv2D(4, 3, padding="same"), L.ReLU(), L.MaxPool2D(2), *extra, L.Flatten(),
                              L.Dense(10)], input_shape=(8, 8, 1), seed=seed)


def gradients(model):
    return {name: g.copy() for name, _, g in model.parameters()}


def assert_gradients_of_one_process(model, x, y, g_parallel):
    """The gradients ``model`` gets for (x, y) computed in this process alone equal ``g_parallel``."""
    with DataParallel(model, workers=1) as dp:
        dp.train_step(x, y)
    for k, g in gradients(model).items():
        np.testing.assert_allclose(g_parallel[k], g, rtol=1e-9, atol=1e-14)


def test_shard_slices_cover_the_batch():
    for n, k in [(64, 2), (65, 3), (5, 4)]:
        sl = shard_slices(n, k)
        assert sl[0].start == 0 and sl[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(sl, sl[1:]))
        assert max(s.stop - s.start for s in sl) - min(s.stop - s.start for s in sl) <= 1


@pytest.mark.parametrize("workers", [2, 3])
def test_sharded_step_equals_single_process(workers):
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 1)), rng.integers(0, 10, 64)
    model = small_cnn().astype(np.float64)
    with DataParallel(model, workers=1) as dp:
        loss1, scores1 = dp.train_step(x, y)
    g1 = gradients(model)
    with DataParallel(model, workers=workers) as dp:
        assert len(dp._procs) == workers - 1
        loss2, scores2 = dp.train_step(x, y)
        g2 = gradients(model)
        np.testing.assert_allclose(dp.forward(x), scores1, rtol=1e-12)   # inference through the workers
    np.testing.assert_allclose(loss2, loss1, rtol=1e-12)
    np.testing.assert_allclose(scores2, scores1, rtol=1e-12)
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k], rtol=1e-9, atol=1e-14)


def test_weights_reach_the_workers_every_step():
    rng = np.random.default_rng(1)
    x, y = rng.random((64, 8, 8, 1)), rng.integers(0, 10, 64)
    model = small_cnn().astype(np.float64)
    with DataParallel(model, workers=2) as dp:
        dp.train_step(x, y)
        for _, p, _ in model.parameters():
            p += 0.1                                   # change the weights between steps
        dp.train_step(x, y)
        g_parallel = gradients(model)
    assert_gradients_of_one_process(model, x, y, g_parallel)


def test_rebound_weights_reach_the_workers_and_weights_leave_the_shared_block():
    rng = np.random.default_rng(2)
    x, y = rng.random((64, 8, 8, 1)), rng.integers(0, 10, 64)
    model = small_cnn().astype(np.float64)
    conv = model.layers[0]
    with DataParallel(model, workers=2) as dp:
        shared = conv.params["kernel"]
        conv.params["kernel"] = shared * 0.5 + 0.05            # a new array, not an in-place update
        dp.train_step(x, y)
        g_parallel = gradients(model)
        assert conv.params["kernel"] is shared                  # the new values were moved into the shared block
    assert conv.params["kernel"] is not shared                  # and back into private memory afterwards
    np.testing.assert_array_equal(conv.params["kernel"], shared)
    assert_gradients_of_one_process(model, x, y, g_parallel)


def test_batchnorm_shards_use_their_own_statistics():
    rng = np.random.default_rng(2)
    x, y = rng.random((64, 8, 8, 1)) * 3, rng.integers(0, 10, 64)
    model = small_cnn(extra=[L.BatchNorm()]).astype(np.float64)
    bn = model["batch_norm"]
    with DataParallel(model, workers=2) as dp:
        dp.train_step(x, y)
    # The running mean moved by momentum * the average of the two halves' means (ghost batch norm).
    halves = [x[:32], x[32:]]
    feats = [model.layers[2].forward(model.layers[1].forward(model.layers[0].forward(h))) for h in halves]
    expected = 0.1 * np.mean([f.mean(axis=(0, 1, 2)) for f in feats], axis=0)
    np.testing.assert_allclose(bn.buffers["running_mean"], expected, rtol=1e-9)


def test_parallel_training_is_deterministic_with_dropout():
    rng = np.random.default_rng(3)
    x, y = rng.random((128, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 128)
    runs = []
    for _ in range(2):
        model = small_cnn(seed=5, extra=[L.Dropout(0.3)])
        model.fit(x, y, epochs=2, batch_size=64, verbose=0, workers=2)
        runs.append(model.state_dict())
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])


class FailsInWorker(L.ReLU):
    def forward(self, x, training=False):
        if os.getpid() != self.parent_pid:
            raise ValueError("boom")
        return super().forward(x, training)


def test_a_failing_worker_raises_in_the_main_process(capfd):
    layer = FailsInWorker()
    layer.parent_pid = os.getpid()
    model = cnnlab.Sequential([L.Flatten(), L.Dense(10), layer], input_shape=(8, 8, 1))
    x, y = np.zeros((64, 8, 8, 1), np.float32), np.zeros(64, np.int64)
    with pytest.raises(RuntimeError, match="worker process"):
        with DataParallel(model, workers=2) as dp:
            dp.train_step(x, y)
    assert "boom" in capfd.readouterr().err


def test_augmentation_runs_in_every_shard():
    rng = np.random.default_rng(4)
    x, y = rng.random((64, 8, 8, 1)), rng.integers(0, 10, 64)
    model = small_cnn().astype(np.float64)
    flip = lambda batch, r: batch[:, ::-1]             # noqa: E731 - deterministic, so the result is checkable
    with DataParallel(model, workers=2, augment=flip) as dp:
        dp.train_step(x, y)
    g_aug = gradients(model)
    with DataParallel(model, workers=2) as dp:
        dp.train_step(x[:, ::-1], y)
    for k, g in gradients(model).items():
        np.testing.assert_allclose(g_aug[k], g, rtol=1e-9, atol=1e-14)
