"""Synaptic intelligence: importance from each weight's share of the drop in loss."""

from __future__ import annotations

import warnings

import torch

from forgetless.learner import Learner, trainable_parameters
from forgetless.scenarios.stream import Task
from forgetless.strategies.quadratic import QuadraticPenalty
from forgetless.validation import check_range


class SI(QuadraticPenalty):
    """Synaptic intelligence (Zenke, Poole and Ganguli 2017, "Continual learning through
    synaptic intelligence", ICML).

    While task ``mu`` is trained, every optimiser step ``s`` adds to the path integral of each
    weight its contribution to the change in loss (Eq. 3, as a sum over steps):

        omega_i += -g_i(s) * (theta_i(s + 1) - theta_i(s))

    where ``g`` is the gradient the step used (that of the total loss, penalty included, as it
    stood at ``optimizer.step()``; Zenke's code uses the task loss alone, which costs a second
    backward pass). With plain SGD this is ``lr * g_i^2``. At the end of the task (Eq. 5):

        Omega_i += omega_i / (Delta_i^2 + xi),   Delta_i = theta_i(end of mu) - theta_i(start of mu)

    then ``omega`` restarts at zero. Later tasks are trained with (Eq. 4)

        L = L_task + c * sum_i Omega_i * (theta_i - theta*_i)^2

    ``theta*`` being the weights at the end of the latest task. On the base class's
    ``lambda/2 * sum Omega (theta - theta*)^2`` this is ``lambda = 2 c``, with one importance
    and one anchor: memory is five copies of the parameters (with ``omega``, the weights at the
    start of the task and before the step), whatever the number of tasks.

    From a trained start (``train(trained_tasks=k)``) the learnt tasks get no importance (a
    warning says so): they were trained before the run, so no path integral exists for them.

    With plain SGD, a step is stable only while ``2 c Omega_i lr < 2`` for every weight; a
    strong ``c`` with a large learning rate makes the penalty itself diverge (Adam does not).

    Args:
        c: the strength ``c`` (>= 0); 0 is exactly fine-tuning. The default, 1, is the value
            the paper used for split MNIST; with Adam it holds on task-IL split digits.
        xi: the damping ``xi`` (> 0), keeping ``Omega`` finite for weights that barely moved.
    """

    name = "si"

    def __init__(self, c: float = 1.0, xi: float = 0.1):
        self.c = check_range("c", c, 0.0)
        self.xi = check_range("xi", xi, 0.0, low_open=True)
        super().__init__(lam=2.0 * self.c, online=True, gamma=1.0)
        self._names: list[str] = []
        self._params: list[torch.Tensor] = []
        self._start: list[torch.Tensor] = []
        self._before: list[torch.Tensor] = []
        self._omega: list[torch.Tensor] = []

    def after_task(self, learner: Learner, task: Task) -> None:
        if getattr(learner, "task_learnt_before", False):
            # The path integral is gathered over a task's training steps, and a trained start
            # takes none on its learnt tasks: there is nothing to measure importance from.
            warnings.warn(
                f"si: task {task.name!r} was learnt before this run, and SI's importance is the "
                "path integral of its training, which did not happen here: SI gives it no "
                "protection (ewc or mas measure importance from the task's data)",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        super().after_task(learner, task)

    def before_task(self, learner: Learner, task: Task) -> None:
        super().before_task(learner, task)
        named = trainable_parameters(learner.model)
        self._names = list(named)
        self._params = list(named.values())
        self._start = [p.detach().clone() for p in self._params]
        self._before = [torch.empty_like(p) for p in self._params]
        self._omega = [torch.zeros_like(p) for p in self._params]

    def after_backward(self, learner: Learner) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._before, self._params)

    def after_step(self, learner, x, y, t, logits) -> None:
        # The gradient is read here, not in after_backward: later strategies' after_backward
        # hooks (A-GEM's projection) may still change it before the step uses it.
        pairs = [(i, p.grad) for i, p in enumerate(self._params) if p.grad is not None]
        if not pairs:
            return
        index, grads = zip(*pairs, strict=True)
        before = [self._before[i] for i in index]
        with torch.no_grad():
            # before <- theta(s) - theta(s + 1) = -delta, then omega += g * (-delta): no allocation.
            torch._foreach_sub_(before, [self._params[i] for i in index])
            torch._foreach_addcmul_([self._omega[i] for i in index], list(grads), before)

    def importance(self, learner: Learner, task: Task) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            omega = {
                name: w / ((p.detach() - s).pow(2) + self.xi)
                for name, w, p, s in zip(
                    self._names, self._omega, self._params, self._start, strict=True
                )
            }
        # Per-task bookkeeping ends with the task: only the merged importance is kept.
        self._names, self._params, self._start, self._omega, self._before = [], [], [], [], []
        return omega

    @property
    def path_integral(self) -> list[torch.Tensor]:
        """The running ``omega`` of the task being trained, one tensor per trainable parameter."""
        return self._omega
