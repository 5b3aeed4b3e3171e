"""cnnlab.analysis.texts and the measurements behind them: where the wording must flip.

Untrained models are never called edge detectors; a model without pooling is told so; a global-average-
pooling model and LeNet-5 get different invariance sentences, from numbers measured on the models.
"""
import sys

import numpy as np
import pytest

from cnnlab import models
from cnnlab.analysis import equivariance as shifts, subject, texts as T, untrained
from cnnlab.layers import Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU
from cnnlab.model import Sequential


def test_an_untrained_model_is_never_called_an_edge_detector():
    net = models.tiny_cnn(seed=0)
    net.build((28, 28, 1))
    k = subject.first_conv(net).params["kernel"]
    measured = subject.oriented_filters(net, initial=k)
    assert measured["count"] == 0                                   # not more oriented than its own start
    for count in (0, measured["count"], 3, 8):                     # whatever chance gives, the words stay
        text = T.filters_sentence(count, 8, trained=False)
        assert "not an edge detector" in text and "made them edge" not in text


def test_filter_sentence_flips_with_the_count():
    assert T.filters_sentence(6, 8).startswith("6 of the 8 filters are oriented")
    assert "edge and bar detectors" in T.filters_sentence(8, 8)
    assert T.filters_sentence(2, 8).startswith("Only 2 of the 8 filters are oriented")
    assert "detectors" not in T.filters_sentence(2, 8)
    assert T.filters_sentence(1, 8).startswith("Only 1 of the 8 filters is oriented")
    assert T.filters_sentence(0, 8).startswith("None of the 8 filters")


def test_a_model_without_pooling_is_told_so():
    plain = Sequential([Conv2D(4, 3, padding="same"), ReLU(), Flatten(), Dense(3)], input_shape=(12, 12, 1))
    pooled = Sequential([Conv2D(4, 3, padding="same"), ReLU(), MaxPool2D(2), Flatten(), Dense(3)],
                        input_shape=(12, 12, 1))
    assert "no pooling" in T.pooling_sentence(len(shifts.pooling_layers(plain)))
    x = np.zeros((4, 12, 12, 1), np.float32)
    x[:, 4:8, 5] = 1.0                                              # a vertical stroke
    fn = shifts.layer_maps(pooled, shifts.first_feature_layer(pooled))
    change = shifts.pooling_shift_change(fn, x, pool=2, shifts=(0, 1, 2))
    text = T.pooling_sentence(len(shifts.pooling_layers(pooled)), change)
    assert "no pooling" not in text and f"{100 * change['max'][1]:.0f}%" in text


def test_pooling_sentence_names_what_absorbs():
    change = {"none": [0, 1.2], "subset": [0, 1.0], "average": [0, 0.5], "max": [0, 0.3]}
    assert "maximum absorbs most" in T.pooling_sentence(1, change)
    change["max"] = [0, 0.9]
    change["average"] = [0, 0.8]
    assert "No kind of sub-sampling absorbs" in T.pooling_sentence(1, change)


def _invariance(model, x, shifts_px):
    feats_name = model.layers[-2].name                              # what the classifier reads
    feats = shifts.layer_maps(model, feats_name)
    base_f, base_p = feats(x), model.logits(x).argmax(axis=1)
    change, agree = [], []
    for d in shifts_px:
        xs = shifts.shift(x, 0, d)
        f = feats(xs)
        change.append(float(np.linalg.norm(f - base_f) / np.linalg.norm(base_f)))
        agree.append(float(np.mean(model.logits(xs).argmax(axis=1) == base_p)))
    return change, agree


def test_global_average_pooling_against_lenet5_invariance():
    rng = np.random.default_rng(0)
    x = np.zeros((20, 28, 28, 1))
    x[:, 9:19, 9:19] = rng.uniform(0, 1, (20, 10, 10, 1))          # content away from the border
    gap = Sequential([Conv2D(8, 5, padding="same"), ReLU(), Conv2D(8, 3, padding="same"), ReLU(),
                      GlobalAvgPool2D(), Dense(10)], input_shape=(28, 28, 1), seed=1)
    lenet = models.lenet5(seed=1)
    lenet.build((28, 28, 1))
    gap.astype(np.float64)                    # untrained logits lie close: float32 round-off alone would flip some
    lenet.astype(np.float64)
    s = [0, 1, 2, 3]
    g_change, g_agree = _invariance(gap, x, s)
    l_change, l_agree = _invariance(lenet, x, s)
    assert max(g_change) < 1e-12                                    # equivariant maps, averaged: invariant
    assert l_change[-1] > T.STILL
    assert "nearly shift-invariant" in T.invariance_sentence("GAP", s, g_change, g_agree)
    assert "nearly shift-invariant" not in T.invariance_sentence("LeNet-5", s, l_change, l_agree)


def test_invariance_sentence_cases():
    s = [0, 2, 4]
    assert "absorb the shift" in T.invariance_sentence("m", s, [0, 0.4, 0.6], [1, 0.95, 0.92])
    lost = T.invariance_sentence("m", s, [0, 0.4, 0.6], [1, 0.95, 0.5])
    assert "not shift-invariant" in lost and "up to 2 pixels" in lost


def test_freezing_keeps_the_first_layer_at_its_start(tmp_path):
    recipe = subject.default_subject_recipe("shapes", seed=0)
    recipe.update(epochs=1, dataset_options={"n_train": 300, "n_test": 100})
    out = untrained.random_filters_experiment(recipe, tmp_path)
    assert 0 <= out["frozen"] <= 1 and 0 <= out["trained"] <= 1 and out["chance"] == pytest.approx(0.1)
    from cnnlab.model import load
    start = subject.initial_kernel(tmp_path / "trained")            # both runs start from the same seed
    np.testing.assert_array_equal(subject.initial_kernel(tmp_path / "frozen"), start)
    np.testing.assert_array_equal(subject.first_conv(load(tmp_path / "frozen")).params["kernel"], start)
    assert not np.array_equal(subject.first_conv(load(tmp_path / "trained")).params["kernel"], start)
    text = T.random_filters_sentence(out["trained"], out["frozen"], out["chance"])
    assert f"{100 * out['frozen']:.1f}%" in text


def test_the_analysis_package_loads_no_plotting_and_no_pages():
    import subprocess
    code = ("import sys; import cnnlab.analysis.filters, cnnlab.analysis.identities, cnnlab.analysis.equivariance, "
            "cnnlab.analysis.maximize, cnnlab.analysis.subject, cnnlab.analysis.untrained, cnnlab.analysis.texts; "
            "bad = [m for m in sys.modules if m.startswith(('matplotlib', 'cnnlab.explain', 'cnnlab.serve'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_random_filters_sentence_flips_with_the_gap():
    assert "already carry most" in T.random_filters_sentence(0.999, 0.986, 0.1)
    assert "adds nothing measurable here (-1.1 points)" in T.random_filters_sentence(0.948, 0.959, 0.1)
    text = T.random_filters_sentence(0.98, 0.60, 0.1)
    assert "already carry" not in text and "worth 38 points" in text
