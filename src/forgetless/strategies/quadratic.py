"""The shared shape of importance-weighted anchoring: EWC, online EWC, SI, MAS and L2.

Each of these methods adds, after some tasks are learnt, the penalty

    lambda / 2 * sum_i Omega_i * (theta_i - theta*_i)^2

where ``theta*`` are the weights at the end of a task (the anchor) and ``Omega`` the per-weight
importance; they differ only in how ``Omega`` is estimated and how it accumulates over tasks.
A subclass implements :meth:`QuadraticPenalty.importance`; the bookkeeping lives here.

Per-task terms add up to one quadratic. For importances ``Omega_t`` and anchors ``theta*_t``,

    sum_t Omega_t (theta - theta*_t)^2 = Omega (theta - m)^2 + C,
    Omega = sum_t Omega_t,  m = sum_t Omega_t theta*_t / Omega,  C = sum_t Omega_t (theta*_t - m)^2

(per weight; ``m`` is the anchors' importance-weighted mean, ``C`` a constant). Only this merged
form is kept, updated once per task by folding the new term into it (the same identity with two
terms), so both the memory (two copies of the weights) and the cost of a step are the same
whatever the number of tasks. The penalty's gradient ``lambda * Omega * (theta - m)`` is
computed directly in four passes over the weights instead of through an autograd graph of
per-parameter operations.
"""

from __future__ import annotations

import inspect
import warnings

import torch
from torch.autograd.function import once_differentiable

from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.scenarios.stream import Task
from forgetless.state import restorable
from forgetless.strategies.base import Strategy
from forgetless.validation import check_range


class QuadraticPenalty(Strategy):
    """Base for methods whose penalty is ``lambda/2 * sum Omega (theta - theta*)^2``.

    Args:
        lam: the strength ``lambda`` (>= 0). ``lam = 0`` is exactly fine-tuning.
        online: keep one running importance ``Omega <- gamma * Omega + Omega_t`` anchored at the
            latest weights (Schwarz et al. 2018). If False, the penalty is the sum of one term
            per task, each anchored at its own task's weights (Kirkpatrick et al. 2017), held in
            merged form. Either way the state is two copies of the weights.
        gamma: decay of the running importance, in (0, 1]; only with ``online``.
    """

    name = "quadratic"

    def __init__(self, lam: float = 1.0, online: bool = True, gamma: float = 1.0):
        self.lam = check_range("lam", lam, 0.0)
        self.online = bool(online)
        self.gamma = check_range("gamma", gamma, 0.0, 1.0, low_open=True)
        self._merged: _Merged | None = None

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
        merged = self._merged
        if merged is None:
            self._merged = _Merged(omega, anchor, const=0.0)
        elif self.online:
            running = [self.gamma * old + new for old, new in zip(merged.omega, omega, strict=True)]
            self._merged = _Merged(running, anchor, const=0.0)
        else:
            self._merged = merged.plus(omega, anchor)
        _warn_if_sgd_diverges(self, learner)

    @property
    def importance_sum(self) -> list[torch.Tensor] | None:
        """``Omega``: the summed (or running) importance, per trainable parameter; ``None``
        before the first task ends."""
        return None if self._merged is None else self._merged.omega

    @property
    def center(self) -> list[torch.Tensor] | None:
        """``m``: where the penalty pulls the weights (the last anchor when online)."""
        return None if self._merged is None else self._merged.center

    def penalty(self, learner, x, y, t, logits) -> torch.Tensor | None:
        if self._merged is None or self.lam == 0.0:
            return None
        merged = self._merged
        params = _trainable(learner)
        if len(params) != len(merged.omega):
            raise ConfigError(
                f"{self.name}: the model has {len(params)} trainable parameters, the penalty "
                f"was built for {len(merged.omega)}"
            )
        return _HalfWeightedSquares.apply(self.lam, merged, *params)

    def params(self) -> dict[str, object]:
        """The constructor arguments (``online`` and ``gamma`` only where the class takes them)."""
        accepted = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in accepted if k in vars(self)}


@restorable("MergedQuadratic")
class _Merged:
    """The per-task terms as one quadratic: ``sum_t Omega_t (theta - theta*_t)^2 =
    Omega (theta - m)^2 + C`` (see the module docstring)."""

    def __init__(self, omega: list[torch.Tensor], center: list[torch.Tensor], const: float):
        self.omega, self.center, self.const = omega, center, const
        self._scratch: list[torch.Tensor] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the importance and the centre (the scratch space of a step is not state)."""
        return sum(t.numel() * t.element_size() for t in (*self.omega, *self.center))

    def plus(self, omega: list[torch.Tensor], anchor: list[torch.Tensor]) -> _Merged:
        """This quadratic plus ``omega (theta - anchor)^2``, merged (the identity above, with this
        one as the first term and the constant carried)."""
        merged_omega, merged_center, const = [], [], self.const
        for old_w, old_m, new_w, new_a in zip(self.omega, self.center, omega, anchor, strict=True):
            # float64: C subtracts nearly equal sums, and m must be a weighted mean to the bit.
            w0, m0, w1, a1 = (v.double() for v in (old_w, old_m, new_w, new_a))
            total = w0 + w1
            # Where no task gives the weight importance, m is irrelevant: take the new anchor.
            m = torch.where(total > 0, (w0 * m0 + w1 * a1) / total.clamp_min(1e-300), a1)
            const += float((w0 * (m0 - m).pow(2) + w1 * (a1 - m).pow(2)).sum())
            merged_omega.append(total.to(old_w.dtype))
            merged_center.append(m.to(old_m.dtype))
        return _Merged(merged_omega, merged_center, const)

    def scratch(self) -> list[torch.Tensor]:
        """A buffer the size of the weights, reused at every step (fresh tensors of a few MB
        cost page faults on CPUs at every step)."""
        if self._scratch is None:
            self._scratch = [torch.empty_like(c) for c in self.center]
        return self._scratch


class _HalfWeightedSquares(torch.autograd.Function):
    """``lam/2 * (sum_i Omega_i (theta_i - m_i)^2 + C)``, whose gradient
    ``lam * Omega * (theta - m)`` is computed in the forward pass and handed to autograd as is.

    Per step: four passes over the weights (difference, weighted difference, dot product, and
    autograd adding the gradient to the task loss's), no autograd graph of per-parameter ops.
    """

    @staticmethod
    def forward(ctx, lam: float, merged: _Merged, *params: torch.Tensor) -> torch.Tensor:
        diff = merged.scratch()
        for d, p, m in zip(diff, params, merged.center, strict=True):
            torch.sub(p, m, out=d)
        zero = params[0].new_zeros(())
        grads = [
            torch.addcmul(zero, d, o, value=lam) for d, o in zip(diff, merged.omega, strict=True)
        ]
        dots = [torch.dot(g.reshape(-1), d.reshape(-1)) for g, d in zip(grads, diff, strict=True)]
        ctx.grads = grads
        return 0.5 * (torch.stack(dots).sum() + lam * merged.const)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        grads = ctx.__dict__.pop("grads", None)  # no owner left: autograd may add in place
        if grads is None:
            raise RuntimeError(
                "the quadratic penalty takes one backward pass per forward pass; "
                "call the strategy's penalty again instead of retaining the graph"
            )
        # The engine's loss is a plain sum, so grad is 1: skip a pass. Off the CPU the check
        # would cost a device sync, so multiply.
        if grad.device.type != "cpu" or grad.item() != 1.0:
            torch._foreach_mul_(grads, grad)
        return None, None, *grads


def _warn_if_sgd_diverges(strategy: QuadraticPenalty, learner: Learner) -> None:
    """Warn where plain SGD cannot follow the penalty: on ``lam/2 * Omega_i * (theta_i - m_i)^2``
    (heavy-ball) SGD converges only while ``lr * lam * Omega_i < 2 * (1 + momentum)``; beyond
    that the weight oscillates with growing amplitude."""
    optimizer = getattr(learner, "optimizer", None)
    if type(optimizer) is not torch.optim.SGD or strategy.lam == 0.0:
        return
    curvature = strategy.lam * max(
        (float(o.max()) for o in strategy._merged.omega if o.numel()), default=0.0
    )
    for group in optimizer.param_groups:
        limit = 2.0 * (1.0 + group["momentum"]) / group["lr"]
        if curvature >= limit:
            warnings.warn(
                f"{strategy.name}: lam * max(importance) = {curvature:.3g} is above "
                f"2 * (1 + momentum) / lr = {limit:.3g}, where SGD diverges on the penalty; "
                f"lower lam or lr, or use Adam",
                RuntimeWarning,
                stacklevel=3,
            )
            return


def _trainable(learner: Learner) -> list[torch.Tensor]:
    return [p for p in learner.model.parameters() if p.requires_grad]
