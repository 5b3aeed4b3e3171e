"""Run directories: everything one training run leaves on disk, and resuming it.

* :mod:`cnnlab.runs.config` -- training configurations: defaults, validation, the optimizer and loss
  they ask for;
* :mod:`cnnlab.runs.resolve` -- what names a model (a model object, a run directory, a ``.safetensors``
  file, an architecture ``.json`` or a zoo name), resolved one way for every command; ``build_model``;
* :mod:`cnnlab.runs.files` -- the run directory's files: every name, every reader and writer (the only
  module that knows the layout);
* :mod:`cnnlab.runs.recorder` -- the callback that writes checkpoint, best model, history and state
  after every epoch;
* :mod:`cnnlab.runs.evaluation` -- accuracy, per-class accuracy and the confusion matrix;
* :mod:`cnnlab.runs.stop` -- SIGTERM, SIGUSR1 and Ctrl-C stop training after a batch;
* :mod:`cnnlab.runs.lock` -- one writer per run directory;
* :mod:`cnnlab.runs.train` -- ``run_training`` and ``resume_training``;
* :mod:`cnnlab.runs.run` -- ``Run(path)``: a run directory read back, shown in a notebook as its curves and metrics.
"""
from ..datasets.split import split_seed_for, split_train_val
from .config import (DEFAULT_LR, DEFAULTS, REQUIRED_CONFIG_KEYS, make_config, make_loss, make_optimizer,
                     validate_config)
from .evaluation import confusion_matrix, evaluate_model
from .files import (ARCHITECTURE_FILE, CHECKPOINT_FILE, CONFIG_FILE, CONFUSION_PNG, EVALUATION_FILE, FILTERS_FILE,
                    HISTORY_COLUMNS, HISTORY_CSV, HISTORY_JSON, HISTORY_PNG, LAST_FILE, MODEL_FILE, STATE_FILE,
                    find_run_dir, history_table, read_architecture, read_checkpoint, read_config, read_evaluation,
                    read_filter_snapshots, read_history, read_state, write_checkpoint, write_evaluation,
                    write_history, new_run_dir, require_no_run)
from .lock import RunLock, RunLocked
from .recorder import RunRecorder, defer_interrupt, parse_interval
from .resolve import ResolvedModel, build_model, resolve_model
from .run import Run
from .train import TrainingInterrupted, load_data, resume_training, run_training

__all__ = ["Run", "run_training", "resume_training", "TrainingInterrupted", "make_config", "validate_config", "DEFAULTS",
           "DEFAULT_LR", "REQUIRED_CONFIG_KEYS", "build_model", "make_optimizer", "make_loss", "load_data",
           "split_seed_for", "split_train_val", "evaluate_model", "confusion_matrix", "RunRecorder",
           "defer_interrupt", "resolve_model", "ResolvedModel", "find_run_dir", "new_run_dir", "require_no_run",
           "read_config", "read_architecture", "read_state", "read_checkpoint",
           "parse_interval", "RunLock", "RunLocked",
           "read_history", "read_evaluation", "read_filter_snapshots", "write_checkpoint", "write_history",
           "write_evaluation", "history_table", "CONFIG_FILE", "ARCHITECTURE_FILE", "MODEL_FILE", "LAST_FILE",
           "CHECKPOINT_FILE", "STATE_FILE", "HISTORY_JSON", "HISTORY_CSV", "HISTORY_PNG", "FILTERS_FILE",
           "EVALUATION_FILE", "CONFUSION_PNG", "HISTORY_COLUMNS"]
