"""The shared shape of importance-weighted anchoring: EWC, online EWC, SI, MAS and L2.

Each of these methods adds, after some tasks are learnt, the penalty

    lambda / 2 * sum_i Omega_i * (theta_i - theta*_i)^2

where ``theta*`` are the weights at the end of a task (the anchor) and ``Omega`` the per-weight
importance; they differ only in how ``Omega`` is estimated and how it accumulates over tasks.
A subclass implements :meth:`QuadraticPenalty.importance`; the bookkeeping lives here.

Per-task terms add up to one quadratic. For importances ``Omega_t`` and anchors ``theta*_t``,

    sum_t Omega_t (theta - theta*_t)^2 = Omega (theta - m)^2 + C,
    Omega = sum_t Omega_t,  m = sum_t Omega_t theta*_t / Omega,  C = sum_t Omega_t (theta*_t - m)^2

(per weight; ``m`` is the anchors' importance-weighted mean, ``C`` a constant). The penalty is
evaluated in this merged form, built once per task, so a training step costs the same whatever
the number of tasks, and its gradient ``lambda * Omega * (theta - m)`` is computed directly in
four passes over the weights instead of through an autograd graph of per-parameter operations.
"""

from __future__ import annotations

import inspect
import warnings

import torch
from torch.autograd.function import once_differentiable

from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.scenarios.stream import Task
from forgetless.strategies.base import Strategy
from forgetless.validation import check_range


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
        if self.online and self._terms:
            previous, _ = self._terms[0]
            omega = [self.gamma * old + new for old, new in zip(previous, omega, strict=True)]
            self._terms = [(omega, anchor)]
        else:
            self._terms.append((omega, anchor))
        self._merged = _Merged.of(self._terms)
        _warn_if_sgd_diverges(self, learner)

    def penalty(self, learner, x, y, t, logits) -> torch.Tensor | None:
        if not self._terms or self.lam == 0.0:
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

    def state_bytes(self) -> int:
        """Memory held by importances and anchors (and their merged form), in bytes."""
        tensors = [t for pair in self._terms for part in pair for t in part]
        if self._merged is not None:
            tensors += [*self._merged.omega, *self._merged.center]
        unique = {t.data_ptr(): t for t in tensors}  # the merged form of one term is that term
        return sum(t.numel() * t.element_size() for t in unique.values())


class _Merged:
    """The per-task terms as one quadratic: ``sum_t Omega_t (theta - theta*_t)^2 =
    Omega (theta - m)^2 + C`` (see the module docstring)."""

    def __init__(self, omega: list[torch.Tensor], center: list[torch.Tensor], const: float):
        self.omega, self.center, self.const = omega, center, const
        self._scratch: list[torch.Tensor] | None = None

    @staticmethod
    def of(terms: list[tuple[list[torch.Tensor], list[torch.Tensor]]]) -> _Merged:
        if len(terms) == 1:
            return _Merged(*terms[0], const=0.0)
        omega, center, const = [], [], 0.0
        for per_task in zip(*(zip(o, a, strict=True) for o, a in terms), strict=True):
            # float64: C subtracts nearly equal sums, and m must be a weighted mean to the bit.
            o = torch.stack([w for w, _ in per_task]).double()
            a = torch.stack([c for _, c in per_task]).double()
            total = o.sum(0)
            # Where no task gives the weight importance, m is irrelevant: take the last anchor.
            m = torch.where(total > 0, (o * a).sum(0) / total.clamp_min(1e-300), a[-1])
            const += float((o * (a - m).pow(2)).sum())
            dtype = per_task[0][0].dtype
            omega.append(total.to(dtype))
            center.append(m.to(dtype))
        return _Merged(omega, center, const)

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
