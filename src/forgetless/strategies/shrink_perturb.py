"""Shrink and perturb: pull the weights towards zero and add a little noise."""

from __future__ import annotations

from typing import Any

import torch

from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.scenarios.stream import Task
from forgetless.state import pack
from forgetless.strategies.base import Strategy
from forgetless.strategies.quadratic import _trainable
from forgetless.validation import check_range

WHEN = ("task", "step")


class ShrinkPerturb(Strategy):
    """Shrink and perturb (Ash and Adams 2020, "On warm-starting neural network training",
    NeurIPS, Section 4), every trainable parameter at once::

        theta <- lambda * theta + p,   p ~ N(0, sigma^2 I)

    ``every="task"`` (Ash and Adams): applied once when new data arrives, i.e. before each task
    but the first, so that a warm-started network keeps the ability to generalise (and to learn)
    of a fresh one; they sweep ``lambda`` in (0, 1] and small ``sigma``.

    ``every="step"`` (Dohare et al. 2024, Nature, "shrink and perturb" baseline on permuted
    MNIST): applied after every optimiser step, where it is weight decay plus noise. Their
    setting, L2 strength 1e-4 with step size 0.003 and noise std 1e-4..1e-6, is
    ``lambda = 1 - 3e-7`` per step here (``1 - lr * weight_decay``).

    Noise comes from a generator of each task (seeded by the run's seed and the task index),
    separate from the batch order: a run with ``sigma = 0`` sees the batches fine-tuning sees,
    and a resumed run draws the same noise.

    Args:
        shrink: ``lambda`` in (0, 1]; 1 is no shrinking.
        noise: ``sigma`` >= 0, the standard deviation of the added noise; 0 is no noise.
        every: when to apply it: ``"task"`` or ``"step"``.
    """

    name = "shrink-perturb"

    def __init__(self, shrink: float = 0.5, noise: float = 0.01, every: str = "task"):
        self.shrink = check_range("shrink", shrink, 0.0, 1.0, low_open=True)
        self.noise = check_range("noise", noise, 0.0)
        if every not in WHEN:
            raise ConfigError(f"every must be one of {', '.join(WHEN)}, got {every!r}")
        self.every = every
        self._generator: torch.Generator | None = None
        self._params: list[torch.Tensor] = []

    def before_task(self, learner: Learner, task: Task) -> None:
        self._generator = learner.task_generator("shrink-perturb")
        self._params = _trainable(learner)
        if self.every == "task" and learner.task_index > 0:
            self._apply()

    def after_step(self, learner, x, y, t, logits) -> None:
        if self.every == "step":
            self._apply()

    @torch.no_grad()
    def _apply(self) -> None:
        if self.shrink != 1.0:
            torch._foreach_mul_(self._params, self.shrink)
        if self.noise > 0:
            for p in self._params:
                noise = torch.randn(p.shape, generator=self._generator, dtype=p.dtype)
                p.add_(noise.to(p.device), alpha=self.noise)

    def state_bytes(self) -> int:
        return 0  # the references to the model's own parameters hold nothing of the method's

    def state_dict(self) -> Any:
        # The generator is rebuilt at each task from the seed and the task index: no state.
        return pack({}, self.name)

    def load_state_dict(self, state: Any, learner: Learner) -> None:
        self._generator, self._params = None, []
