"""The loss-of-plasticity study (Dohare et al. 2024): an MLP trained on a long stream of permuted
tasks, each its own pixel permutation and its own draw of images, with each strategy; after
every task the accuracy reached on it, the dormant units, the hidden layers' effective rank and
the weight magnitude.

The runs are RunConfigs on a ``permuted-SOURCE-long`` scenario, executed through the run store
and the sweep runner (:func:`~forgetless.studies.common.execute`); the measures are taken
afterwards from the weights the store kept after each task
(:func:`~forgetless.analysis.plasticity.plasticity_record`). A second call with the same store
trains nothing.

Importing this module imports no torch (the reproduce catalogue declares its protocol with
:class:`PlasticitySettings`); running and measuring do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgetless.errors import ConfigError
from forgetless.experiment import RunConfig, config_hash
from forgetless.labels import strategy_text
from forgetless.validation import check_positive_int

if TYPE_CHECKING:
    from forgetless.analysis.plasticity import PlasticityRun

#: The data sets a long permuted stream is drawn from, and its scenario.
SCENARIOS = {
    "digits": "permuted-digits-long",
    "mnist": "permuted-mnist-long",
    "fashion-mnist": "permuted-fashion-mnist-long",
}


@dataclass(frozen=True)
class PlasticitySettings:
    """The protocol of a plasticity study (the defaults are ``forgetless plasticity``'s).

    Attributes:
        data: the source data set (a key of :data:`SCENARIOS`); ``data_dir`` where its files are.
        tasks: tasks in the stream; ``train_per_task`` and ``test_per_task``: images each task
            draws.
        hidden: the MLP's hidden sizes.
        lr, batch_size, epochs: plain SGD's step size, batch and passes per task.
        probe: test inputs of each task the unit measures are taken on.
    """

    data: str = "mnist"
    data_dir: str | None = None
    tasks: int = 100
    train_per_task: int = 6000
    test_per_task: int = 500
    hidden: tuple[int, ...] = (100, 100, 100)
    lr: float = 0.3
    batch_size: int = 16
    epochs: int = 1
    probe: int = 2000

    def __post_init__(self) -> None:
        if self.data not in SCENARIOS:
            raise ConfigError(
                f"a plasticity study draws from one of {', '.join(SCENARIOS)}, got {self.data!r}"
            )
        check_positive_int("probe", self.probe)

    def settings(self, strategy: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The :class:`~forgetless.experiment.RunConfig` fields of one strategy's run (no
        seed): what :meth:`config` builds, as plain data."""
        return {
            "scenario": SCENARIOS[self.data],
            "data_dir": self.data_dir,
            "n_tasks": self.tasks,
            "train_size": self.train_per_task,
            "test_size": self.test_per_task,
            "model": "mlp",
            "hidden": list(self.hidden),
            "strategy": strategy,
            "strategy_params": dict(params),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": "sgd",
            "lr": self.lr,
            "momentum": 0.0,
        }

    def config(self, strategy: str, params: Mapping[str, Any], seed: int = 0) -> RunConfig:
        """The run of one strategy."""
        return RunConfig(**self.settings(strategy, params), seed=seed)


def plasticity_study(
    settings: PlasticitySettings,
    strategies: Sequence[tuple[str, Mapping[str, Any]]],
    seeds: Sequence[int],
    store: str | Path,
    workers: int = 1,
    backend: str = "local",
    progress: Callable[[int, int, float], None] | None = None,
) -> list[PlasticityRun]:
    """Run each ``(strategy, params)`` once per seed into ``store`` (runs already complete
    there are reused) and measure each run after every task from its stored weights.

    Returns:
        One :class:`~forgetless.analysis.plasticity.PlasticityRun` per (seed, strategy), seeds
        outermost, as ``forgetless plasticity`` prints them.
    """
    from forgetless.studies.common import execute, run_configs

    if not strategies:
        raise ConfigError("give at least one strategy, e.g. ('finetune', {})")
    configs = [settings.config(name, params) for name, params in strategies]
    results = execute(configs, seeds, store, workers, backend, progress)
    by_hash = {config_hash(c): r for c, r in zip(run_configs(configs, seeds), results, strict=True)}
    runs = []
    for seed in seeds:
        for name, params in strategies:
            config = settings.config(name, params, seed)
            runs.append(plasticity_run(settings, config, by_hash[config_hash(config)], store))
    return runs


def plasticity_run(
    settings: PlasticitySettings, config: RunConfig, result: Any, store: str | Path
) -> PlasticityRun:
    """The records of one stored run: after each task ``i``, ``R[i, i]``, its last epoch's
    mean training loss, and the unit measures of the model the store kept after it on the
    first ``probe`` test inputs of task ``i``."""
    import torch

    from forgetless.analysis.plasticity import PlasticityRun, plasticity_record
    from forgetless.strategies import make_strategies
    from forgetless.studies.common import stored_models

    strategies = make_strategies(config.strategy, config.strategy_params)
    stream, models = stored_models(store, config)
    fit = config.fit_config()
    run = PlasticityRun(
        strategy=result.strategy,
        params={k: v for s in strategies for k, v in s.params().items()},
        seed=config.seed,
        settings={
            "stream": stream.name,
            "tasks": len(stream),
            "train_per_task": len(stream.tasks[0].train),
            "test_per_task": len(stream.tasks[0].test),
            "hidden": list(settings.hidden),
            "probe": settings.probe,
            "fit": {
                k: v for k, v in asdict(fit).items() if k not in ("progress", "device", "threads")
            },
        },
        seconds=float(result.timings.get("total", 0.0)),
    )
    matrix = result.accuracy_matrix
    for i, (task, model) in enumerate(zip(stream.tasks, models, strict=True)):
        losses = [e["loss"] for e in result.losses if e["task"] == i]
        probe = task.test.subset(torch.arange(min(settings.probe, len(task.test))))
        record = plasticity_record(
            i, model, probe, matrix[i][i], losses[-1] if losses else math.nan
        )
        run.records.append(record)
    return run


def format_plasticity(
    runs: Sequence[PlasticityRun], strategies: Sequence[tuple[str, Mapping[str, Any]]]
) -> str:
    """The table ``forgetless plasticity`` prints for the runs of :func:`plasticity_study`
    (``strategies`` as given to it): per run, the mean over its first and last tenth of tasks
    of the accuracy, the dormant share, the effective rank and ``|w|``."""
    head = f"{'strategy':<40} {'seed':>4} {'acc first':>9} {'acc last':>8} {'dormant':>13} "
    lines = [head + f"{'erank':>13} {'|w|':>13} {'seconds':>7}"]
    for n, run in enumerate(runs):
        k = max(1, len(run.records) // 10)

        def ends(key: str, scale: float = 1.0, run=run, k=k) -> tuple[float, float]:
            values = run.series(key)
            return scale * sum(values[:k]) / k, scale * sum(values[-k:]) / k

        acc, dormant = ends("accuracy", 100), ends("dormant", 100)
        rank, weight = ends("effective_rank"), ends("weight_magnitude")
        label = strategy_text(*strategies[n % len(strategies)])
        lines.append(
            f"{label:<40} {run.seed:>4} {acc[0]:>9.1f} {acc[1]:>8.1f} "
            f"{dormant[0]:>5.1f} -> {dormant[1]:>4.1f} {rank[0]:>5.1f} -> {rank[1]:>4.1f} "
            f"{weight[0]:>5.3f} -> {weight[1]:.3f} {run.seconds:>7.0f}"
        )
    tasks = len(runs[0].records) if runs else 0
    lines.append(f"(first and last {max(1, tasks // 10)} tasks; dormant in % of hidden units)")
    return "\n".join(lines) + "\n"
