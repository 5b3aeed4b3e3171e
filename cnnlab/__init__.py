"""cnnlab: convolutional neural networks from first principles, on NumPy.

    import cnnlab
    model = cnnlab.models.lenet5()
    model.fit(x, y, epochs=1, batch_size=64, optimizer=cnnlab.optim.SGD(lr=0.05, momentum=0.9))
"""
from . import augment, callbacks, datasets, initializers, layers, losses, models, onnx, optim, runs
from ._io import CnnlabFileError
from .graph import Input
from .model import Model, Sequential, load
from .runs import TrainingInterrupted, resume_training, run_training
from .callbacks import Callback, EarlyStopping
from .training import Trainer, TrainingDiverged

from ._version import __version__
__all__ = ["Model", "Input", "Sequential", "load", "layers", "losses", "models", "optim", "initializers", "augment", "datasets", "runs",
           "Trainer", "Callback", "EarlyStopping", "TrainingDiverged", "TrainingInterrupted", "run_training",
           "resume_training", "CnnlabFileError"]
