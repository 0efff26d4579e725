"""Continual-learning metrics: pure functions of the accuracy matrix.

Notation: ``R[i, j]`` is the accuracy on task ``j`` after training on tasks ``0..i``; ``T`` is
the number of tasks; ``b[j]`` the accuracy on task ``j`` of the randomly initialised model.
Accuracies are fractions in ``[0, 1]``. A metric that is undefined for the given matrix (e.g. BWT
for a single task) is ``None``, never a silent 0 or NaN.

A stream that revisits tasks (a *schedule*, e.g. ``A, B, A, B``: ``schedule[p]`` is the task
trained in phase ``p``) has one row per training phase: ``R[p, j]`` is the accuracy on task ``j``
after phase ``p``, a ``P x T`` matrix. Each metric then counts from the phases where a task was
trained: with ``first_j`` and ``last_j`` the first and last phase that trained task ``j``,

- ACC ``= mean_j R[P-1, j]`` (unchanged);
- BWT ``= mean_{j: last_j < P-1} (R[P-1, j] - R[last_j, j])``: what each task lost since it was
  last trained (the tasks trained in the final phase are left out, as task ``T-1`` is);
- forgetting ``= mean_{j: last_j < P-1} (max_{first_j <= l <= P-2} R[l, j] - R[P-1, j])``;
- FWT ``= mean_{j: first_j > 0} (R[first_j - 1, j] - b[j])``;
- learning accuracy ``= mean_p R[p, schedule[p]]``, each phase's task right after it.

Without a schedule (``schedule[p] = p``) these are exactly the usual definitions.

Language models also have ``P[i, j]``, the per-token perplexity on task ``j``'s held-out text
after training task ``i`` (at least 1, lower is better); :func:`perplexity_summary` applies the
same definitions to it, so a positive perplexity BWT is forgetting.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forgetless.errors import ConfigError

Matrix = Sequence[Sequence[float]] | np.ndarray
#: Mean gain of each trained task's accuracy right after training it over the given model's
#: accuracy on it (at random initialisation, for a fresh model) below which a run is reported
#: as barely trained (by the engine, as a warning, and by reports).
BARELY_LEARNED = 0.05


def _square(R: Matrix) -> np.ndarray:
    arr = np.asarray(R, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ConfigError(
            f"the accuracy matrix must be square T x T with T >= 1, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ConfigError("accuracies must be finite fractions in [0, 1]")
    return arr


def _phases(R: Matrix, schedule: Sequence[int] | None, what: str = "accuracy") -> tuple:
    """``R`` as an array with the task of each phase, and each task's first and last phase;
    without a schedule, ``R`` must be square (phase ``p`` trains task ``p``)."""
    if schedule is None:
        arr = _square(R) if what == "accuracy" else _perplexities(R)
        order = np.arange(len(arr))
        return arr, order, order, order
    arr = np.asarray(R, dtype=np.float64)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ConfigError(f"the {what} matrix must be P x T (phases x tasks), got {arr.shape}")
    P, T = arr.shape
    order = np.asarray(list(schedule), dtype=np.int64)
    if order.shape != (P,) or order.min() < 0 or order.max() >= T:
        raise ConfigError(
            f"the schedule must give one task (0..{T - 1}) per row of the {what} matrix "
            f"({P} rows), got {list(schedule)}"
        )
    if len(set(order.tolist())) != T:
        raise ConfigError(f"the schedule {list(schedule)} never trains some of the {T} tasks")
    if what == "accuracy":
        _check_fractions(arr)
    elif np.isnan(arr).any() or arr.min() < 1:
        raise ConfigError("perplexities must be numbers >= 1 (inf where a token had p = 0)")
    first = np.array([int(np.argmax(order == j)) for j in range(T)])
    last = np.array([P - 1 - int(np.argmax(order[::-1] == j)) for j in range(T)])
    return arr, order, first, last


def _check_fractions(arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ConfigError("accuracies must be finite fractions in [0, 1]")


def average_accuracy(R: Matrix, schedule: Sequence[int] | None = None) -> float:
    """ACC, the mean final accuracy over all tasks (Lopez-Paz and Ranzato 2017, GEM, eq. 2).

    ``ACC = (1/T) sum_j R[T-1, j]`` (the last row, also with a ``schedule``).
    """
    arr = _phases(R, schedule)[0]
    return float(arr[-1].mean())


def backward_transfer(R: Matrix, schedule: Sequence[int] | None = None) -> float | None:
    """BWT, how learning later tasks changed earlier ones (Lopez-Paz and Ranzato 2017, eq. 3).

    ``BWT = 1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j])``; negative means forgetting. With a
    ``schedule``, from the last phase each task was trained (module docstring). ``None`` for
    a single task.
    """
    arr, _, _, last = _phases(R, schedule)
    earlier = last < len(arr) - 1
    if not earlier.any():
        return None
    tasks = np.flatnonzero(earlier)
    return float(np.mean(arr[-1, tasks] - arr[last[tasks], tasks]))


def forward_transfer(
    R: Matrix, baseline: Sequence[float], schedule: Sequence[int] | None = None
) -> float | None:
    """FWT, how earlier tasks help a task before it is trained (Lopez-Paz and Ranzato 2017, eq. 4).

    ``FWT = 1/(T-1) sum_{j>0} (R[j-1, j] - b[j])`` (with a ``schedule``, the row before each
    task's first phase). Meaningless under class-incremental learning (an unseen class is
    never predicted), where callers should not report it. ``None`` for a single task.
    """
    arr, _, first, _ = _phases(R, schedule)
    b = np.asarray(baseline, dtype=np.float64)
    if b.shape != (arr.shape[1],):
        raise ConfigError(
            f"baseline must hold one accuracy per task ({arr.shape[1]}), got shape {b.shape}"
        )
    later = np.flatnonzero(first > 0)
    if not len(later):
        return None
    return float(np.mean(arr[first[later] - 1, later] - b[later]))


def forgetting(R: Matrix, schedule: Sequence[int] | None = None) -> float | None:
    """Average forgetting (Chaudhry et al. 2018, "Riemannian Walk", eq. 3-4).

    For each task ``j < T-1``: ``f_j = max_{l in j..T-2} R[l, j] - R[T-1, j]``, the drop from
    the best accuracy it had once learnt to its final one; the metric is the mean of ``f_j``.
    ``None`` for a single task.

    The paper's maximum runs over every earlier row, ``l in 0..T-2``; rows ``l < j`` come before
    task ``j`` was trained, and a chance-level score there (50% on a binary task-IL head, or
    forward transfer) would count as "forgotten" by a method that never changes the task's
    weights. So the maximum starts at the row where the task was learnt (as Avalanche's
    forgetting starts from the accuracy after training). With a ``schedule``, the maximum runs
    from each task's first phase, over the tasks not trained in the last phase.
    """
    arr, _, first, last = _phases(R, schedule)
    tasks = np.flatnonzero(last < len(arr) - 1)
    if not len(tasks):
        return None
    best = _best_since_learnt(arr, first, tasks, np.max)
    return float(np.mean(best - arr[-1, tasks]))


def _best_since_learnt(arr: np.ndarray, first: np.ndarray, tasks: np.ndarray, best) -> np.ndarray:
    """For each of ``tasks``, ``best`` (``np.max`` or ``np.min``) of ``arr[l, j]`` over the rows
    ``first[j] <= l <= P-2``: from the row where the task was learnt to the one before last."""
    before = arr[:-1, tasks]
    rows = np.arange(len(before))[:, None]
    learnt = rows >= first[tasks][None, :]
    fill = -np.inf if best is np.max else np.inf
    return best(np.where(learnt, before, fill), axis=0)


def learning_accuracy(R: Matrix, schedule: Sequence[int] | None = None) -> float:
    """LA, the accuracy on each task just after learning it, averaged (Riemer et al. 2019).

    ``LA = (1/T) sum_j R[j, j]``: the plasticity side of the trade-off. With a ``schedule``,
    the mean over phases of the accuracy on the phase's task right after it.
    """
    arr, order, _, _ = _phases(R, schedule)
    return float(np.mean(arr[np.arange(len(arr)), order]))


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


def summary(
    R: Matrix, baseline: Sequence[float], protocol: str, schedule: Sequence[int] | None = None
) -> dict[str, float | None]:
    """The headline metrics: ``acc``, ``bwt``, ``fwt`` (``None`` under class-IL),
    ``forgetting`` and ``learning_accuracy`` (with a ``schedule``, as the module says)."""
    return {
        "acc": average_accuracy(R, schedule),
        "bwt": backward_transfer(R, schedule),
        "fwt": None if str(protocol) == "class" else forward_transfer(R, baseline, schedule),
        "forgetting": forgetting(R, schedule),
        "learning_accuracy": learning_accuracy(R, schedule),
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


def perplexity_summary(P: Matrix, schedule: Sequence[int] | None = None) -> dict[str, float | None]:
    """The accuracy metrics' definitions applied to the perplexity matrix ``P``:

    - ``perplexity``: the mean final perplexity, ``(1/T) sum_j P[T-1, j]`` (as ACC);
    - ``perplexity_bwt``: ``1/(T-1) sum_{j<T-1} (P[T-1, j] - P[j, j])`` (as BWT, Lopez-Paz and
      Ranzato 2017, eq. 3); positive means forgetting, since perplexity rises as a model forgets;
    - ``perplexity_forgetting``: the mean over ``j < T-1`` of ``P[T-1, j] - min_{j<=l<T-1} P[l, j]``,
      the rise from the best perplexity the task had once learnt (as :func:`forgetting`);
    - ``learning_perplexity``: ``(1/T) sum_j P[j, j]``, each task's perplexity when just learnt.

    BWT and forgetting are ``None`` for a single task. With a ``schedule``, each counts from
    the phases that trained the task, as for accuracy (module docstring).
    """
    arr, order, first, last = _phases(P, schedule, "perplexity")
    tasks = np.flatnonzero(last < len(arr) - 1)
    several = len(tasks) > 0
    return {
        "perplexity": float(arr[-1].mean()),
        "perplexity_bwt": (
            float(np.mean(arr[-1, tasks] - arr[last[tasks], tasks])) if several else None
        ),
        "perplexity_forgetting": (
            float(np.mean(arr[-1, tasks] - _best_since_learnt(arr, first, tasks, np.min)))
            if several
            else None
        ),
        "learning_perplexity": float(np.mean(arr[np.arange(len(arr)), order])),
    }
