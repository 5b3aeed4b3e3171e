"""cnnlab: convolutional neural networks from first principles, on NumPy.

    import cnnlab
    model = cnnlab.models.lenet5()
    model.fit(x, y, epochs=1, batch_size=64, optimizer=cnnlab.optim.SGD(lr=0.05, momentum=0.9))
"""
from . import initializers, layers, losses, models, optim
from ._io import CnnlabFileError
from .model import Sequential, load
from .training import Callback, EarlyStopping, Trainer, TrainingDiverged

__version__ = "0.1.0"
__all__ = ["Sequential", "load", "layers", "losses", "models", "optim", "initializers", "Trainer", "Callback",
           "EarlyStopping", "TrainingDiverged", "CnnlabFileError"]
