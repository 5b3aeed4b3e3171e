r"""Optimizers and learning-rate schedules.

An optimizer updates parameters in place from their gradients. It receives
``(name, param, grad)`` triples (``model.parameters()``) and keeps its state
(momentum, Adam moments) per parameter name, so it can be saved and resumed.

* ``SGD``: ``v = mu * v + (g + wd * w)``; ``w -= lr * v`` (or ``lr * (g + mu * v)`` with Nesterov),
  the PyTorch formulation.
* ``Adam`` (Kingma & Ba 2015): bias-corrected first and second moments; ``weight_decay`` adds
  ``wd * w`` to the gradient (L2).
* ``AdamW`` (Loshchilov & Hutter 2019): Adam with decoupled decay ``w -= lr * wd * w``.

A schedule maps training progress (fractional epoch, total epochs) to a
multiplier of the base learning rate: ``StepLR``, ``CosineLR``, ``OneCycleLR``.
"""
from __future__ import annotations

import math

import numpy as np


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------
class Schedule:
    """Learning-rate multiplier as a function of ``epoch`` (fractional) and ``total_epochs``."""

    def __call__(self, epoch: float, total_epochs: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}


class ConstantLR(Schedule):
    def __call__(self, epoch, total_epochs):
        return 1.0


class StepLR(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, step_size=1, gamma=0.1):
        if not step_size > 0 or not gamma > 0:
            raise ValueError(f"StepLR: step_size and gamma must be > 0, received {step_size!r}, {gamma!r}")
        self.step_size, self.gamma = step_size, float(gamma)

    def __call__(self, epoch, total_epochs):
        return self.gamma ** math.floor(epoch / self.step_size)

    def get_config(self):
        return {"step_size": self.step_size, "gamma": self.gamma}


class CosineLR(Schedule):
    """Linear warm-up for ``warmup`` epochs, then half a cosine down to ``min_ratio`` of the rate."""

    def __init__(self, warmup=0.0, min_ratio=0.0):
        if warmup < 0 or not 0 <= min_ratio <= 1:
            raise ValueError(f"CosineLR: need warmup >= 0 and 0 <= min_ratio <= 1, received {warmup!r}, {min_ratio!r}")
        self.warmup, self.min_ratio = float(warmup), float(min_ratio)

    def __call__(self, epoch, total_epochs):
        if epoch < self.warmup:
            return (epoch + 1e-8) / self.warmup
        t = min(1.0, (epoch - self.warmup) / max(total_epochs - self.warmup, 1e-8))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    def get_config(self):
        return {"warmup": self.warmup, "min_ratio": self.min_ratio}


class OneCycleLR(Schedule):
    """Smith's one-cycle: rise from ``lr/div`` to ``lr`` over ``pct_start`` of training, then
    anneal (cosine) to ``lr/final_div``."""

    def __init__(self, pct_start=0.3, div=25.0, final_div=1e4):
        if not 0 < pct_start < 1 or div < 1 or final_div < 1:
            raise ValueError(f"OneCycleLR: need 0 < pct_start < 1, div >= 1, final_div >= 1, "
                             f"received {pct_start!r}, {div!r}, {final_div!r}")
        self.pct_start, self.div, self.final_div = float(pct_start), float(div), float(final_div)

    def __call__(self, epoch, total_epochs):
        t = min(1.0, epoch / total_epochs)
        cos = lambda a, b, u: b + (a - b) * 0.5 * (1 + math.cos(math.pi * u))  # noqa: E731 - a to b as u: 0 -> 1
        if t < self.pct_start:
            return cos(1 / self.div, 1.0, t / self.pct_start)
        return cos(1.0, 1 / self.final_div, (t - self.pct_start) / (1 - self.pct_start))

    def get_config(self):
        return {"pct_start": self.pct_start, "div": self.div, "final_div": self.final_div}


SCHEDULES = {"constant": ConstantLR, "step": StepLR, "cosine": CosineLR, "onecycle": OneCycleLR}


def get_schedule(schedule) -> Schedule:
    if schedule is None:
        return ConstantLR()
    if isinstance(schedule, Schedule):
        return schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[schedule]()


# ---------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------
class Optimizer:
    def __init__(self, lr, weight_decay=0.0, schedule=None):
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"{type(self).__name__}: lr must be a positive number, received {lr!r}")
        if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, received {weight_decay!r}")
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.schedule = get_schedule(schedule)
        self.current_lr = self.lr
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.steps = 0

    def set_progress(self, epoch: float, total_epochs: int) -> float:
        """Set the learning rate for the given point of training; return it."""
        self.current_lr = self.lr * self.schedule(epoch, total_epochs)
        return self.current_lr

    def step(self, parameters) -> None:
        """Update every ``(name, param, grad)`` in place. A non-finite gradient raises
        ``ValueError`` before any parameter is touched."""
        parameters = list(parameters)
        for name, _, g in parameters:
            # One sum per gradient is finite exactly when no entry is NaN or infinite (or the sum
            # overflows); only then is each entry checked.
            if not math.isfinite(float(g.sum())) and not np.isfinite(g).all():
                raise ValueError(f"{type(self).__name__}: the gradient of {name!r} contains NaN or infinity; "
                                 f"no parameter was updated (try a smaller learning rate)")
        self.steps += 1
        for name, p, g in parameters:
            self.update(name, p, g, self.state.setdefault(name, {}))

    def update(self, name, p, g, state) -> None:
        raise NotImplementedError

    # ---- saving and resuming -------------------------------------------
    def get_config(self) -> dict:
        return {"class": type(self).__name__, "lr": self.lr, "weight_decay": self.weight_decay,
                "schedule": {"class": type(self.schedule).__name__, "config": self.schedule.get_config()}}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat dict of arrays (``"name/slot"``), plus the step count, for safetensors."""
        flat = {f"{name}/{slot}": arr for name, slots in self.state.items() for slot, arr in slots.items()}
        flat["__steps__"] = np.array([self.steps], np.int64)
        return flat

    def load_state_dict(self, flat: dict[str, np.ndarray]) -> None:
        self.state = {}
        for key, arr in flat.items():
            if key == "__steps__":
                self.steps = int(arr[0])
                continue
            name, _, slot = key.rpartition("/")
            self.state.setdefault(name, {})[slot] = np.array(arr)


class SGD(Optimizer):
    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, schedule=None):
        super().__init__(lr, weight_decay, schedule)
        if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise ValueError(f"SGD: momentum must be in [0, 1), received {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs a momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def update(self, name, p, g, state):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            if "velocity" not in state:
                state["velocity"] = g.copy()                # PyTorch: the first step takes the gradient
            else:
                v = state["velocity"]
                v *= self.momentum
                v += g
            v = state["velocity"]
            g = g + self.momentum * v if self.nesterov else v
        p -= p.dtype.type(self.current_lr) * g

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    decoupled = False

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, schedule=None):
        super().__init__(lr, weight_decay, schedule)
        for n, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= b < 1:
                raise ValueError(f"{type(self).__name__}: {n} must be in [0, 1), received {b!r}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def update(self, name, p, g, state):
        if self.weight_decay and not self.decoupled:
            g = g + self.weight_decay * p
        if self.weight_decay and self.decoupled:
            p *= p.dtype.type(1 - self.current_lr * self.weight_decay)
        m = state.setdefault("m", np.zeros_like(p))
        v = state.setdefault("v", np.zeros_like(p))
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * g * g
        t = self.steps
        step = self.current_lr / (1 - self.beta1 ** t)
        p -= (p.dtype.type(step) * m / (np.sqrt(v / (1 - self.beta2 ** t)) + self.eps)).astype(p.dtype)

    def get_config(self):
        return {**super().get_config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


class AdamW(Adam):
    decoupled = True

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, schedule=None):
        super().__init__(lr, beta1, beta2, eps, weight_decay, schedule)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
