"""Specialists: a copy of the model per task, each frozen after its task."""

from __future__ import annotations

from typing import Any

import torch

from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.models.specialists import SpecialistNet
from forgetless.scenarios.stream import Task
from forgetless.state import unpack
from forgetless.strategies.base import Strategy

STARTS = ("last", "initial")


class Specialists(Strategy):
    """Specialists, the "archive copy" of every task: one copy of the model per task, trained
    on that task alone and frozen after it; task ``t`` is answered by copy ``t``.

    The rule is the baseline of parameter isolation, the expert-per-task setting of Aljundi,
    Chakravarty and Tuytelaars 2017 ("Expert Gate: Lifelong Learning with a Network of
    Experts", CVPR) and of Rusu et al.'s independent columns (progressive networks without
    lateral connections): at task ``k`` every specialist is frozen and specialist ``k`` is
    added, a copy of specialist ``k - 1`` (``start="last"``: each fine-tuned from the last, so
    what it learnt transfers forward) or of the model's initial weights (``start="initial"``:
    each trained from the same start, independent of the others). Nothing trained later
    changes an earlier copy, so with the task given (task-IL) BWT is exactly 0.

    Without the task id (class- or domain-IL) a router picks the specialist for each input
    (``--router``, :mod:`forgetless.routing`): the lowest predictive entropy over a task's
    outputs, or the nearest class by Mahalanobis distance on each specialist's penultimate
    features.

    The price is memory that grows linearly with the tasks: ``Result.model_size`` records the
    parameters after each task (``k + 1`` copies after task ``k``), the report the parameters
    of each specialist; with ``start="initial"`` the initial weights are kept too (in the
    strategy's state, ``Result.strategy_state_bytes``).

    Args:
        start: ``"last"`` or ``"initial"``, where each new specialist starts.
    """

    name = "specialists"
    needs_task_id = True
    trained_start_refusal = (
        "specialists give each task a copy trained on it alone, and a trained start's model "
        "already mixes every learnt task in one; use ewc, lwf or replay to protect it"
    )

    def __init__(self, start: str = "last"):
        if start not in STARTS:
            raise ConfigError(
                f"specialists: start must be one of {', '.join(STARTS)}, got {start!r}"
            )
        self.start = start
        self.count = 0
        # The model's weights before the first task: where each specialist starts with
        # start="initial" (kept here, as plain tensors, so a resumed run starts from them too).
        self.initial: dict[str, torch.Tensor] | None = None

    def change_model(self, learner: Learner, task: Task) -> None:
        if isinstance(learner.model, SpecialistNet):
            learner.model.add(self.initial)
        else:
            if self.start == "initial":
                state = learner.model.state_dict()
                self.initial = {k: v.detach().clone() for k, v in state.items()}
            learner.model = SpecialistNet(learner.model)
        self.count = len(learner.model.experts)

    def rebuild(self, learner: Learner, state: Any) -> None:
        count = int(unpack(state)["count"])
        net = SpecialistNet(learner.model)
        for _ in range(1, count):
            net.add()  # structure only: the weights load next
        learner.model = net

    def params(self) -> dict[str, object]:
        return {"start": self.start}

    def report(self, learner: Learner) -> dict[str, Any] | None:
        if not isinstance(learner.model, SpecialistNet):
            return None
        return {
            "specialists": len(learner.model.experts),
            "start": self.start,
            "parameters_per_specialist": learner.model.expert_parameters(),
        }
