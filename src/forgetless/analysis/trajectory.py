"""The weight-space trajectory: where training goes when task B follows task A.

Parameters are recorded every ``k`` optimiser steps by :class:`ParameterRecorder`, a strategy
that only watches (its ``after_step`` hook copies the weights), so the one training loop of
:mod:`forgetless.engine` is used as is, with any strategy beside it. The path is then drawn on
the plane of its two principal directions (Li, Xu, Taylor, Studer and Goldstein 2018,
"Visualizing the loss landscape of neural nets", NeurIPS, Sec. 7), over contours of the loss of
task A and of task B on that plane (:func:`trajectory_study`): fine-tuning leaves the A optimum
for the B optimum; EWC holds the path near A.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from forgetless.analysis.landscape import (
    Data,
    LossPlane,
    evaluate_points,
    loss_plane,
    set_parameters,
)
from forgetless.data.arrays import ArraySet
from forgetless.engine import FitConfig, train
from forgetless.errors import ConfigError
from forgetless.experiment import RunConfig, prepare
from forgetless.fisher import diagonal_fisher
from forgetless.learner import Learner
from forgetless.result import Result
from forgetless.scenarios.stream import Protocol, Stream, Task
from forgetless.strategies import make_strategies
from forgetless.strategies.base import Strategy
from forgetless.validation import check_positive_int


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


@dataclass(frozen=True)
class PCAPlane:
    """A plane through ``origin`` spanned by the top principal directions of paths.

    Attributes:
        origin: ``[P]``; directions: ``[k, P]`` orthonormal rows.
        explained: ``[k]`` the share of the paths' variance along each direction.
    """

    origin: torch.Tensor
    directions: torch.Tensor
    explained: torch.Tensor

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """``[T, P]`` points as ``[T, k]`` coordinates ``(theta - origin) . u_k``."""
        return (points.double() - self.origin.double()) @ self.directions.double().T


def pca_plane(
    paths: Sequence[torch.Tensor], origin: torch.Tensor | None = None, k: int = 2
) -> PCAPlane:
    """The top ``k`` principal directions of one or several paths of weights.

    Li et al. 2018, Sec. 7: with ``M`` the matrix of rows ``theta_i - theta_origin`` over the
    path (their origin is the final point), the directions are the top right singular vectors
    of ``M`` with its column means removed (the PCA of ``M``, as their code does with
    scikit-learn). Coordinates are then ``(theta - theta_origin) . u`` (:meth:`PCAPlane.project`),
    so the origin sits at ``(0, 0)``. Several paths are stacked into one ``M``, giving one plane
    for all of them.

    Computed from the ``T x T`` Gram matrix of ``M`` in float64 (``T`` points, ``P`` weights,
    ``T << P``), never a ``P x P`` matrix.

    Args:
        paths: ``[T_i, P]`` tensors.
        origin: ``[P]``; default: the last point of the first path.
        k: how many directions.
    """
    if not paths:
        raise ConfigError("pca_plane needs at least one path")
    m = torch.cat([p.double() for p in paths])
    if k < 1 or k >= len(m):
        raise ConfigError(f"k must be in [1, {len(m) - 1}] for {len(m)} points, got {k}")
    origin = (paths[0][-1] if origin is None else origin).double()
    m = m - origin
    centred = m - m.mean(dim=0)
    gram = centred @ centred.T
    values, vectors = torch.linalg.eigh(gram)  # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    top = values[:k].clamp_min(1e-300)
    directions = (vectors[:, :k].T @ centred) / top.sqrt()[:, None]
    explained = top / values.clamp_min(0).sum()
    return PCAPlane(origin.float(), directions.float(), explained.float())


@dataclass
class TrajectoryStudy:
    """Paths of several strategies on one PCA plane, with the tasks' losses on that plane.

    Attributes:
        trajectories: by label (``"finetune"``, ``"ewc"``).
        plane: the PCA plane of all paths together, through the end of task A.
        coordinates: by label, ``[T, 2]`` the projected path.
        surfaces: by task label (``"task A"``, ``"task B"``), its test loss on the plane.
        distances: by label, ``||theta_end - theta_A*||`` (the weights' distance from the end
            of task A at the end of task B), in full weight space and (``plane_distances``) on
            the plane.
        fisher_distances: by label, ``sqrt(sum_i F_i (theta_i - theta_A*_i)^2)`` at the end of
            task B, ``F`` the exact diagonal Fisher of task A at ``theta_A*`` (over the task's
            test examples the surfaces use): the distance EWC's penalty measures, in which
            EWC can stay near A while moving far in plain weight space.
        task_a_loss: by label, the task-A test loss (on the surface's examples) at the end of
            task B: how far up the task-A valley the path ended.
        settings: what was run.
    """

    trajectories: dict[str, Trajectory]
    plane: PCAPlane
    coordinates: dict[str, torch.Tensor]
    surfaces: dict[str, LossPlane]
    distances: dict[str, float]
    plane_distances: dict[str, float]
    fisher_distances: dict[str, float]
    task_a_loss: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "explained_variance": self.plane.explained.tolist(),
            "distances_from_a_optimum": self.distances,
            "plane_distances_from_a_optimum": self.plane_distances,
            "fisher_distances_from_a_optimum": self.fisher_distances,
            "task_a_loss_at_end": self.task_a_loss,
            "accuracy_matrices": {
                k: t.result.accuracy_matrix for k, t in self.trajectories.items()
            },
            "paths": {
                k: {
                    "steps": self.trajectories[k].steps,
                    "tasks": self.trajectories[k].tasks,
                    "task_ends": self.trajectories[k].task_ends,
                    "coordinates": c.tolist(),
                }
                for k, c in self.coordinates.items()
            },
            "surfaces": {k: s.to_dict() for k, s in self.surfaces.items()},
        }


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
        k: float(_loss_at(set_parameters(copy.deepcopy(model), end), subsets[0], heads[0]))
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


def _loss_at(model: nn.Module, data: Data, units) -> float:
    return float(evaluate_points(model, data, [], torch.zeros(1, 0), units=units)[0][0])


def task_subset(data: ArraySet, n: int | None, seed: int) -> ArraySet:
    """``n`` examples of ``data`` drawn without replacement from ``seed`` (in their original
    order); all of them if ``n`` is ``None`` or not smaller than the set."""
    if n is None or n >= len(data):
        return data
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return data.subset(index.sort().values)


@dataclass
class TaskSolutions:
    """A run stopped after some tasks, with a copy of the model after each.

    Attributes:
        stream: the tasks trained (the first ``tasks`` of the scenario).
        models: ``models[i]`` is the network after task ``i`` (its own copy, in eval mode).
        result: the run's result.
    """

    stream: Stream
    models: list[nn.Module]
    result: Result


def train_tasks(config: RunConfig, tasks: int | None = 2) -> TaskSolutions:
    """Run ``config`` on the first ``tasks`` tasks of its scenario (all if ``None``) as
    :func:`forgetless.experiment.run` would (same stream, initial weights and batches), keeping
    a copy of the model after each task: the solutions whose landscapes are compared."""
    stream, model, strategies = prepare(config)
    if tasks is not None:
        check_positive_int("tasks", tasks)
        stream = stream[:tasks]
    states: list[dict[str, torch.Tensor]] = []

    def keep(snapshot) -> None:
        states.append({k: v.detach().clone() for k, v in snapshot.model.items()})

    result = train(
        stream,
        model,
        strategies,
        config.fit_config(),
        config.seed,
        config.to_dict(),
        on_task_end=keep,
    )
    models = []
    for state in states:
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        models.append(m.eval())
    return TaskSolutions(stream, models, result)
