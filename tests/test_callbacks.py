"""The callbacks: the monitored-value base (modes, tiebreak, resumable state), early stopping, checkpoints,
filter snapshots, and the validation split that fit shares with cnnlab train."""
from types import SimpleNamespace

import numpy as np
import pytest

import cnnlab
from cnnlab.callbacks import EarlyStopping, FilterSnapshots, ModelCheckpoint, MonitorCallback, StopTraining
from cnnlab.datasets import load_shapes, split_seed_for, split_train_val


def feed(cb, values, key="val_loss", trainer=None, start=0):
    """Call ``on_epoch_end`` with ``{key: v}`` for each value as epochs start+1, start+2, ...; return the epoch
    at which the callback stopped training (None if it did not)."""
    trainer = trainer or SimpleNamespace(epoch=start)
    for v in values:
        trainer.epoch += 1
        logs = v if isinstance(v, dict) else {key: v}
        try:
            cb.on_epoch_end(trainer, trainer.epoch - 1, logs)
        except StopTraining:
            return trainer.epoch
    return None


@pytest.mark.parametrize("monitor, mode, values, best, epoch", [
    ("val_loss", "auto", [0.9, 0.5, 0.7, 0.6], 0.5, 2),            # auto: a loss is minimized
    ("val_accuracy", "auto", [0.5, 0.9, 0.7, 0.8], 0.9, 2),        # auto: an accuracy is maximized
    ("score", "max", [1.0, 3.0, 2.0, 3.0], 3.0, 2),               # an equal value is no improvement
    ("score", "min", [1.0, 3.0, 2.0, 0.5], 0.5, 4),
    ("val_loss", "min", [float("nan"), 0.8, float("nan")], 0.8, 2),  # NaN never improves
])
def test_monitor_modes(monitor, mode, values, best, epoch):
    cb = MonitorCallback(monitor, mode)
    for i, v in enumerate(values, 1):
        cb.update({monitor: v}, i)
    assert (cb.best, cb.best_epoch) == (best, epoch)


def test_monitor_tiebreak_and_errors():
    cb = MonitorCallback("val_accuracy", "max", tiebreak="val_loss")
    for i, (acc, loss) in enumerate([(0.5, 1.0), (0.7, 0.9), (0.7, 0.6), (0.7, 0.8)], 1):
        cb.update({"val_accuracy": acc, "val_loss": loss}, i)
    assert (cb.best, cb.best_tiebreak, cb.best_epoch) == (0.7, 0.6, 3)
    with pytest.raises(ValueError, match="'val_loss' is not recorded"):
        MonitorCallback().update({"loss": 1.0}, 1)
    with pytest.raises(ValueError, match="mode must be"):
        MonitorCallback(mode="largest")
    with pytest.raises(ValueError, match="watches monitor 'val_loss'"):
        MonitorCallback("val_accuracy").load_state_dict(MonitorCallback("val_loss").state_dict())


@pytest.mark.parametrize("mode, values, stop_at", [
    ("min", [1.0, 0.8, 0.9, 0.85, 0.95, 0.7], 5),       # best at 2, no improvement for 3 epochs
    ("max", [0.1, 0.3, 0.2, 0.4, 0.4, 0.3, 0.35], 7),    # best at 4 (equal at 5 does not count)
])
def test_early_stopping_patience(mode, values, stop_at):
    assert feed(EarlyStopping("m", patience=3, mode=mode, restore_best=False), values, "m") == stop_at


def test_early_stopping_resumes_from_its_state():
    values = [0.2, 0.5, 0.4, 0.45, 0.3, 0.6]
    whole = EarlyStopping("val_accuracy", patience=3, restore_best=False)
    assert feed(whole, values, "val_accuracy") == 5
    first = EarlyStopping("val_accuracy", patience=3, restore_best=False)
    assert feed(first, values[:3], "val_accuracy") is None
    state = first.state_dict()
    resumed = EarlyStopping("val_accuracy", patience=3, restore_best=False).load_state_dict(state)
    assert feed(resumed, values[3:], "val_accuracy", start=3) == 5
    fresh = EarlyStopping("val_accuracy", patience=3, restore_best=False)   # without the state: it stops later
    assert feed(fresh, values[3:], "val_accuracy", start=3) is None


def test_early_stopping_restores_the_best_weights():
    (x, y), (xt, yt) = load_shapes(n_train=64, n_test=32, seed=0)
    model = cnnlab.models.tiny_cnn(seed=0)
    stop = EarlyStopping("val_loss", patience=1)
    seen = {}

    class Record(cnnlab.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            seen[trainer.epoch] = model.state_dict()

    model.fit(x, y, epochs=3, batch_size=16, optimizer=cnnlab.optim.SGD(lr=5.0), verbose=0,
              validation_data=(xt, yt), callbacks=[Record(), stop])
    final = model.state_dict()
    for k in final:
        assert np.array_equal(final[k], seen[stop.best_epoch][k]), k


def test_model_checkpoint_saves_only_improvements(tmp_path):
    model = cnnlab.models.tiny_cnn(seed=0)
    path = tmp_path / "best.safetensors"
    cb = ModelCheckpoint(path, monitor="val_accuracy")
    trainer = SimpleNamespace(epoch=0, model=model)
    saved = []
    for acc in (0.3, 0.5, 0.4):
        model.layers[0].params["bias"][:] = acc              # a mark of the epoch in the weights
        feed(cb, [acc], "val_accuracy", trainer)
        saved.append(float(cnnlab.load(path).layers[0].params["bias"][0]))
    assert saved == pytest.approx([0.3, 0.5, 0.5]) and cb.best_epoch == 2
    every = ModelCheckpoint(tmp_path / "latest.safetensors", monitor="val_accuracy")
    feed(every, [{"loss": 1.0}], trainer=trainer)            # nothing to watch: the latest model is kept
    assert (tmp_path / "latest.safetensors").is_file() and every.best_epoch == trainer.epoch


def test_filter_snapshots():
    (x, y), _ = load_shapes(n_train=40, n_test=8, seed=0)
    model = cnnlab.models.tiny_cnn(seed=0)
    snaps = FilterSnapshots(every=2)
    before = model.layers[0].params["kernel"].copy()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[snaps])      # 3 steps per epoch
    assert sorted(snaps.snapshots) == [0, 2, 3, 4, 6] and snaps.epoch_ends == [3, 6]
    assert np.array_equal(snaps.snapshots[0], before)
    assert np.array_equal(snaps.snapshots[6], model.layers[0].params["kernel"])
    again = FilterSnapshots(every=2)
    again.restore(snaps.snapshots, snaps.epoch_ends, step=3)
    assert sorted(again.snapshots) == [0, 2, 3] and again.epoch_ends == [3]
    listed = FilterSnapshots(steps=[1, 5])
    cnnlab.models.tiny_cnn(seed=0).fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[listed])
    assert sorted(listed.snapshots) == [0, 1, 3, 5, 6]          # the listed steps and the epoch ends
    with pytest.raises(ValueError, match="positive integer"):
        FilterSnapshots(every=0)


def test_fit_validation_split_is_the_split_of_cnnlab_train():
    (x, y), _ = load_shapes(n_train=80, n_test=8, seed=1)
    model = cnnlab.models.tiny_cnn(seed=4)
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, validation_split=0.25)
    _, (xv, yv) = split_train_val(x, y, 0.25, split_seed_for(4))
    assert len(yv) == 20
    ev = model.evaluate(xv, yv)
    assert history["val_accuracy"][0] == ev["accuracy"]
    assert history["val_loss"][0] == pytest.approx(ev["loss"], rel=1e-6)
