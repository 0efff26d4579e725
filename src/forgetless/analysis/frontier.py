"""The stability-plasticity frontier: a strategy's strength swept on a log scale, each setting
placed by the accuracy it keeps on old tasks against the accuracy it reaches on new ones.

Stronger consolidation (a larger EWC lambda, a larger buffer) moves a strategy along a curve
from plastic (learns the new task, forgets the old) to stable (keeps the old, learns less). The
settings no other setting beats on both axes form the strategy's Pareto front, and the area that
front dominates (its hypervolume) summarises the whole trade-off in one number: a method that is
better at every trade-off has the larger area.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from forgetless.errors import ConfigError
from forgetless.experiment import RunConfig
from forgetless.result import Result

# Names the issue and the papers use for strengths, mapped to our parameter names.
ALIASES = {"lambda": "lam", "buffer": "buffer_size", "memory": "buffer_size"}
#: The range of a strategy placed once, at its settings, with nothing swept (``pnn`` has no
#: strength): its frontier is one point. Its parameter is the empty string.
AS_GIVEN = "none"


def stability_plasticity(matrix: Sequence[Sequence[float]]) -> tuple[float, float]:
    """``(stability, plasticity)`` of one run from its accuracy matrix ``R`` (``T`` tasks).

    stability = mean_{j < T-1} R[T-1, j]   (accuracy kept on the old tasks at the end)
    plasticity = mean_{1 <= i < T} R[i, i] (accuracy reached on each new task, just learnt)

    The first task is left out of plasticity: every method learns it from scratch, so it says
    nothing about what consolidation costs. On two tasks A, B this is ``(R[B, A], R[B, B])``.
    """
    T = len(matrix)
    if T < 2 or any(len(row) < T for row in matrix):
        raise ConfigError(
            f"the frontier needs a square accuracy matrix of at least 2 tasks, got {T} rows"
        )
    stability = sum(matrix[T - 1][j] for j in range(T - 1)) / (T - 1)
    plasticity = sum(matrix[i][i] for i in range(1, T)) / (T - 1)
    return stability, plasticity


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (both coordinates maximised), ordered
    by the first coordinate. A point is dominated when another is at least as good on both
    axes and better on one; equal points are all kept."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front: list[int] = []
    best_y = -math.inf
    for i in order:
        x, y = points[i]
        if y > best_y:
            front.append(i)
            best_y = y
        elif front and points[front[-1]] == (x, y):
            front.append(i)  # a duplicate of a front point is on the front too
    return sorted(front, key=lambda i: points[i])


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float] = (0, 0)):
    """The area dominated by ``points`` (maximising both coordinates) and bounded below by
    ``reference``: the union of the rectangles ``[ref_x, x] x [ref_y, y]``. With accuracies in
    [0, 1] and the reference (0, 0), a method at (1, 1) scores 1. Points below the reference on
    either axis add nothing."""
    rx, ry = reference
    kept = [(x, y) for x, y in points if x > rx and y > ry]
    area, top = 0.0, ry
    for x, y in sorted(kept, key=lambda p: (-p[0], -p[1])):
        if y > top:
            area += (x - rx) * (y - top)
            top = y
    return area


@dataclass
class FrontierPoint:
    """One setting of one strategy, over seeds (fractions in [0, 1])."""

    strategy: str
    parameter: str
    #: None for a strategy placed at its settings (range ``none``)
    value: float | None
    seeds: list[int]
    stability: float
    plasticity: float
    stability_std: float
    plasticity_std: float
    acc: float


@dataclass
class Frontier:
    """A strategy's points, its Pareto front (indices into ``points``) and its hypervolume."""

    strategy: str
    parameter: str
    points: list[FrontierPoint]
    front: list[int] = field(default_factory=list)
    hypervolume: float = 0.0
    #: The other settings of its runs where they differ from other frontiers' (``lr=0.05``):
    #: runs that differ in loop settings are frontiers of their own, never points of one.
    settings: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    from forgetless.runs import RunStore
    from forgetless.sweeps import Sweep, run_sweep

    check_task_ids(base, [strategy for strategy, _, _ in ranges])
    configs = []
    for strategy, parameter, values in ranges:
        configs += frontier_configs(base, strategy, parameter, values, [base.seed])
    report = run_sweep(
        Sweep(configs, list(seeds)),
        store,
        workers,
        backend,
        progress=progress,
        keep_weights=keep_weights,
    )
    if report.failed:
        details = "; ".join(f"{run_id}: {error}" for run_id, error in report.failed[:3])
        raise ConfigError(f"{len(report.failed)} frontier runs failed ({details})")
    runs = RunStore(store)
    results = [runs.result(run_id) for run_id in sorted(report.done + report.skipped)]
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


def build_frontier(results: Iterable[Result], strategy: str, parameter: str) -> Frontier:
    """Group ``results`` of ``strategy`` by the value of ``parameter``, average stability and
    plasticity over seeds, and find the Pareto front and hypervolume of the means. With
    ``parameter`` empty (range ``none``), all the strategy's runs are one point."""
    groups: dict[float | None, list[Result]] = {}
    for result in results:
        params = (result.config or {}).get("strategy_params", {})
        if result.strategy != strategy:
            continue
        if not parameter:
            groups.setdefault(None, []).append(result)
        elif parameter in params:
            groups.setdefault(float(params[parameter]), []).append(result)
    if not groups:
        raise ConfigError(f"no runs of {strategy!r} with a value of {parameter!r} to place")
    points = []
    for value in sorted(groups, key=lambda v: -math.inf if v is None else v):
        runs = sorted(groups[value], key=lambda r: r.seed)
        pairs = [stability_plasticity(r.accuracy_matrix) for r in runs]
        s, p = [a for a, _ in pairs], [b for _, b in pairs]
        points.append(
            FrontierPoint(
                strategy=strategy,
                parameter=parameter,
                value=value,
                seeds=[r.seed for r in runs],
                stability=statistics.fmean(s),
                plasticity=statistics.fmean(p),
                stability_std=statistics.stdev(s) if len(s) > 1 else 0.0,
                plasticity_std=statistics.stdev(p) if len(p) > 1 else 0.0,
                acc=statistics.fmean(r.metrics["acc"] for r in runs),
            )
        )
    coords = [(q.stability, q.plasticity) for q in points]
    front = pareto_front(coords)
    return Frontier(
        strategy=strategy,
        parameter=parameter,
        points=points,
        front=front,
        hypervolume=hypervolume([coords[i] for i in front]),
    )


def frontiers_in(results: Iterable[Result], min_settings: int = 3) -> list[Frontier]:
    """The frontiers a set of runs holds: for each (scenario, strategy), if exactly one numeric
    strategy parameter takes at least ``min_settings`` values among its runs (a strength
    sweep), that parameter's frontier. Used by reports to draw one when the runs allow."""
    from forgetless.labels import flat_settings, settings_text, varying_keys

    results = [r for r in results if r.num_tasks >= 2 and len(r.accuracy_matrix) == r.num_tasks]
    configs = [r.config or {} for r in results]
    params = {k for c in configs for k in (c.get("strategy_params") or {})}
    # Loop, model and scenario settings that differ: runs apart in any of them are not points
    # of one frontier.
    apart = [k for k in varying_keys(configs, exclude=("seed",)) if k not in params]
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for result, config in zip(results, configs, strict=True):
        flat = flat_settings(config)
        key = json.dumps([flat.get(k) for k in apart], default=str)
        groups.setdefault((result.scenario, result.strategy, key), []).append(result)
    found = []
    for (_, strategy, _), members in groups.items():
        values: dict[str, set[float]] = {}
        for result in members:
            for key, value in (result.config or {}).get("strategy_params", {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    values.setdefault(key, set()).add(float(value))
        swept = [key for key, seen in values.items() if len(seen) >= min_settings]
        if len(swept) == 1:
            frontier = build_frontier(members, strategy, swept[0])
            shown = [k for k in apart if k not in ("scenario", "protocol", "strategy")]
            frontier.settings = settings_text(members[0].config or {}, shown)
            found.append(frontier)
    return found


def format_frontiers(frontiers: Sequence[Frontier]) -> str:
    """A plain-text table: one line per setting, a star on the Pareto front, then each
    strategy's hypervolume."""
    lines = [f"{'strategy':<12}{'setting':<22}{'stability':>10}{'plasticity':>11}{'ACC':>7}  front"]
    for frontier in frontiers:
        for k, q in enumerate(frontier.points):
            setting = f"{q.parameter}={q.value:g}" if q.parameter else "as given"
            mark = "*" if k in frontier.front else ""
            lines.append(
                f"{q.strategy:<12}{setting:<22}{100 * q.stability:>10.1f}"
                f"{100 * q.plasticity:>11.1f}{100 * q.acc:>7.1f}  {mark}"
            )
    lines.append("")
    for frontier in frontiers:
        lines.append(f"hypervolume of {frontier.strategy}: {frontier.hypervolume:.4f}")
    return "\n".join(lines) + "\n"
