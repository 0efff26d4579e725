"""Task inference: a router picks, for each input, the task whose part of the model answers it.

Methods that answer through the part of the model a task id selects (specialists, columns,
masks) need the task at test time; under class- or domain-incremental learning it is not
given. A :class:`Router` (``train(..., router="mahalanobis")``, ``--router``) infers it, among
the tasks learnt so far, by one of three scores, the lowest winning:

- ``entropy``: the predictive entropy of the model's answer through task ``k``, over task
  ``k``'s own output units (a confident part is taken to be the right one);
- ``mahalanobis``: the squared Mahalanobis distance of the input's penultimate features
  through task ``k`` to the nearest class mean of task ``k``, under a covariance shared by the
  task's classes (tied) and estimated with Ledoit-Wolf shrinkage (Lee, Lee, Lee and Shin 2018,
  "A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial
  Attacks", NeurIPS; Ledoit and Wolf 2004, "A well-conditioned estimator for
  large-dimensional covariance matrices", J. Multivariate Analysis);
- ``ncm``: the Euclidean distance of the same features to the nearest class mean (the
  simplest variant: Mahalanobis with the identity for covariance).

The features' statistics (class means, the shrunk covariance's inverse) are computed at the end
of each task from its training data, through the part of the model that answers it, and kept as
plain tensors in the router's state (saved in checkpoints; no input is kept).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.models.masked import MaskedNet
from forgetless.models.progressive import ProgressiveNet
from forgetless.models.specialists import SpecialistNet
from forgetless.names import ROUTERS
from forgetless.scenarios.stream import Protocol, Task
from forgetless.strategies.base import Strategy

#: Training examples per forward pass when the statistics are collected.
CHUNK = 1024


def ledoit_wolf(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The Ledoit-Wolf shrunk covariance of the rows of ``x`` ``[n, p]``, taken as centred
    (their mean is not subtracted: pass rows minus their class means for a pooled, tied
    covariance), and its shrinkage.

    ``(1 - s) S + s mu I`` with ``S = x^T x / n``, ``mu = tr(S) / p`` and ``s = min(b2, d2) /
    d2`` (Ledoit and Wolf 2004, Lemma 3.2 and Sec. 3.3): ``d2 = ||S - mu I||_F^2 / p`` and
    ``b2 = sum_i ||x_i x_i^T - S||_F^2 / (n^2 p)``, computed without the ``n`` outer
    products. In float64; the result has ``x``'s dtype.
    """
    if x.ndim != 2 or len(x) < 1:
        raise ConfigError(f"ledoit_wolf needs a [n, p] matrix with n >= 1, got {tuple(x.shape)}")
    z = x.double()
    n, p = z.shape
    s = z.T @ z / n
    mu = torch.diagonal(s).sum() / p
    d2 = ((s - mu * torch.eye(p, dtype=z.dtype, device=z.device)) ** 2).sum() / p
    # sum_i ||x_i x_i^T||_F^2 = sum_i ||x_i||^4; the cross terms sum to -n ||S||_F^2.
    b2 = ((z * z).sum(1) ** 2).sum() / n**2 - (s * s).sum() / n
    b2 = torch.minimum(b2 / p, d2)
    shrinkage = float(b2 / d2) if float(d2) > 0 else 0.0
    eye = torch.eye(p, dtype=z.dtype, device=z.device)
    return ((1 - shrinkage) * s + shrinkage * mu * eye).to(x.dtype), shrinkage


def output_layer(model: nn.Module, task: int) -> nn.Module:
    """The layer that gives ``model``'s outputs when it answers ``task``: its input is the
    penultimate features of that task's part (a specialist's, a column's, the masked body's
    with the task's masks); for another model, its last linear or convolutional layer."""
    if isinstance(model, SpecialistNet):
        return output_layer(model.experts[min(task, len(model.experts) - 1)], task)
    if isinstance(model, ProgressiveNet):
        return model.columns[min(task, len(model.columns) - 1)].stages[-1].layer
    if isinstance(model, MaskedNet):
        return list(model.layers.values())[-1]
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no linear or convolutional output layer")
    return layers[-1]


def features(learner: Learner, x: torch.Tensor, task: int) -> torch.Tensor:
    """The penultimate features ``[B, d]`` of ``x`` through the part of the model that answers
    ``task`` (the output layer's input, flattened)."""
    seen: list[torch.Tensor] = []
    hook = output_layer(learner.model, task).register_forward_pre_hook(
        lambda module, args: seen.append(args[0])
    )
    try:
        learner.forward(x, task)
    finally:
        hook.remove()
    if len(seen) != 1:
        raise ConfigError(
            f"the output layer of {type(learner.model).__name__} ran {len(seen)} times for one "
            "task; the router reads one set of features per input"
        )
    return seen[0].flatten(1)


class Router(Strategy):
    """Infers each test input's task, so that a method that needs the task id (pnn, packnet,
    hat, hypermask, specialists) runs under class- or domain-IL. See :mod:`forgetless.routing`
    for the scores.

    The engine asks :meth:`route` for the task of every evaluated input, answers each through
    the inferred task's part of the model restricted to that task's output units, counts how
    often the inferred task is the true one (``Result.routing_accuracy``), and also evaluates
    every input with its true task given (``Result.task_aware_matrix``).

    Args:
        kind: ``"entropy"``, ``"mahalanobis"`` or ``"ncm"``.

    Attributes (its state, saved in checkpoints):
        means: per learnt task, its classes' mean features ``[C_k, d]`` (not for entropy).
        precisions: per learnt task, the inverse of the Ledoit-Wolf covariance of its
            features around their class means, ``[d, d]`` (mahalanobis only).
        shrinkage: per learnt task, the Ledoit-Wolf shrinkage (mahalanobis only).
    """

    name = "router"
    infers_task = True
    transient = ("_units",)

    def __init__(self, kind: str = "entropy"):
        if kind not in ROUTERS:
            raise ConfigError(f"router must be one of {', '.join(ROUTERS)}, got {kind!r}")
        self.kind = kind
        self.means: list[torch.Tensor] = []
        self.precisions: list[torch.Tensor] = []
        self.shrinkage: list[float] = []
        self._units: dict[int, torch.Tensor] = {}

    def before_task(self, learner: Learner, task: Task) -> None:
        if learner.stream.protocol is Protocol.TASK:
            raise ConfigError(
                "a router infers the task where it is not given; under the task-incremental "
                "protocol it is given (use --protocol class or domain, or no --router)"
            )
        if self.kind != "entropy" and task.train.target_shape:
            raise ConfigError(
                f"the {self.kind} router needs one feature vector per input; for token "
                "sequences use --router entropy"
            )

    @torch.no_grad()
    def after_task(self, learner: Learner, task: Task) -> None:
        if self.kind == "entropy":
            return
        k = learner.task_index
        model = learner.model
        was_training = model.training
        model.eval()  # the features the model gives at test time
        try:
            data = task.train
            parts = [
                features(learner, data.inputs(slice(i, i + CHUNK)).to(learner.device), k)
                for i in range(0, len(data), CHUNK)
            ]
        finally:
            model.train(was_training)
        f = torch.cat(parts).float()
        classes, which = data.y.to(learner.device).unique(return_inverse=True)
        sums = f.new_zeros(len(classes), f.shape[1]).index_add_(0, which, f)
        means = sums / torch.bincount(which, minlength=len(classes)).unsqueeze(1).to(f.dtype)
        self.means.append(means)
        if self.kind == "mahalanobis":
            covariance, shrinkage = ledoit_wolf(f - means[which])
            self.precisions.append(torch.linalg.pinv(covariance.double(), hermitian=True).float())
            self.shrinkage.append(shrinkage)

    def route(self, learner: Learner, x: torch.Tensor) -> torch.Tensor:
        learnt = learner.task_index + 1 if self.kind == "entropy" else len(self.means)
        if learnt <= 1:  # nothing to choose from yet (before or during the first task)
            return torch.zeros(len(x), dtype=torch.int64, device=x.device)
        scores = torch.stack([self._score(learner, x, k) for k in range(learnt)], dim=1)
        return scores.argmin(dim=1)

    def _score(self, learner: Learner, x: torch.Tensor, k: int) -> torch.Tensor:
        """``[B]``, lower for inputs more likely of task ``k``."""
        if self.kind == "entropy":
            units = self._units.get(k)
            if units is None:
                units = torch.tensor(learner.stream.tasks[k].units, device=learner.device)
                self._units[k] = units
            logp = torch.log_softmax(learner.forward(x, k).index_select(-1, units), dim=-1)
            entropy = -(logp.exp() * logp).sum(-1)
            return entropy.flatten(1).mean(1) if entropy.ndim > 1 else entropy
        f, mu = features(learner, x, k), self.means[k]
        if self.kind == "ncm":
            return torch.cdist(f, mu).min(dim=1).values
        # (f - m)^T P (f - m) for every class mean m, without a [B, C, d] tensor.
        p = self.precisions[k]
        fp = f @ p
        distances = (fp * f).sum(1, keepdim=True) - 2 * fp @ mu.T + ((mu @ p) * mu).sum(1)
        return distances.min(dim=1).values

    def params(self) -> dict[str, object]:
        return {"kind": self.kind}

    def report(self, learner: Learner) -> dict[str, Any] | None:
        if self.kind != "mahalanobis":
            return {"kind": self.kind}
        return {"kind": self.kind, "shrinkage": list(self.shrinkage)}


def make_router(router: str | Router) -> Router:
    """A :class:`Router` from its kind's name (or the instance itself)."""
    return router if isinstance(router, Router) else Router(router)
