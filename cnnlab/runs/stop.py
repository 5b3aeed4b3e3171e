"""Stopping training at a batch boundary on a signal: ``with StopSignals() as stop: trainer.fit(...)``.

SIGTERM (Slurm at a time limit or on preemption, ``docker stop``, systemd), SIGUSR1 (a warning signal
chosen with ``sbatch --signal=USR1@120``) and SIGINT (Ctrl-C) set ``stop.received`` instead of ending the
process; the training loop (``cnnlab.training.Trainer``) reads it after every batch, finishes that batch,
and raises :class:`cnnlab.training.TrainingStopped`, after which the caller writes a mid-epoch checkpoint.
Under MPI the ranks agree on the step through the per-step reduction (``cnnlab.distributed``), so a
signal to one rank or to every rank (``mpiexec`` forwards SIGTERM, SIGINT and SIGUSR1 to them) stops all
of them after the same batch.

A second Ctrl-C raises ``KeyboardInterrupt`` at once (the last saved checkpoint is kept). A handler
installed before (by Python code) is called after this one records the signal (chained); one installed
outside Python (``signal.getsignal`` returns ``None``, e.g. by an MPI library in C) is left in place, and
that signal then does not stop training. Only the main thread can install handlers; elsewhere nothing is
installed and ``received`` stays ``None``.
"""
from __future__ import annotations

import signal
import threading

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGINT") if hasattr(signal, name))
EXIT_STATUS = {getattr(signal, "SIGINT"): 130}            # Ctrl-C: 128 + SIGINT, as a shell reports it
EXIT_STOPPED = 143                                        # SIGTERM and SIGUSR1: 128 + SIGTERM, "requeue me"


def exit_status(signum) -> int:
    """The status of a process stopped by ``signum``: 130 after Ctrl-C, 143 after SIGTERM or SIGUSR1."""
    return EXIT_STATUS.get(signum, EXIT_STOPPED)


def signal_name(signum) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class StopSignals:
    """Records the first of SIGTERM, SIGUSR1 and SIGINT in ``received`` while installed (``with``)."""

    def __init__(self, signals=SIGNALS):
        self.signals = signals
        self.received = None
        self.previous: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.signals:
            old = signal.getsignal(sig)
            if old is None:                                # a handler installed outside Python: keep it
                continue
            self.previous[sig] = old
            signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        self.previous = {}
        return False

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt                         # Ctrl-C twice: stop now
        old = self.previous.get(signum)
        if callable(old) and old is not signal.default_int_handler:
            old(signum, frame)
