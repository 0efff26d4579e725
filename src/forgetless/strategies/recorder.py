"""An observer of training: the weights every ``k`` steps (the path of a run)."""

from __future__ import annotations

import torch

from forgetless.learner import Learner
from forgetless.scenarios.stream import Task
from forgetless.strategies.base import Strategy
from forgetless.validation import check_positive_int


class ParameterRecorder(Strategy):
    """Records the flattened trainable parameters every ``every`` optimiser steps.

    For analysis only (not in the strategy registry): add it after the strategies of a run,
    ``train(stream, model, [EWC(1e3), ParameterRecorder(10)])``, or give a run
    ``RunConfig.path_every``. It records the weights before the first step, every ``every``
    steps, and at the end of each task. An observer: it changes nothing in training, and its
    state (the path so far) is in every checkpoint, so a resumed run records the same path.

    Attributes:
        points: one flat float32 CPU tensor per record, parameters in ``named_parameters``
            order (trainable ones).
        steps: the optimiser step of each record (0: the initial weights).
        tasks: the task being trained at each record (0 for the initial weights).
        task_ends: for each task, the index in ``points`` of its last record.
        names, shapes: the parameters' names and shapes, to unflatten a point.
    """

    name = "parameter-recorder"

    def __init__(self, every: int = 10):
        self.every = check_positive_int("every", every)
        self.points: list[torch.Tensor] = []
        self.steps: list[int] = []
        self.tasks: list[int] = []
        self.task_ends: list[int] = []
        self.names: list[str] = []
        self.shapes: list[tuple[int, ...]] = []
        self._step = 0

    def _record(self, learner: Learner) -> None:
        params = [(n, p) for n, p in learner.model.named_parameters() if p.requires_grad]
        if not self.names:
            self.names = [n for n, _ in params]
            self.shapes = [tuple(p.shape) for _, p in params]
        flat = torch.cat([p.detach().reshape(-1) for _, p in params]).float().cpu()
        self.points.append(flat)
        self.steps.append(self._step)
        self.tasks.append(learner.task_index)

    def before_task(self, learner: Learner, task: Task) -> None:
        if not self.points:
            self._record(learner)

    def after_step(self, learner, x, y, t, logits) -> None:
        self._step += 1
        if self._step % self.every == 0:
            self._record(learner)

    def after_task(self, learner: Learner, task: Task) -> None:
        if self.steps[-1] != self._step:
            self._record(learner)
        self.task_ends.append(len(self.points) - 1)

    def state_bytes(self) -> int:
        return 0  # an observer: not part of the method's memory

    def params(self) -> dict[str, object]:
        return {"every": self.every}

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat point (or direction) as ``{name: tensor}``."""
        sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        parts = flat.split(sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}
