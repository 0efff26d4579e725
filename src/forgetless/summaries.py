"""Summaries of Results: pure functions from stored runs to tables and fronts.

Everything here reads :class:`~forgetless.result.Result` objects (or their matrices) and
nothing else: no training, no store, no torch. The sweep summary (mean and spread over seeds
per group of runs, :func:`summarise`, :func:`format_summary`) and the stability-plasticity
frontier (:func:`stability_plasticity`, :func:`pareto_front`, :func:`hypervolume`,
:func:`build_frontier`, :func:`frontiers_in`, :func:`format_frontiers`) live here so that
reports (:mod:`forgetless.report`) can use them without importing what runs experiments.

The stability-plasticity frontier: a strategy's strength swept on a log scale, each setting
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
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from forgetless.errors import ConfigError
from forgetless.labels import QUIET_FIELDS, flat_settings, settings_text, sort_key, varying_keys
from forgetless.result import Result

# --- the sweep summary -----------------------------------------------------------------------

METRICS = ("acc", "bwt", "fwt", "forgetting")


def summarise(results: Iterable[Any]) -> list[dict[str, Any]]:
    """Mean, sample std and SEM over seeds of each metric, per group of runs that differ only
    in their seed. Each row: ``scenario``, ``protocol``, ``strategy``, ``settings`` (the other
    config fields that vary within the results, as text), ``n``, then ``<metric>_mean``,
    ``<metric>_std``, ``<metric>_sem`` in percent (None where a metric is undefined, and the
    std and SEM None for one seed). Rows come in reading order: scenario, protocol, strategy,
    then the settings that vary, numbers by value (``lam=10, 100, 1000``)."""
    results = list(results)
    groups: dict[str, list[Any]] = {}
    configs = []
    for result in results:
        config = {k: v for k, v in result.config.items() if k != "seed" and k not in QUIET_FIELDS}
        configs.append(config)
    varying = _varying_keys(configs)
    for result, config in zip(results, configs, strict=True):
        groups.setdefault(_group_key(config), []).append((result, config))
    by_value = varying_keys(configs)

    def reading_order(members: list[tuple[Any, dict[str, Any]]]) -> tuple:
        first, config = members[0]
        head = (first.scenario, first.protocol, first.strategy)
        return (head, sort_key(config, by_value))

    rows = []
    for members in sorted(groups.values(), key=reading_order):
        first, config = members[0]
        settings = _settings_text(config, varying)
        row: dict[str, Any] = {
            "scenario": first.scenario,
            "protocol": first.protocol,
            "strategy": first.strategy,
            "settings": settings,
            "n": len(members),
        }
        for metric in METRICS:
            values = [r.metrics[metric] for r, _ in members]
            values = [100 * v for v in values if v is not None]
            if not values:
                row.update({f"{metric}_mean": None, f"{metric}_std": None, f"{metric}_sem": None})
                continue
            # One seed has no spread to show: None (n/a), not a misleading 0.
            std = statistics.stdev(values) if len(values) > 1 else None
            row[f"{metric}_mean"] = statistics.fmean(values)
            row[f"{metric}_std"] = std
            row[f"{metric}_sem"] = None if std is None else std / math.sqrt(len(values))
        rows.append(row)
    return rows


def _group_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def _varying_keys(configs: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for c in configs for k in c} - {"scenario", "protocol", "strategy"})
    varying = []
    for key in keys:
        if key == "strategy_params":
            continue
        if len({repr(c.get(key)) for c in configs}) > 1:
            varying.append(key)
    return varying


def _settings_text(config: dict[str, Any], varying: list[str]) -> str:
    def text(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    parts = [f"{k}={text(v)}" for k, v in sorted(config.get("strategy_params", {}).items())]
    parts += [f"{k}={text(config.get(k))}" for k in varying]
    return " ".join(parts)


def mean_and_spread(mean: float | None, std: float | None) -> str:
    """``51.6 ± 1.2``; ``51.6 ± n/a`` for one seed (no spread measured); ``n/a`` without a
    mean."""
    if mean is None:
        return "n/a"
    return f"{mean:.1f} ± " + ("n/a" if std is None else f"{std:.1f}")


def format_summary(rows: list[dict[str, Any]], fmt: str = "table") -> str:
    """The summary as a terminal ``table``, ``csv`` or ``markdown``."""
    if fmt not in ("table", "csv", "markdown"):
        raise ConfigError(f"format must be table, csv or markdown, got {fmt!r}")
    head = ["scenario", "protocol", "strategy", "settings", "n"]
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        names = head + [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "sem")]
        writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row[k] is None else row[k]) for k in names})
        return out.getvalue()

    def cell(row, metric):
        return mean_and_spread(row[f"{metric}_mean"], row[f"{metric}_std"])

    labels = head + [m.upper() if m != "forgetting" else "forgetting" for m in METRICS]
    table = [[str(row[k]) for k in head] + [cell(row, m) for m in METRICS] for row in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(labels) + " |", "|" + "---|" * len(labels)]
        lines += ["| " + " | ".join(r) + " |" for r in table]
        return "\n".join(lines) + "\n"
    widths = [max(len(x) for x in col) for col in zip(labels, *table, strict=True)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(labels, widths, strict=True))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) for r in table]
    lines.append(
        "(mean ± sample std over seeds, in points; n/a: one seed, no spread; CSV also gives the "
        "SEM)"
    )
    return "\n".join(lines) + "\n"


# --- the stability-plasticity frontier ------------------------------------------------------


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
