"""The trajectory study: the weight-space paths of several strategies through task A then task B,
on their common PCA plane, over the losses of both tasks (Li et al. 2018, Sec. 7).

Its training part is here: :class:`ParameterRecorder`, an observer strategy that copies the
weights every ``k`` steps, and :func:`trajectory_study`, which trains each strategy with it.
The measures of the paths (:func:`~forgetless.analysis.trajectory.pca_plane`, the loss
surfaces, the distances) are pure, in :mod:`forgetless.analysis.trajectory`.

Unlike the other studies, the paths are not run through the run store: the store keeps the
weights after each task, and a path needs them every ``k`` steps (see docs/architecture.md).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from forgetless.analysis.landscape import loss_plane, set_parameters
from forgetless.analysis.trajectory import TrajectoryStudy, loss_at, pca_plane, task_subset
from forgetless.engine import FitConfig, train
from forgetless.errors import ConfigError
from forgetless.fisher import diagonal_fisher
from forgetless.learner import Learner
from forgetless.result import Result
from forgetless.scenarios.stream import Protocol, Stream, Task
from forgetless.strategies import make_strategies
from forgetless.strategies.base import Strategy
from forgetless.validation import check_positive_int

__all__ = [
    "ParameterRecorder",
    "Trajectory",
    "format_trajectory",
    "record_trajectory",
    "trajectory_study",
]


class ParameterRecorder(Strategy):
    """Records the flattened trainable parameters every ``every`` optimiser steps.

    For analysis only (not in the strategy registry): add it after the strategies of a run,
    ``train(stream, model, [EWC(1e3), ParameterRecorder(10)])``. It records the weights before
    the first step, every ``every`` steps, and at the end of each task.

    Attributes:
        points: one flat float32 CPU tensor per record, parameters in ``named_parameters``
            order (trainable ones).
        steps: the optimiser step of each record (0: the initial weights).
        tasks: the task being trained at each record (0 for the initial weights).
        task_ends: for each task, the index in ``points`` of its last record.
        names, shapes: the parameters' names and shapes, to unflatten a point.
    """

    name = "parameter-recorder"

    def __init__(self, every: int = 10):
        self.every = check_positive_int("every", every)
        self.points: list[torch.Tensor] = []
        self.steps: list[int] = []
        self.tasks: list[int] = []
        self.task_ends: list[int] = []
        self.names: list[str] = []
        self.shapes: list[tuple[int, ...]] = []
        self._step = 0

    def _record(self, learner: Learner) -> None:
        params = [(n, p) for n, p in learner.model.named_parameters() if p.requires_grad]
        if not self.names:
            self.names = [n for n, _ in params]
            self.shapes = [tuple(p.shape) for _, p in params]
        flat = torch.cat([p.detach().reshape(-1) for _, p in params]).float().cpu()
        self.points.append(flat)
        self.steps.append(self._step)
        self.tasks.append(learner.task_index)

    def before_task(self, learner: Learner, task: Task) -> None:
        if not self.points:
            self._record(learner)

    def after_step(self, learner, x, y, t, logits) -> None:
        self._step += 1
        if self._step % self.every == 0:
            self._record(learner)

    def after_task(self, learner: Learner, task: Task) -> None:
        if self.steps[-1] != self._step:
            self._record(learner)
        self.task_ends.append(len(self.points) - 1)

    def state_bytes(self) -> int:
        return 0  # an observer: not part of the method's memory

    def params(self) -> dict[str, object]:
        return {"every": self.every}

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat point (or direction) as ``{name: tensor}``."""
        sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        parts = flat.split(sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}


@dataclass
class Trajectory:
    """A recorded training path.

    Attributes:
        points: ``[T, P]`` the recorded weights.
        recorder: the recorder (its ``steps``, ``tasks`` and ``task_ends`` are also
            properties here; :meth:`ParameterRecorder.unflatten`).
        result: the run's :class:`~forgetless.result.Result`.
    """

    points: torch.Tensor
    recorder: ParameterRecorder
    result: Result

    @property
    def steps(self) -> list[int]:
        return self.recorder.steps

    @property
    def tasks(self) -> list[int]:
        return self.recorder.tasks

    @property
    def task_ends(self) -> list[int]:
        return self.recorder.task_ends

    def end_of_task(self, task: int) -> torch.Tensor:
        """The weights at the end of ``task`` (a flat tensor)."""
        return self.points[self.task_ends[task]]


def record_trajectory(
    stream: Stream,
    model: nn.Module,
    strategy: str | Strategy | Sequence[Strategy | str] = "finetune",
    fit: FitConfig | None = None,
    *,
    every: int = 10,
    seed: int = 0,
) -> Trajectory:
    """Train ``model`` on ``stream`` with ``strategy`` (see :func:`forgetless.engine.train`)
    and record its parameters every ``every`` steps. ``model`` is trained in place."""
    recorder = ParameterRecorder(every)
    strategies = [*make_strategies(strategy), recorder]
    result = train(stream, model, strategies, fit or FitConfig(progress=False), seed)
    points = torch.stack(recorder.points)
    return Trajectory(points, recorder, result)


def trajectory_study(
    stream: Stream,
    model: nn.Module,
    strategies: Mapping[str, str | Strategy | Sequence[Strategy | str]],
    fit: FitConfig | None = None,
    *,
    every: int = 10,
    seed: int = 0,
    resolution: int = 25,
    margin: float = 0.25,
    n_examples: int | None = 2000,
    batch_size: int = 2000,
) -> TrajectoryStudy:
    """Train a copy of ``model`` with each strategy on the first two tasks of ``stream``,
    record the paths, and lay out the losses of both tasks on their common PCA plane.

    Every copy starts from the same weights and sees the same batches (same ``seed``), so the
    paths share task A exactly when the strategies do nothing during the first task (EWC's
    penalty starts with task B). Under task-incremental learning each task's loss is over its
    own head. The plane is :func:`pca_plane` of all paths stacked, through
    the first strategy's end of task A (``theta_A*``). The loss of each task's test set
    (``n_examples`` of it, drawn from ``seed``; ``None``: all) is evaluated with
    :func:`~forgetless.analysis.landscape.loss_plane` along the two unit PCA directions (not
    filter-normalised: the plane is the paths' own) on a ``resolution x resolution`` grid
    covering the projected paths plus ``margin`` of their extent on each side.
    """
    if len(stream) < 2:
        raise ConfigError(f"a trajectory study needs two tasks; the stream has {len(stream)}")
    if not strategies:
        raise ConfigError("strategies: give at least one, e.g. {'finetune': 'finetune'}")
    check_positive_int("resolution", resolution)
    stream = stream[:2]
    trajectories = {}
    for label, strategy in strategies.items():
        trajectories[label] = record_trajectory(
            stream, copy.deepcopy(model), strategy, fit, every=every, seed=seed
        )
    for label, t in trajectories.items():
        if not torch.isfinite(t.points).all():
            raise ConfigError(
                f"the run with {label!r} diverged (non-finite weights); lower lr or the "
                "strategy's strength, or use Adam"
            )
    first = next(iter(trajectories.values()))
    a_optimum = first.end_of_task(0)
    plane = pca_plane([t.points for t in trajectories.values()], origin=a_optimum)
    coords = {k: plane.project(t.points) for k, t in trajectories.items()}
    every_point = torch.cat(list(coords.values()))
    low, high = every_point.min(dim=0).values, every_point.max(dim=0).values
    pad = margin * (high - low).clamp_min(1e-6)
    axes = [
        torch.linspace(float(low[i] - pad[i]), float(high[i] + pad[i]), resolution) for i in (0, 1)
    ]
    centre = set_parameters(copy.deepcopy(model), first.recorder.unflatten(plane.origin))
    d1, d2 = (first.recorder.unflatten(plane.directions[i]) for i in (0, 1))
    surfaces, subsets = {}, []
    heads = [t.units if stream.protocol is Protocol.TASK else None for t in stream.tasks]
    for label, task, units in zip(("task A", "task B"), stream.tasks, heads, strict=True):
        subsets.append(task_subset(task.test, n_examples, seed))
        surfaces[label] = loss_plane(
            centre, subsets[-1], d1, d2, axes[0], axes[1], units=units, batch_size=batch_size
        )
    distances = {k: float((t.points[-1] - a_optimum).norm()) for k, t in trajectories.items()}
    plane_distances = {k: float(c[-1].norm()) for k, c in coords.items()}
    ends = {k: first.recorder.unflatten(t.points[-1]) for k, t in trajectories.items()}
    data_a = subsets[0]
    fisher = diagonal_fisher(centre, data_a.lazy_inputs, data_a.y, heads[0], kind="exact")
    fisher_flat = torch.cat([f.reshape(-1) for f in fisher]).float().cpu()
    fisher_distances = {
        k: float((fisher_flat * (t.points[-1] - a_optimum) ** 2).sum().sqrt())
        for k, t in trajectories.items()
    }
    task_a_loss = {
        k: float(loss_at(set_parameters(copy.deepcopy(model), end), subsets[0], heads[0]))
        for k, end in ends.items()
    }
    settings = {
        "stream": stream.name,
        "tasks": list(stream.task_names),
        "strategies": {k: str(v) for k, v in strategies.items()},
        "every": every,
        "seed": seed,
        "resolution": resolution,
        "n_examples": n_examples,
    }
    return TrajectoryStudy(
        trajectories,
        plane,
        coords,
        surfaces,
        distances,
        plane_distances,
        fisher_distances,
        task_a_loss,
        settings,
    )


def format_trajectory(study: TrajectoryStudy) -> str:
    """The lines ``forgetless trajectory`` prints: the plane's share of the variance, then per
    strategy its points, final accuracies and distances from the task-A optimum."""
    explained = study.plane.explained.tolist()
    stream = study.settings.get("stream", "")
    lines = [f"{stream}: PCA plane holds {100 * sum(explained):.1f}% of the paths' variance"]
    for label, t in study.trajectories.items():
        row = t.result.accuracy_matrix[-1]
        lines.append(
            f"{label:<12} {len(t.steps)} points; after task B: task A {100 * row[0]:.1f}%, "
            f"task B {100 * row[1]:.1f}%; distance from the A optimum "
            f"{study.distances[label]:.3f} (on the plane {study.plane_distances[label]:.3f}, "
            f"Fisher-weighted {study.fisher_distances[label]:.3f}); "
            f"task-A loss at the end {study.task_a_loss[label]:.3f}"
        )
    return "\n".join(lines) + "\n"
