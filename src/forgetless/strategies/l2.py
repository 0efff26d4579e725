"""L2 anchoring: every weight equally important, the simplest regulariser."""

from __future__ import annotations

import torch

from forgetless.learner import Learner
from forgetless.scenarios.stream import Task
from forgetless.strategies.quadratic import QuadraticPenalty, _trainable


class L2(QuadraticPenalty):
    """Penalty ``lambda/2 * ||theta - theta*||^2`` towards the weights after the last task.

    The baseline for importance-weighted methods: ``Omega_i = 1`` for every weight, so any gain
    of EWC, SI or MAS over it is the value of their importance estimates.

    Args:
        lam: the strength ``lambda`` (>= 0).
    """

    name = "l2"

    def __init__(self, lam: float = 1.0):
        super().__init__(lam=lam, online=True, gamma=1.0)

    def importance(self, learner: Learner, task: Task) -> list[torch.Tensor]:
        # Online with gamma = 1 adds each task's importance to the running one: ones after the
        # first task and zeros after that keep every weight at importance one.
        fill = torch.ones_like if self.importance_sum is None else torch.zeros_like
        return [fill(p) for p in _trainable(learner)]
