"""The trajectory study: the weight-space paths of several strategies through task A then task B,
on their common PCA plane, over the losses of both tasks (Li et al. 2018, Sec. 7).

Each strategy's run is a RunConfig on the scenario's first two tasks with ``path_every = k``
(:class:`~forgetless.strategies.recorder.ParameterRecorder`, an observer, copies the weights
every ``k`` steps), executed through the run store and the sweep runner; the path is read back
from the run's last checkpoint (:func:`stored_path`), so a second call trains nothing. The
measures of the paths (:func:`~forgetless.analysis.trajectory.pca_plane`, the loss surfaces,
the distances) are pure, in :mod:`forgetless.analysis.trajectory`. :func:`record_trajectory`
records the path of a stream and model of one's own, in this process.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from forgetless.analysis.landscape import loss_plane, set_parameters
from forgetless.analysis.trajectory import TrajectoryStudy, loss_at, pca_plane, task_subset
from forgetless.engine import FitConfig, train
from forgetless.errors import ConfigError
from forgetless.experiment import RunConfig
from forgetless.fisher import diagonal_fisher
from forgetless.result import Result
from forgetless.scenarios.stream import Protocol, Stream
from forgetless.strategies import make_strategies
from forgetless.strategies.base import Strategy
from forgetless.strategies.recorder import ParameterRecorder
from forgetless.studies.common import Progress, execute
from forgetless.studies.defaults import TRAJECTORY
from forgetless.validation import check_positive_int

__all__ = [
    "ParameterRecorder",
    "Trajectory",
    "format_trajectory",
    "paths_study",
    "record_trajectory",
    "stored_path",
    "trajectory_configs",
    "trajectory_study",
]


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
    every: int = TRAJECTORY["every"],
    seed: int = 0,
) -> Trajectory:
    """Train ``model`` on ``stream`` with ``strategy`` (see :func:`forgetless.engine.train`)
    and record its parameters every ``every`` steps. ``model`` is trained in place."""
    recorder = ParameterRecorder(every)
    strategies = [*make_strategies(strategy), recorder]
    result = train(stream, model, strategies, fit or FitConfig(progress=False), seed)
    points = torch.stack(recorder.points)
    return Trajectory(points, recorder, result)


def trajectory_configs(
    base: RunConfig,
    strategies: Mapping[str, tuple[str, Mapping[str, Any]]],
    every: int = TRAJECTORY["every"],
) -> dict[str, RunConfig]:
    """One run per label: ``base`` with the strategy and its parameters, on the first two
    tasks, recording its path every ``every`` steps (``path_every``)."""
    check_positive_int("every", every)
    return {
        label: RunConfig.from_dict(
            {
                **base.to_dict(),
                "strategy": name,
                "strategy_params": dict(params),
                "first_tasks": 2,
                "path_every": every,
            }
        )
        for label, (name, params) in strategies.items()
    }


def trajectory_study(
    configs: Mapping[str, RunConfig],
    store: str | Path,
    workers: int = 1,
    backend: str = "local",
    progress: Progress | None = None,
    *,
    resolution: int = TRAJECTORY["resolution"],
    margin: float = 0.25,
    n_examples: int | None = TRAJECTORY["examples"],
    batch_size: int = 2000,
) -> TrajectoryStudy:
    """Run each config (:func:`trajectory_configs`: two tasks, a path recorded) into ``store``
    (runs complete there are reused), read the paths back from the runs' last checkpoints,
    and lay out the losses of both tasks on the paths' common PCA plane.

    Every run starts from the same weights and sees the same batches (the configs differ only
    in the strategy), so the paths share task A exactly when the strategies do nothing during
    the first task (EWC's penalty starts with task B). Under task-incremental learning each
    task's loss is over its own head. The plane is :func:`pca_plane` of all paths stacked,
    through the first strategy's end of task A (``theta_A*``). The loss of each task's test
    set (``n_examples`` of it, drawn from the seed; ``None``: all) is evaluated with
    :func:`~forgetless.analysis.landscape.loss_plane` along the two unit PCA directions (not
    filter-normalised: the plane is the paths' own) on a ``resolution x resolution`` grid
    covering the projected paths plus ``margin`` of their extent on each side.
    """
    from forgetless.experiment import prepare

    if not configs:
        raise ConfigError("configs: give at least one, e.g. {'finetune': RunConfig(...)}")
    check_positive_int("resolution", resolution)
    first = next(iter(configs.values()))
    apart = ("strategy", "strategy_params", "data_dir", "threads", "progress", "log_every")
    for label, config in configs.items():
        if config.path_every is None or config.first_tasks != 2:
            raise ConfigError(
                f"{label}: a trajectory run trains two tasks and records its path "
                "(first_tasks=2, path_every=K; see trajectory_configs)"
            )
        ours, theirs = (
            {k: v for k, v in c.resolved().to_dict().items() if k not in apart}
            for c in (config, first)
        )
        if ours != theirs:
            differ = sorted(k for k in ours if ours[k] != theirs.get(k))
            raise ConfigError(
                f"{label}: the runs of a trajectory study differ only in the strategy (here "
                f"also in {', '.join(differ)}), so that they start from the same weights"
            )
    labels = list(configs)
    results = execute(list(configs.values()), None, store, workers, backend, progress)
    trajectories = {
        label: Trajectory(*stored_path(store, configs[label]), result)
        for label, result in zip(labels, results, strict=True)
    }
    stream, model, _ = prepare(first.resolved())
    settings = {
        "stream": stream.name,
        "tasks": list(stream.task_names),
        "strategies": {k: _strategy_text(c) for k, c in configs.items()},
        "every": first.path_every,
        "seed": first.seed,
        "resolution": resolution,
        "n_examples": n_examples,
    }
    return paths_study(
        trajectories, stream, model, settings, resolution, margin, n_examples, batch_size
    )


def stored_path(store: str | Path, config: RunConfig) -> tuple[torch.Tensor, ParameterRecorder]:
    """The path a complete run of ``config`` recorded (``path_every``), from the last
    checkpoint the store kept: ``([T, P] points, the recorder)``."""
    from forgetless.runs import RunStore
    from forgetless.runs.checkpoint import read_checkpoint
    from forgetless.state import unpack

    runs = RunStore(store)
    run_id = runs.run_id(config)
    path = runs.folder(run_id) / "checkpoints" / "resume.safetensors"
    if config.path_every is None or not path.is_file():
        raise ConfigError(
            f"run {run_id} in {runs.root} kept no path (recorded with path_every and kept with "
            "its weights): use another --store, or delete the run to train it again"
        )
    snapshot, _ = read_checkpoint(path)
    recorder = ParameterRecorder(config.path_every)
    vars(recorder).update(unpack(snapshot.strategies[-1], None, torch.device("cpu")))
    return torch.stack(recorder.points), recorder


def _strategy_text(config: RunConfig) -> str:
    """The strategies with every parameter, defaults too: ``[EWC(lam=10.0, ...)]``."""
    return str(make_strategies(config.strategy, config.strategy_params))


def paths_study(
    trajectories: Mapping[str, Trajectory],
    stream: Stream,
    model: nn.Module,
    settings: Mapping[str, Any],
    resolution: int = TRAJECTORY["resolution"],
    margin: float = 0.25,
    n_examples: int | None = TRAJECTORY["examples"],
    batch_size: int = 2000,
) -> TrajectoryStudy:
    """The study of recorded paths on the first two tasks of ``stream`` (see
    :func:`trajectory_study`); ``model`` is any model of the paths' architecture (its
    parameters are replaced, its buffers kept)."""
    seed = int(settings.get("seed", 0))
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
    return TrajectoryStudy(
        trajectories,
        plane,
        coords,
        surfaces,
        distances,
        plane_distances,
        fisher_distances,
        task_a_loss,
        dict(settings),
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
