"""What every study shares: its runs executed through the one sweep runner into a run store,
and the models those runs stored after each task, read back for the analysis."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

from forgetless.errors import ConfigError
from forgetless.experiment import RunConfig, config_hash
from forgetless.result import Result
from forgetless.scenarios.stream import Stream

#: ``progress(finished, total, seconds_left)``, called after each run (see ``run_sweep``).
Progress = Callable[[int, int, float], None]


def execute(
    configs: Sequence[RunConfig],
    seeds: Sequence[int] | None,
    store: str | Path,
    workers: int = 1,
    backend: str = "local",
    progress: Progress | None = None,
    keep_weights: bool = True,
) -> list[Result]:
    """Run every (config, seed) through :func:`forgetless.sweeps.run_sweep` into ``store``
    and return the Results in the order of :func:`run_configs` (``seeds`` ``None``: each
    config once, with its own seed).

    Raises:
        ConfigError: when any run failed (the others stay in the store).
    """
    from forgetless.runs import RunStore
    from forgetless.sweeps import run_sweep

    sweep = _sweep(configs, seeds)
    report = run_sweep(sweep, store, workers, backend, progress=progress, keep_weights=keep_weights)
    if report.failed:
        details = "; ".join(f"{run_id}: {error}" for run_id, error in report.failed[:3])
        raise ConfigError(f"{len(report.failed)} of {report.total} runs failed ({details})")
    runs = RunStore(store)
    return [runs.result(runs.run_id(config)) for config in sweep.runs()]


def run_configs(configs: Sequence[RunConfig], seeds: Sequence[int] | None) -> list[RunConfig]:
    """The runs :func:`execute` makes of ``configs`` and ``seeds``, in its order: each config
    once per seed (duplicates once), or with its own seed when ``seeds`` is ``None``."""
    return _sweep(configs, seeds).runs()


def _sweep(configs: Sequence[RunConfig], seeds: Sequence[int] | None):
    from forgetless.sweeps import Sweep

    if seeds is not None:
        return Sweep(list(configs), list(seeds))

    class _OwnSeeds(Sweep):
        def runs(self) -> list[RunConfig]:
            out, seen = [], set()
            for config in self.configs:
                key = config_hash(config)
                if key not in seen:
                    seen.add(key)
                    out.append(RunConfig.from_dict(config.to_dict()))
            return out

    return _OwnSeeds(list(configs), [])


def stored_models(store: str | Path, config: RunConfig) -> tuple[Stream, list[nn.Module]]:
    """The stream of a complete run of ``config`` in ``store`` and its model after each task,
    rebuilt from the config (:func:`forgetless.experiment.prepare`) and loaded with the
    weights the store kept (``model-task-K.safetensors``), in evaluation mode.

    Only whole models: a run whose strategy changes the model's structure or keeps only part
    of it (adapters) is refused with the reason.
    """
    from forgetless.experiment import prepare
    from forgetless.runs import RunStore, load_weights

    runs = RunStore(store)
    run_id = runs.run_id(config)
    folder = runs.folder(run_id) / "checkpoints"
    stream, model, _ = prepare(config.resolved())
    phases = config.phases(len(stream)) or range(len(stream))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    models = []
    for k in range(1, len(phases) + 1):
        path = folder / f"model-task-{k}.safetensors"
        if not path.is_file():
            raise ConfigError(
                f"run {run_id} in {runs.root} kept no weights after task {k} (stored with "
                "--no-weights?): the study reads its models; use another --store, or delete "
                "the run to train it again"
            )
        weights = load_weights(path)
        if set(weights) != set(initial):
            raise ConfigError(
                f"run {run_id}: the weights stored after task {k} are not the model's "
                f"({config.strategy} changes the model or keeps part of it); this study "
                "reads whole models of a fixed structure"
            )
        copy = _fresh(model, initial)
        copy.load_state_dict(weights)
        models.append(copy.eval())
    return stream, models


def _fresh(model: nn.Module, state: dict) -> nn.Module:
    import copy

    fresh = copy.deepcopy(model)
    fresh.load_state_dict(state)
    return fresh
