"""The landscape study: train a scenario's first two tasks, then look at the loss around the
task-A solution (1-D curves, a plane, the sharpness) and on the straight line to the task-B
solution.

The run is a RunConfig with ``first_tasks = 2``, executed through the run store and the sweep
runner; the two solutions are the weights the store kept after each task, and the measures
are :func:`~forgetless.analysis.landscape_study.landscape_study`'s (pure).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from forgetless.analysis.landscape_study import LandscapeStudy, landscape_study
from forgetless.analysis.trajectory import task_subset
from forgetless.experiment import RunConfig, config_hash
from forgetless.result import Result
from forgetless.scenarios.stream import Protocol, Stream
from forgetless.studies.common import Progress, execute, run_configs, stored_models
from forgetless.studies.defaults import LANDSCAPE
from forgetless.validation import check_positive_int


@dataclass
class TaskSolutions:
    """A run of a scenario's first tasks, with the model after each.

    Attributes:
        stream: the tasks trained.
        models: ``models[i]`` is the network after task ``i`` (in eval mode).
        result: the run's result.
        config: the run's config.
    """

    stream: Stream
    models: list[nn.Module]
    result: Result
    config: RunConfig


def solve_tasks(
    configs: Sequence[RunConfig],
    store: str | Path,
    tasks: int | None = 2,
    workers: int = 1,
    backend: str = "local",
    progress: Progress | None = None,
) -> list[TaskSolutions]:
    """Run each config on the first ``tasks`` tasks of its scenario (all if ``None``) into
    ``store`` (runs complete there are reused), then read the model after each task back."""
    if tasks is not None:
        check_positive_int("tasks", tasks)
    configs = [
        config if tasks is None else RunConfig.from_dict({**config.to_dict(), "first_tasks": tasks})
        for config in configs
    ]
    results = execute(configs, None, store, workers, backend, progress)
    found = {
        config_hash(r): result
        for r, result in zip(run_configs(configs, None), results, strict=True)
    }
    solved = []
    for config in configs:
        stream, models = stored_models(store, config)
        solved.append(TaskSolutions(stream, models, found[config_hash(config)], config))
    return solved


def landscape_run(
    config: RunConfig,
    store: str | Path,
    examples: int | None = LANDSCAPE["examples"],
    workers: int = 1,
    backend: str = "local",
    progress: Progress | None = None,
    plane_progress: bool = False,
    **options: Any,
) -> tuple[LandscapeStudy, TaskSolutions]:
    """The landscape of ``config``'s first two tasks: the run through the store, then
    :func:`landscape_study` on ``examples`` test examples of each task (drawn from the seed;
    ``None``: all), with ``options`` (``directions``, ``span``, ``resolution``, ``plane``, ...)
    passed on. ``progress`` follows the run; ``plane_progress`` draws a bar of the plane's
    points on a terminal. Under task-incremental learning each task's loss is over its own head."""
    (solved,) = solve_tasks([config], store, 2, workers, backend, progress)
    tasks = solved.stream.tasks
    heads = [t.units if solved.stream.protocol is Protocol.TASK else None for t in tasks]
    measures = {k: v for k, v in LANDSCAPE.items() if k not in ("examples", "plane_resolution")}
    study = landscape_study(
        solved.models[0],
        task_subset(tasks[0].test, examples, config.seed),
        solved.models[1],
        task_subset(tasks[1].test, examples, config.seed),
        units_a=heads[0],
        units_b=heads[1],
        seed=config.seed,
        progress=plane_progress,
        **{**measures, **options},
    )
    return study, solved


def format_landscape(study: LandscapeStudy, solved: TaskSolutions) -> str:
    """The lines ``forgetless landscape`` prints: the tasks, the loss at the A solution, the
    basin widths, the sharpness, the plane's size and the A-to-B line."""
    tasks = solved.stream.tasks
    middle = len(study.lines.alphas) // 2
    widths = ", ".join(f"{w:.3f}" for w in study.widths)
    lines = [
        f"{solved.stream.name}: task A {tasks[0].name!r}, task B {tasks[1].name!r}",
        f"loss at the A solution: {float(study.lines.loss[0, middle]):.4f}",
        f"basin widths (loss within +{study.settings['rise']:g} of the solution's): {widths}",
    ]
    if study.sharpness is not None:
        e = study.sharpness
        note = "" if e.converged else " (not converged)"
        lines.append(
            f"sharpness (top Hessian eigenvalue): {e.value:.4g} after {e.iterations} HVPs{note}"
        )
    if study.plane is not None:
        lines.append(f"2-D plane: {study.plane.loss.numel()} points in {study.plane.seconds:.1f} s")
    for label, line in study.interpolation.items():
        i0, i1 = (int((line.alphas - v).abs().argmin()) for v in (0.0, 1.0))
        lines.append(
            f"A->B line, {label}: loss {line.loss[i0]:.3f} at A, {line.loss[i1]:.3f} at B, "
            f"max {line.loss[i0 : i1 + 1].max():.3f} between"
        )
    return "\n".join(lines) + "\n"
