"""Sharpness: the top eigenvalue of the Hessian of the loss, by power iteration on
Hessian-vector products (Pearlmutter 1994), never forming the Hessian."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.analysis.landscape import Data, examples
from forgetless.validation import check_positive_int, check_range


@dataclass(frozen=True)
class Eigen:
    """The result of a power iteration.

    Attributes:
        value: the eigenvalue estimate (the Rayleigh quotient ``v^T H v`` at the last vector).
        iterations: Hessian-vector products taken.
        converged: whether the relative change fell under the tolerance before ``max_iter``.
        history: the estimate after each iteration.
        vector: the last (unit) vector, one tensor per parameter.
    """

    value: float
    iterations: int
    converged: bool
    history: list[float] = field(default_factory=list)
    vector: list[torch.Tensor] = field(default_factory=list, repr=False)


def power_iteration(
    hvp: Callable[[list[torch.Tensor]], list[torch.Tensor]],
    like: Sequence[torch.Tensor],
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
) -> Eigen:
    """The eigenvalue of largest magnitude of a symmetric operator given as ``v -> H v``.

    Power iteration (von Mises): from a Gaussian ``v_0`` drawn from ``seed``,

        w = H v_k,   lambda_k = v_k . w,   v_{k+1} = w / ||w||

    stopping when ``|lambda_k - lambda_{k-1}| <= tol |lambda_k|`` or after ``max_iter``
    products. It converges at the rate ``|lambda_2 / lambda_1|``; near a minimum the Hessian's
    eigenvalue of largest magnitude is its top (positive) one.

    Args:
        hvp: the operator, on lists of tensors shaped like ``like``.
        like: tensors giving the shapes, dtypes and devices of ``v``.
    """
    check_positive_int("max_iter", max_iter)
    check_range("tol", tol, 0.0, low_open=True)
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for t in like]
    v = _unit(v)
    history: list[float] = []
    converged = False
    for _ in range(max_iter):
        w = [t.detach() for t in hvp(v)]
        value = float(sum((a * b).sum() for a, b in zip(v, w, strict=True)))
        history.append(value)
        norm = math.sqrt(float(sum((t * t).sum() for t in w)))
        if norm == 0.0:
            converged = True
            break
        v = [t / norm for t in w]
        if len(history) > 1 and abs(value - history[-2]) <= tol * abs(value):
            converged = True
            break
    return Eigen(history[-1], len(history), converged, history, v)


def _unit(v: list[torch.Tensor]) -> list[torch.Tensor]:
    norm = math.sqrt(float(sum((t * t).sum() for t in v)))
    return [t / norm for t in v]


def top_hessian_eigenvalue(
    loss: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
) -> Eigen:
    """The top eigenvalue of the Hessian of ``loss()`` with respect to ``params``.

    Each Hessian-vector product is a double backward pass (Pearlmutter 1994):
    ``H v = d/dtheta (grad L(theta) . v)``, never forming ``H``. See :func:`power_iteration`.

    Args:
        loss: a function of no arguments computing a scalar from ``params`` (tensors with
            ``requires_grad=True``).
        params: the variables.
    """
    params = list(params)

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        return _hvp(loss(), params, v)

    return power_iteration(hvp, params, max_iter=max_iter, tol=tol, seed=seed)


def _hvp(value: torch.Tensor, params: list[torch.Tensor], v: list[torch.Tensor]):
    grads = torch.autograd.grad(value, params, create_graph=True)
    dot = sum((g * u).sum() for g, u in zip(grads, v, strict=True))
    return torch.autograd.grad(dot, params)


def sharpness(
    model: nn.Module,
    data: Data,
    *,
    n_examples: int | None = 1000,
    batch_size: int = 500,
    max_iter: int = 50,
    tol: float = 1e-3,
    seed: int = 0,
    units: Sequence[int] | None = None,
) -> Eigen:
    """The top eigenvalue of the Hessian of the mean cross-entropy of ``model`` on ``data``.

    Sharpness in the sense of Keskar et al. 2017 ("On large-batch training for deep learning:
    generalization gap and sharp minima", ICLR) measured as the largest Hessian eigenvalue
    (as in Li et al. 2018, Sec. 6; Mirzadeh et al. 2020, "Understanding the role of training
    regimes in continual learning", NeurIPS, relate it to forgetting: the loss rise under a
    weight change ``delta`` is about ``1/2 lambda_max ||delta||^2`` at worst). The loss is
    ``L = 1/N sum_i CE(f(x_i), y_i)`` over ``n_examples`` examples drawn from ``seed`` (all if
    ``None``); ``H v`` is summed over batches of ``batch_size``, each weighted by its share of
    the examples. The model is evaluated in ``eval()`` mode; trainable parameters only.
    ``units``: score only these outputs (a task-incremental task's head).
    """
    inputs, labels, pick = examples(data, units)
    n = len(labels)
    if n_examples is not None:
        check_positive_int("n_examples", n_examples)
    check_positive_int("batch_size", batch_size)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(n, generator=generator)[: min(n, n_examples or n)].sort().values
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    batches = [
        (inputs(index[s : s + batch_size]).to(device), labels[index[s : s + batch_size]].to(device))
        for s in range(0, len(index), batch_size)
    ]
    total = len(index)
    was_training = model.training
    model.eval()

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            logits = model(x) if pick is None else model(x).index_select(1, pick.to(device))
            value = F.cross_entropy(logits, y) * (len(y) / total)
            for acc, h in zip(out, _hvp(value, params, v), strict=True):
                acc += h
        return out

    try:
        return power_iteration(hvp, params, max_iter=max_iter, tol=tol, seed=seed)
    finally:
        model.train(was_training)
