"""The shard statistics of the layer contract (layers/base.py): what a replica reports besides its gradients."""
import numpy as np

from cnnlab import layers as L
from cnnlab.parallel import _ShardResult


def test_batchnorm_reports_its_training_batch_mean_and_unbiased_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (5, 4, 3, 2)).astype(np.float64)
    bn = L.BatchNorm()
    bn.build(x.shape[1:], rng=rng, dtype=np.float64)
    assert bn.shard_statistics() is None                          # no training pass yet
    bn.forward(x, training=True)
    stats = bn.shard_statistics()
    assert set(stats) == set(bn.shard_statistics_shapes()) == {"mean", "var"}
    flat = x.reshape(-1, 2)
    np.testing.assert_allclose(stats["mean"], flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["var"], flat.var(axis=0, ddof=1), rtol=1e-12)
    assert all(stats[k].shape == s for k, s in bn.shard_statistics_shapes().items())


def test_merging_replicas_averages_their_shard_statistics_into_the_running_estimates():
    rng = np.random.default_rng(1)
    bn = L.BatchNorm(momentum=0.5)
    bn.build((3,), rng=rng, dtype=np.float64)
    shards = [{"mean": rng.normal(size=3), "var": rng.random(3) + 0.5} for _ in range(3)]
    replicas = [_ShardResult({k: np.zeros_like(g) for k, g in bn.grads.items()}, s) for s in shards]
    before_mean, before_var = bn.buffers["running_mean"].copy(), bn.buffers["running_var"].copy()
    bn.merge_replicas(replicas)
    mean = np.mean([s["mean"] for s in shards], axis=0)
    var = np.mean([s["var"] for s in shards], axis=0)
    np.testing.assert_allclose(bn.buffers["running_mean"], 0.5 * before_mean + 0.5 * mean)
    np.testing.assert_allclose(bn.buffers["running_var"], 0.5 * before_var + 0.5 * var)


def test_layers_without_batch_statistics_report_none():
    dense = L.Dense(2)
    dense.build((3,), rng=np.random.default_rng(0))
    dense.forward(np.ones((4, 3), np.float32), training=True)
    assert dense.shard_statistics() is None and dense.shard_statistics_shapes() == {}
