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

Parameters are matched by name, so the model may change between tasks (as Avalanche's
regularisers allow): a parameter added after an importance was computed has none and is not
penalised until a later task gives it one; a frozen parameter cannot move, so its constant term
is left out; a parameter renamed by a wrapper (the same tensor under a new name, e.g. inside an
adapter) keeps its importance; a named parameter whose shape changed is a clear error.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from forgetless.errors import ConfigError
from forgetless.learner import Learner, trainable_parameters
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
    transient = ("_bound",)

    def __init__(self, lam: float = 1.0, online: bool = True, gamma: float = 1.0):
        self.lam = check_range("lam", lam, 0.0)
        self.online = bool(online)
        self.gamma = check_range("gamma", gamma, 0.0, 1.0, low_open=True)
        self._merged: _Merged | None = None
        self._bound: _Bound | None = None  # the merged terms matched to the live parameters

    def importance(
        self, learner: Learner, task: Task
    ) -> list[torch.Tensor] | dict[str, torch.Tensor]:
        """Per-parameter importance ``Omega_t`` for the task just learnt: one tensor per
        trainable parameter in ``model.parameters()`` order, or a dict by parameter name."""
        raise NotImplementedError

    def before_task(self, learner: Learner, task: Task) -> None:
        # The model may have grown or been wrapped since the last task: match the terms again.
        self._bind(learner.model)

    def after_task(self, learner: Learner, task: Task) -> None:
        if self._merged is not None:
            self._bind(learner.model)  # current names, before new terms are merged by name
            _warn_if_sgd_diverged(self, learner)
        params = trainable_parameters(learner.model)
        omega = self._named_importance(self.importance(learner, task), params)
        anchor = {n: params[n].detach().clone() for n in omega}
        merged = self._merged
        if merged is None:
            self._merged = _Merged(omega, anchor, const=0.0)
        elif self.online:
            self._merged = merged.decayed_plus(self.gamma, omega, anchor, learner.model)
        else:
            self._merged = merged.plus(omega, anchor)
        self._bound = None
        self._bind(learner.model)

    def _named_importance(
        self, omega: list[torch.Tensor] | dict[str, torch.Tensor], params: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        if not isinstance(omega, dict):
            if len(omega) != len(params):
                raise ConfigError(
                    f"{self.name}: importance must match the model's trainable parameters "
                    f"({len(params)}), got {len(omega)} tensors"
                )
            omega = dict(zip(params, omega, strict=True))
        for name, o in omega.items():
            if name not in params or o.shape != params[name].shape:
                raise ConfigError(
                    f"{self.name}: importance {name!r} of shape {tuple(o.shape)} matches no "
                    "trainable parameter of the model"
                )
        return {name: o.detach() for name, o in omega.items()}

    def _bind(self, model: torch.nn.Module) -> None:
        """Match the merged terms to the model's parameters: by identity first (a tensor that a
        wrapper renamed keeps its terms, under its new name), then by name."""
        merged = self._merged
        if merged is None:
            self._bound = None
            return
        params = dict(model.named_parameters())
        name_of = {id(p): n for n, p in params.items()}
        held = {} if self._bound is None else self._bound.tensors
        tensors: dict[str, torch.Tensor] = {}
        renames: dict[str, str] = {}
        for name, omega in merged.omega.items():
            p = held.get(name)
            if p is not None and id(p) in name_of:
                current = name_of[id(p)]
            elif name in params:
                current, p = name, params[name]
            else:
                continue  # no longer in the model: kept, but penalises nothing
            if p.shape != omega.shape:
                raise ConfigError(
                    f"{self.name}: parameter {current!r} has shape {tuple(p.shape)}, but its "
                    f"importance was computed for shape {tuple(omega.shape)}; a parameter that "
                    "keeps its name must keep its shape (add new parameters instead)"
                )
            if current in tensors:
                raise ConfigError(
                    f"{self.name}: two penalised parameters now share the name {current!r}"
                )
            tensors[current] = p
            renames[name] = current
        merged.rename(renames)
        self._bound = _Bound(tensors, merged)

    @property
    def importance_sum(self) -> list[torch.Tensor] | None:
        """``Omega``: the summed (or running) importance, per penalised parameter; ``None``
        before the first task ends."""
        return None if self._merged is None else list(self._merged.omega.values())

    @property
    def center(self) -> list[torch.Tensor] | None:
        """``m``: where the penalty pulls the weights (the last anchor when online)."""
        return None if self._merged is None else list(self._merged.center.values())

    @property
    def importance_by_name(self) -> dict[str, torch.Tensor] | None:
        """``Omega`` by parameter name; ``None`` before the first task ends."""
        return None if self._merged is None else dict(self._merged.omega)

    def penalty(self, learner, x, y, t, logits) -> torch.Tensor | None:
        bound = self._active(learner)
        if bound is None:
            return None
        return _HalfWeightedSquares.apply(self.lam, self._merged.const, bound, *bound.params)

    def penalty_gradients(
        self, learner: Learner
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]] | None:
        """The penalty without autograd, for a step that does its own backward pass
        (:mod:`forgetless.mlp_step`): its value, the penalised parameters and the gradient of
        each (fresh tensors), computed with the operations of :meth:`penalty`'s forward pass,
        so the same bits; ``None`` where :meth:`penalty` gives none."""
        bound = self._active(learner)
        if bound is None:
            return None
        value, grads = _weighted_squares(self.lam, self._merged.const, bound, bound.params)
        return value, bound.params, grads

    def _active(self, learner: Learner) -> _Bound | None:
        """The bound terms if the penalty is on (a task learnt, ``lam > 0``, parameters left)."""
        if self._merged is None or self.lam == 0.0:
            return None
        if self._bound is None:  # restored from a checkpoint: match by name
            self._bind(learner.model)
        bound = self._bound
        return bound if bound.params else None

    def load_state_dict(self, state, learner: Learner) -> None:
        super().load_state_dict(state, learner)
        merged = self._merged
        if merged is not None and isinstance(merged.omega, list):
            # A checkpoint from before terms were kept by name: one per trainable parameter.
            names = list(trainable_parameters(learner.model))
            if len(names) != len(merged.omega):
                raise ConfigError(
                    f"{self.name}: the checkpoint holds {len(merged.omega)} importances, the "
                    f"model has {len(names)} trainable parameters"
                )
            merged.omega = dict(zip(names, merged.omega, strict=True))
            merged.center = dict(zip(names, merged.center, strict=True))
            vars(merged).pop("_scratch", None)
        self._bound = None

    def params(self) -> dict[str, object]:
        """The constructor arguments (``online`` and ``gamma`` only where the class takes them)."""
        accepted = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in accepted if k in vars(self)}


@restorable("MergedQuadratic")
class _Merged:
    """The per-task terms as one quadratic: ``sum_t Omega_t (theta - theta*_t)^2 =
    Omega (theta - m)^2 + C`` (see the module docstring), by parameter name."""

    def __init__(
        self, omega: dict[str, torch.Tensor], center: dict[str, torch.Tensor], const: float
    ):
        self.omega, self.center, self.const = omega, center, const

    @property
    def nbytes(self) -> int:
        """Bytes of the importance and the centre (the scratch space of a step is not state)."""
        tensors = (*self.omega.values(), *self.center.values())
        return sum(t.numel() * t.element_size() for t in tensors)

    def rename(self, renames: dict[str, str]) -> None:
        """Key the terms of parameters that a wrapper renamed by their new names (in place)."""
        if all(old == new for old, new in renames.items()):
            return
        self.omega = {renames.get(n, n): o for n, o in self.omega.items()}
        self.center = {renames.get(n, n): c for n, c in self.center.items()}

    def plus(self, omega: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> _Merged:
        """This quadratic plus ``omega (theta - anchor)^2``, merged (the identity above, with this
        one as the first term and the constant carried). Parameters with no earlier term start
        with this one; those without a new term keep theirs."""
        merged_omega, merged_center, const = {}, {}, self.const
        for name, new_w in omega.items():
            new_a = anchor[name]
            if name not in self.omega:
                merged_omega[name], merged_center[name] = new_w, new_a
                continue
            old_w, old_m = self.omega[name], self.center[name]
            # float64: C subtracts nearly equal sums, and m must be a weighted mean to the bit.
            w0, m0, w1, a1 = (v.double() for v in (old_w, old_m, new_w, new_a))
            total = w0 + w1
            # Where no task gives the weight importance, m is irrelevant: take the new anchor.
            m = torch.where(total > 0, (w0 * m0 + w1 * a1) / total.clamp_min(1e-300), a1)
            const += float((w0 * (m0 - m).pow(2) + w1 * (a1 - m).pow(2)).sum())
            merged_omega[name] = total.to(old_w.dtype)
            merged_center[name] = m.to(old_m.dtype)
        for name in [n for n in self.omega if n not in omega]:  # in order: sums repeat exactly
            merged_omega[name], merged_center[name] = self.omega[name], self.center[name]
        return _Merged(merged_omega, merged_center, const)

    def decayed_plus(
        self,
        gamma: float,
        omega: dict[str, torch.Tensor],
        anchor: dict[str, torch.Tensor],
        model: torch.nn.Module,
    ) -> _Merged:
        """The online update ``Omega <- gamma * Omega + Omega_t``, anchored at the latest
        weights. A parameter without a new term (frozen since) decays and is anchored where it
        now is; one without an old term starts with the new one."""
        running, center = {}, {}
        for name, new in omega.items():
            old = self.omega.get(name)
            running[name] = new if old is None else gamma * old + new
            center[name] = anchor[name]
        weights = dict(model.named_parameters())
        for name in [n for n in self.omega if n not in omega]:
            running[name] = gamma * self.omega[name]
            now = weights.get(name)
            center[name] = self.center[name] if now is None else now.detach().clone()
        return _Merged(running, center, const=0.0)


class _Bound:
    """The merged terms of the parameters present in the model, matched to the live tensors:
    ``tensors`` every matched one by current name (kept to follow renames), and the lists the
    penalty runs over: the trainable ones, their importances and centres, and scratch space."""

    def __init__(self, tensors: dict[str, torch.Tensor], merged: _Merged):
        self.tensors = tensors
        names = [n for n, p in tensors.items() if p.requires_grad]
        self.params = [tensors[n] for n in names]
        self.omega = [merged.omega[n] for n in names]
        self.center = [merged.center[n] for n in names]
        self._scratch: list[torch.Tensor] | None = None

    def scratch(self) -> list[torch.Tensor]:
        """A buffer the size of the weights, reused at every step (fresh tensors of a few MB
        cost page faults on CPUs at every step)."""
        if self._scratch is None:
            self._scratch = [torch.empty_like(c) for c in self.center]
        return self._scratch


def _weighted_squares(
    lam: float, const: float, bound: _Bound, params: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``lam/2 * (sum_i Omega_i (theta_i - m_i)^2 + C)`` and its gradient ``lam * Omega *
    (theta - m)`` per parameter (fresh tensors): three passes over the weights."""
    diff = bound.scratch()
    for d, p, m in zip(diff, params, bound.center, strict=True):
        torch.sub(p, m, out=d)
    zero = params[0].new_zeros(())
    grads = [torch.addcmul(zero, d, o, value=lam) for d, o in zip(diff, bound.omega, strict=True)]
    dots = [torch.dot(g.reshape(-1), d.reshape(-1)) for g, d in zip(grads, diff, strict=True)]
    return 0.5 * (torch.stack(dots).sum() + lam * const), grads


class _HalfWeightedSquares(torch.autograd.Function):
    """``lam/2 * (sum_i Omega_i (theta_i - m_i)^2 + C)``, whose gradient
    ``lam * Omega * (theta - m)`` is computed in the forward pass and handed to autograd as is.

    Per step: four passes over the weights (difference, weighted difference, dot product, and
    autograd adding the gradient to the task loss's), no autograd graph of per-parameter ops.
    """

    @staticmethod
    def forward(
        ctx, lam: float, const: float, bound: _Bound, *params: torch.Tensor
    ) -> torch.Tensor:
        value, ctx.grads = _weighted_squares(lam, const, bound, params)
        return value

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
        return None, None, None, *grads


#: How far (in weight units) a weight that plain SGD cannot hold must have moved from its
#: anchor for the task to count as diverging. Such a weight either gets no gradient (an old
#: task's head under task-IL: it stays exactly at its anchor, and nothing diverges) or grows by
#: a constant factor per step, past any bound within a task; a stable weight under the penalty
#: sits at ``grad / (lam * Omega)``, a few hundredths here. So the threshold hardly matters.
DIVERGED = 0.1


def _warn_if_sgd_diverged(strategy: QuadraticPenalty, learner: Learner) -> None:
    """Warn, after a task trained under the penalty, if plain SGD did diverge on it: on
    ``lam/2 * Omega_i * (theta_i - m_i)^2`` (heavy-ball) SGD is stable only while
    ``lr * lam * Omega_i < 2 * (1 + momentum)``; beyond that a weight that moves oscillates
    with growing amplitude. Only weights past the limit that moved away from their anchor
    (:data:`DIVERGED`) count: a run whose weights past it never move learns well, and gets no
    warning."""
    optimizer = getattr(learner, "optimizer", None)
    bound = strategy._bound
    if type(optimizer) is not torch.optim.SGD or strategy.lam == 0.0 or bound is None:
        return
    group = optimizer.param_groups[0]
    limit = 2.0 * (1.0 + group["momentum"]) / group["lr"]
    worst, curvature = 0.0, 0.0
    with torch.no_grad():
        for param, omega, center in zip(bound.params, bound.omega, bound.center, strict=True):
            past = strategy.lam * omega >= limit
            if not past.any():
                continue
            moved = (param.detach() - center)[past].abs().max().item()
            if not math.isfinite(moved) or moved > worst:
                worst = moved
                curvature = strategy.lam * float(omega.max())
    if math.isfinite(worst) and worst <= DIVERGED:
        return
    warnings.warn(
        f"{strategy.name}: SGD diverged on the penalty: weights with lam * importance up to "
        f"{curvature:.3g}, above 2 * (1 + momentum) / lr = {limit:.3g}, moved {worst:.3g} from "
        "their anchors while learning this task (stable ones stay within a few hundredths); "
        "lower lam or lr, or use Adam",
        RuntimeWarning,
        stacklevel=3,
    )


def _trainable(learner: Learner) -> list[torch.Tensor]:
    return [p for p in learner.model.parameters() if p.requires_grad]
