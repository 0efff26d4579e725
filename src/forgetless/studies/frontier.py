"""The stability-plasticity frontier study: a strategy's strength swept on a log scale, its runs
executed through the run store and the sweep runner, then placed by
:func:`forgetless.summaries.build_frontier` (stability against plasticity, the Pareto front and
its hypervolume)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from forgetless.errors import ConfigError
from forgetless.experiment import RunConfig
from forgetless.studies.common import execute
from forgetless.summaries import Frontier, build_frontier, format_frontiers

__all__ = [
    "ALIASES",
    "AS_GIVEN",
    "check_task_ids",
    "format_frontiers",
    "frontier_configs",
    "parse_range",
    "run_frontiers",
]

# Names the issue and the papers use for strengths, mapped to our parameter names.
ALIASES = {"lambda": "lam", "buffer": "buffer_size", "memory": "buffer_size"}
#: The range of a strategy placed once, at its settings, with nothing swept (``pnn`` has no
#: strength): its frontier is one point. Its parameter is the empty string.
AS_GIVEN = "none"


def parse_range(text: str, points: int = 7) -> tuple[str, list[float]]:
    """``"lambda=1e0:1e6"`` -> ``("lam", [1, 10, ..., 1e6])``: ``points`` values spaced evenly
    on a log scale, ends included; ``"c=0.1,1,10"`` lists values; ``"buffer=50:5000"`` gives
    whole numbers (buffer sizes). Aliases: ``lambda`` -> ``lam``, ``buffer`` -> ``buffer_size``.
    ``"none"`` -> ``("", [])``: the strategy at its settings, one point (a method without a
    strength to sweep, such as ``pnn``).
    """
    if text.strip().lower() == AS_GIVEN:
        return "", []
    match = re.fullmatch(r"\s*([A-Za-z_][\w-]*)\s*=\s*(.+)", text)
    if not match:
        raise ConfigError(f"a range is NAME=LOW:HIGH or NAME=V1,V2,..., got {text!r}")
    name, spec = ALIASES.get(match[1], match[1]).replace("-", "_"), match[2]
    if ":" in spec:
        low, high = _numbers(spec.split(":"), spec, name)
        if not 0 < low < high:
            raise ConfigError(f"a log range needs 0 < LOW < HIGH, got {spec!r} for {name}")
        if points < 2:
            raise ConfigError(f"a range needs at least 2 points, got {points}")
        step = (math.log10(high) - math.log10(low)) / (points - 1)
        values = [10 ** (math.log10(low) + k * step) for k in range(points)]
        if not _whole(name):
            values = [float(f"{v:.3g}") for v in values]  # 3 digits: readable labels
    else:
        values = _numbers([v for v in spec.split(",") if v.strip()], spec, name)
    if _whole(name):
        values = [float(round(v)) for v in values]
    return name, sorted(set(values))


def _numbers(texts: Sequence[str], spec: str, name: str) -> list[float]:
    try:
        return [float(v) for v in texts]
    except ValueError:
        raise ConfigError(f"range values must be numbers, got {spec!r} for {name}") from None


def _whole(name: str) -> bool:
    """Whether a parameter counts things (buffer sizes, samples), so its values are rounded."""
    return name.endswith(("size", "samples")) or name in ("n", "k")


def frontier_configs(
    base: RunConfig, strategy: str, parameter: str, values: Iterable[float], seeds: Iterable[int]
) -> list[RunConfig]:
    """One run config per (value, seed): ``base`` with the strategy and its parameter set; with
    ``parameter`` empty (range ``none``), one per seed with the base's parameters."""
    from forgetless.strategies import coerce_params

    configs = []
    if not parameter:
        params = coerce_params(strategy, base.strategy_params)
        data = {**base.to_dict(), "strategy": strategy, "strategy_params": params}
        return [RunConfig.from_dict({**data, "seed": seed}) for seed in seeds]
    for value in values:
        params = coerce_params(strategy, {**base.strategy_params, parameter: value})
        for seed in seeds:
            data = {**base.to_dict(), "strategy": strategy, "strategy_params": params}
            configs.append(RunConfig.from_dict({**data, "seed": seed}))
    return configs


def run_frontiers(
    base: RunConfig,
    ranges: Sequence[tuple[str, str, Sequence[float]]],
    seeds: Sequence[int],
    store: str | Path,
    workers: int = 1,
    backend: str = "local",
    progress: Callable[[int, int, float], None] | None = None,
    keep_weights: bool = True,
) -> list[Frontier]:
    """Run every (strategy, value, seed) of ``ranges`` (``(strategy, parameter, values)``
    each) as a sweep into the run store at ``store`` (runs already complete there are reused,
    so a stopped frontier restarts where it was), then build each strategy's frontier.
    ``keep_weights=False``: the runs keep no weights once complete (see
    :class:`~forgetless.runs.RunStore`).

    Raises:
        ConfigError: when any run failed (the others stay in the store).
    """
    check_task_ids(base, [strategy for strategy, _, _ in ranges])
    configs = []
    for strategy, parameter, values in ranges:
        configs += frontier_configs(base, strategy, parameter, values, [base.seed])
    results = execute(configs, seeds, store, workers, backend, progress, keep_weights)
    return [build_frontier(results, s, p) for s, p, _ in ranges]


def check_task_ids(base: RunConfig, strategies: Sequence[str]) -> None:
    """Refuse, before any run, a strategy that answers by the task id (``pnn``, ``packnet``,
    ``hat``, ``hypermask``) in a frontier whose protocol does not give it: every run would
    fail the same way."""
    from forgetless.scenarios.presets import PRESETS
    from forgetless.strategies import STRATEGIES

    protocol = base.protocol
    if protocol is None and base.scenario in PRESETS:
        protocol = PRESETS[base.scenario].protocol.value
    if protocol in (None, "task"):
        return
    for spec in strategies:
        classes = [STRATEGIES.get(name.strip()) for name in spec.split("+")]
        if any(c is not None and c.infers_task for c in classes):
            continue
        users = [c.name for c in classes if c is not None and c.needs_task_id]
        if users:
            raise ConfigError(
                f"{', '.join(users)} needs the task id at test time, which the "
                f"{protocol}-incremental protocol of this frontier does not give: use "
                "--protocol task (and sweep the other strategies under it too, so that the "
                "points compare)"
            )
