"""Learning without forgetting: distil the previous model's answers on the new data."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.learner import Learner, call_model
from forgetless.scenarios.stream import Protocol, Task
from forgetless.strategies.base import Strategy
from forgetless.validation import check_range


class LwF(Strategy):
    """Learning without forgetting (Li and Hoiem 2016, "Learning without Forgetting", ECCV;
    TPAMI 2018).

    After each task a frozen copy of the model is kept (only the latest: one extra model in
    memory). While later tasks are trained, the new model is asked to give, on the current
    batch, the answers the old one gives over the output units of the previous tasks
    (Eq. 2-3 of the paper, knowledge distillation with temperature ``T``):

        L = L_task + alpha * T^2 * KL( softmax(z_old / T) || softmax(z_new / T) )

    with ``z`` the logits restricted to those units, the KL divergence averaged over the batch.
    Under task-incremental learning each previous task's head is distilled on its own units and
    the terms are averaged over previous tasks; under domain- and class-incremental learning
    the units are all those of the previous tasks at once. The paper writes the cross-entropy
    of the two softened distributions; the KL divergence differs from it by the old model's
    entropy, a constant, so the gradients are the same and the term is 0 when nothing changed.
    The ``T^2`` keeps the gradient scale independent of ``T`` (Hinton, Vinyals and Dean 2015).
    The paper's warm-up (training the new head alone first) is not done.

    Args:
        alpha: weight of the distillation term (>= 0), the paper's ``lambda_o``; 0 is exactly
            fine-tuning.
        temperature: the softening ``T`` (> 0); the paper uses 2.
    """

    name = "lwf"

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0):
        self.alpha = check_range("alpha", alpha, 0.0)
        self.temperature = check_range("temperature", temperature, 0.0, low_open=True)
        self._old: nn.Module | None = None

    def after_task(self, learner: Learner, task: Task) -> None:
        current = learner.model.state_dict()
        if self._old is None or self._old.state_dict().keys() != current.keys():
            # the first task, or a model that changed structure (adapters): a new copy
            self._old = copy.deepcopy(learner.model)
            self._old.requires_grad_(False)
        else:
            self._old.load_state_dict(current)
        self._old.eval()

    def penalty(self, learner, x, y, t, logits) -> torch.Tensor | None:
        if self._old is None or self.alpha == 0.0 or learner.task_index == 0:
            return None
        with torch.no_grad():
            old = call_model(self._old, x, t)
        # Under task-IL the logits passed in are masked to the current task's head; the old
        # heads' units are in the unmasked outputs.
        new = learner.outputs
        previous = learner.stream.tasks[: learner.task_index]
        if learner.stream.protocol is Protocol.TASK:
            groups = [task.units for task in previous]
        else:
            groups = [tuple(sorted({u for task in previous for u in task.units}))]
        term = sum(self._distillation(new, old, units) for units in groups) / len(groups)
        return self.alpha * self.temperature**2 * term

    def _distillation(
        self, new: torch.Tensor, old: torch.Tensor, units: tuple[int, ...]
    ) -> torch.Tensor:
        """``KL(softmax(old/T) || softmax(new/T))`` over ``units``, averaged over the batch
        (over every position of a sequence model's ``(batch, time, vocabulary)`` outputs)."""
        index = torch.tensor(units, device=new.device)
        # The units are the last dimension; a sequence's positions are examples of their own.
        old = old.index_select(-1, index).reshape(-1, len(units))
        new = new.index_select(-1, index).reshape(-1, len(units))
        log_p_old = F.log_softmax(old / self.temperature, dim=1)
        log_p_new = F.log_softmax(new / self.temperature, dim=1)
        return F.kl_div(log_p_new, log_p_old, reduction="batchmean", log_target=True)
