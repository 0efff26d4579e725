"""Continual-learning metrics: pure functions of the accuracy matrix.

Notation: ``R[i, j]`` is the accuracy on task ``j`` after training on tasks ``0..i``; ``T`` is
the number of tasks; ``b[j]`` the accuracy on task ``j`` of the randomly initialised model.
Accuracies are fractions in ``[0, 1]``. A metric that is undefined for the given matrix (e.g. BWT
for a single task) is ``None``, never a silent 0 or NaN.

Language models also have ``P[i, j]``, the per-token perplexity on task ``j``'s held-out text
after training task ``i`` (at least 1, lower is better); :func:`perplexity_summary` applies the
same definitions to it, so a positive perplexity BWT is forgetting.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forgetless.errors import ConfigError

Matrix = Sequence[Sequence[float]] | np.ndarray


def _square(R: Matrix) -> np.ndarray:
    arr = np.asarray(R, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ConfigError(
            f"the accuracy matrix must be square T x T with T >= 1, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ConfigError("accuracies must be finite fractions in [0, 1]")
    return arr


def average_accuracy(R: Matrix) -> float:
    """ACC, the mean final accuracy over all tasks (Lopez-Paz and Ranzato 2017, GEM, eq. 2).

    ``ACC = (1/T) sum_j R[T-1, j]``
    """
    arr = _square(R)
    return float(arr[-1].mean())


def backward_transfer(R: Matrix) -> float | None:
    """BWT, how learning later tasks changed earlier ones (Lopez-Paz and Ranzato 2017, eq. 3).

    ``BWT = 1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j])``; negative means forgetting.
    ``None`` for a single task.
    """
    arr = _square(R)
    T = len(arr)
    if T < 2:
        return None
    return float(np.mean(arr[-1, :-1] - np.diag(arr)[:-1]))


def forward_transfer(R: Matrix, baseline: Sequence[float]) -> float | None:
    """FWT, how earlier tasks help a task before it is trained (Lopez-Paz and Ranzato 2017, eq. 4).

    ``FWT = 1/(T-1) sum_{j>0} (R[j-1, j] - b[j])``. Meaningless under class-incremental learning
    (an unseen class is never predicted), where callers should not report it. ``None`` for a
    single task.
    """
    arr = _square(R)
    b = np.asarray(baseline, dtype=np.float64)
    if b.shape != (len(arr),):
        raise ConfigError(
            f"baseline must hold one accuracy per task ({len(arr)}), got shape {b.shape}"
        )
    if len(arr) < 2:
        return None
    return float(np.mean(np.diag(arr, k=1) - b[1:]))


def forgetting(R: Matrix) -> float | None:
    """Average forgetting (Chaudhry et al. 2018, "Riemannian Walk", eq. 3-4).

    For each task ``j < T-1``: ``f_j = max_{l in j..T-2} R[l, j] - R[T-1, j]``, the drop from
    the best accuracy it had once learnt to its final one; the metric is the mean of ``f_j``.
    ``None`` for a single task.

    The paper's maximum runs over every earlier row, ``l in 0..T-2``; rows ``l < j`` come before
    task ``j`` was trained, and a chance-level score there (50% on a binary task-IL head, or
    forward transfer) would count as "forgotten" by a method that never changes the task's
    weights. So the maximum starts at the row where the task was learnt (as Avalanche's
    forgetting starts from the accuracy after training).
    """
    arr = _square(R)
    if len(arr) < 2:
        return None
    return float(np.mean(_best_since_learnt(arr, np.max) - arr[-1, :-1]))


def _best_since_learnt(arr: np.ndarray, best) -> np.ndarray:
    """For each task ``j < T-1``, ``best`` (``np.max`` or ``np.min``) of ``arr[l, j]`` over the
    rows ``j <= l <= T-2``: from the row where the task was learnt to the one before last."""
    before = arr[:-1, :-1]
    learnt = np.tril(np.ones_like(before, dtype=bool))  # row l >= column j
    fill = -np.inf if best is np.max else np.inf
    return best(np.where(learnt, before, fill), axis=0)


def learning_accuracy(R: Matrix) -> float:
    """LA, the accuracy on each task just after learning it, averaged (Riemer et al. 2019).

    ``LA = (1/T) sum_j R[j, j]``: the plasticity side of the trade-off.
    """
    return float(np.mean(np.diag(_square(R))))


def intransigence(R: Matrix, reference: Sequence[float]) -> float:
    """Intransigence (Chaudhry et al. 2018, eq. 5): how much less a task is learnt than by a
    reference model that saw all data so far (e.g. joint training).

    ``I = (1/T) sum_j (a*_j - R[j, j])`` with ``a*_j`` the reference accuracy on task ``j``.
    """
    arr = _square(R)
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != (len(arr),):
        raise ConfigError(
            f"reference must hold one accuracy per task ({len(arr)}), got shape {ref.shape}"
        )
    return float(np.mean(ref - np.diag(arr)))


def summary(R: Matrix, baseline: Sequence[float], protocol: str) -> dict[str, float | None]:
    """The headline metrics: ``acc``, ``bwt``, ``fwt`` (``None`` under class-IL),
    ``forgetting`` and ``learning_accuracy``."""
    return {
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": None if str(protocol) == "class" else forward_transfer(R, baseline),
        "forgetting": forgetting(R),
        "learning_accuracy": learning_accuracy(R),
    }


def _perplexities(P: Matrix) -> np.ndarray:
    arr = np.asarray(P, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ConfigError(
            f"the perplexity matrix must be square T x T with T >= 1, got shape {arr.shape}"
        )
    if np.isnan(arr).any() or arr.min() < 1:
        raise ConfigError("perplexities must be numbers >= 1 (inf where a token had p = 0)")
    return arr


def perplexity_summary(P: Matrix) -> dict[str, float | None]:
    """The accuracy metrics' definitions applied to the perplexity matrix ``P``:

    - ``perplexity``: the mean final perplexity, ``(1/T) sum_j P[T-1, j]`` (as ACC);
    - ``perplexity_bwt``: ``1/(T-1) sum_{j<T-1} (P[T-1, j] - P[j, j])`` (as BWT, Lopez-Paz and
      Ranzato 2017, eq. 3); positive means forgetting, since perplexity rises as a model forgets;
    - ``perplexity_forgetting``: the mean over ``j < T-1`` of ``P[T-1, j] - min_{j<=l<T-1} P[l, j]``,
      the rise from the best perplexity the task had once learnt (as :func:`forgetting`);
    - ``learning_perplexity``: ``(1/T) sum_j P[j, j]``, each task's perplexity when just learnt.

    BWT and forgetting are ``None`` for a single task.
    """
    arr = _perplexities(P)
    T = len(arr)
    several = T > 1
    return {
        "perplexity": float(arr[-1].mean()),
        "perplexity_bwt": float(np.mean(arr[-1, :-1] - np.diag(arr)[:-1])) if several else None,
        "perplexity_forgetting": (
            float(np.mean(arr[-1, :-1] - _best_since_learnt(arr, np.min))) if several else None
        ),
        "learning_perplexity": float(np.mean(np.diag(arr))),
    }
