"""The shared shape of importance-weighted anchoring: EWC, online EWC, SI, MAS and L2.

Each of these methods adds, after some tasks are learnt, the penalty

    lambda / 2 * sum_i Omega_i * (theta_i - theta*_i)^2

where ``theta*`` are the weights at the end of a task (the anchor) and ``Omega`` the per-weight
importance; they differ only in how ``Omega`` is estimated and how it accumulates over tasks.
A subclass implements :meth:`QuadraticPenalty.importance`; the bookkeeping lives here.
"""

from __future__ import annotations

import torch

from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.scenarios.stream import Task
from forgetless.strategies.base import Strategy


def check_range(
    name: str,
    value: float,
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float if it lies in the interval, else a ConfigError naming ``name``."""
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high or value != value:  # value != value: NaN
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        upper = "inf" if high is None else f"{high:g}"
        raise ConfigError(
            f"{name} must be in {left}{low:g}, {upper}{right if high is not None else ')'}, got {value:g}"
        )
    return value


class QuadraticPenalty(Strategy):
    """Base for methods whose penalty is ``lambda/2 * sum Omega (theta - theta*)^2``.

    Args:
        lam: the strength ``lambda`` (>= 0). ``lam = 0`` is exactly fine-tuning.
        online: keep one running importance ``Omega <- gamma * Omega + Omega_t`` and one anchor
            (the latest weights), so memory is O(parameters) whatever the number of tasks
            (Schwarz et al. 2018). If False, one (importance, anchor) pair per task is kept and
            the penalties are summed (Kirkpatrick et al. 2017).
        gamma: decay of the running importance, in (0, 1]; only with ``online``.
    """

    name = "quadratic"

    def __init__(self, lam: float = 1.0, online: bool = True, gamma: float = 1.0):
        self.lam = check_range("lam", lam, 0.0)
        self.online = bool(online)
        self.gamma = check_range("gamma", gamma, 0.0, 1.0, low_open=True)
        self._terms: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []

    def importance(self, learner: Learner, task: Task) -> list[torch.Tensor]:
        """Per-parameter importance ``Omega_t`` for the task just learnt, one tensor per
        trainable parameter in ``model.parameters()`` order."""
        raise NotImplementedError

    def after_task(self, learner: Learner, task: Task) -> None:
        params = _trainable(learner)
        omega = [o.detach() for o in self.importance(learner, task)]
        if len(omega) != len(params) or any(
            o.shape != p.shape for o, p in zip(omega, params, strict=False)
        ):
            raise ConfigError(
                f"{self.name}: importance must match the model's trainable parameters"
            )
        anchor = [p.detach().clone() for p in params]
        if self.online and self._terms:
            previous, _ = self._terms[0]
            omega = [self.gamma * old + new for old, new in zip(previous, omega, strict=True)]
            self._terms = [(omega, anchor)]
        else:
            self._terms.append((omega, anchor))

    def penalty(self, learner, x, y, t, logits) -> torch.Tensor | None:
        if not self._terms or self.lam == 0.0:
            return None
        params = _trainable(learner)
        total = logits.new_zeros(())
        for omega, anchor in self._terms:
            for p, o, a in zip(params, omega, anchor, strict=True):
                total = total + (o * (p - a).pow(2)).sum()
        return 0.5 * self.lam * total

    def state_bytes(self) -> int:
        """Memory held by importances and anchors, in bytes."""
        return sum(
            t.numel() * t.element_size() for pair in self._terms for part in pair for t in part
        )


def _trainable(learner: Learner) -> list[torch.Tensor]:
    return [p for p in learner.model.parameters() if p.requires_grad]
