"""The tables of BENCHMARKS.md, rebuilt from an entry's runs (pure functions, no torch).

An entry's ``tables`` are functions of the :class:`~forgetless.reproduce.entry.Reproduced`
runs to a :class:`~forgetless.reproduce.entry.Table`. :func:`runs_table` makes the common
shape, one row per run and one :class:`Column` per measure (ACC, BWT, task-IL ACC, the values
per seed, the published figure, ours - published); :func:`article_table` and
:func:`grid_table` make the seed articles' and a buffer grid's.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from forgetless.reproduce.entry import Reproduced, Table

#: ``cell(reproduced, run label) -> text``: one column's value for one run.
Cell = Callable[[Reproduced, str], str]


def spread(values: Sequence[float], digits: int = 2) -> str:
    """``94.31 ± 1.60``: the mean and sample std of per-seed values (the mean alone for one)."""
    if not values:
        return "n/a"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def seeds_caption(reproduced: Reproduced, what: str = "") -> str:
    """``<what>; mean ± sample std over seeds 0, 1, 2.`` (``one seed, 0`` for one)."""
    seeds = reproduced.seeds
    over = (
        f"one seed, {seeds[0]}"
        if len(seeds) == 1
        else "mean ± sample std over seeds " + ", ".join(str(s) for s in seeds)
    )
    return f"{what}; {over}." if what else over[0].upper() + over[1:] + "."


def percent(reproduced: Reproduced, run: str, metric: str) -> list[float]:
    """A run's metric (``acc``, ``bwt``, ...) in percent, per seed."""
    return [100 * r.metrics[metric] for r in reproduced.results[run]]


def task_aware_acc(reproduced: Reproduced, run: str) -> list[float]:
    """ACC (%) of a class-IL run with each prediction restricted to its task's classes
    (``Result.task_aware_matrix``, the DER paper's task-IL column), per seed."""
    out = []
    for r in reproduced.results[run]:
        last = (r.task_aware_matrix or [[]])[-1]
        if last:
            out.append(100 * sum(last) / len(last))
    return out


@dataclass(frozen=True)
class Column:
    """One column of a :func:`runs_table`: its head and its cell per run."""

    head: str
    cell: Cell


def metric(head: str, name: str = "acc", digits: int = 2, bold: bool = False) -> Column:
    """A metric (in percent) as mean ± std over the seeds."""

    def cell(reproduced: Reproduced, run: str) -> str:
        text = spread(percent(reproduced, run, name), digits)
        return f"**{text}**" if bold else text

    return Column(head, cell)


def task_aware(head: str, digits: int = 2) -> Column:
    """The task-IL ACC of a class-IL run (:func:`task_aware_acc`), mean ± std."""
    return Column(head, lambda reproduced, run: spread(task_aware_acc(reproduced, run), digits))


def per_seed(head: str, name: str = "acc", digits: int = 2) -> Column:
    """A metric (in percent) on each seed, in the order of the seeds."""

    def cell(reproduced: Reproduced, run: str) -> str:
        return ", ".join(f"{v:.{digits}f}" for v in percent(reproduced, run, name))

    return Column(head, cell)


def published(head: str, figures: Mapping[str, str] | None = None) -> Column:
    """The published figure of a run (the figure of the same label, or ``figures[run]``)."""

    def cell(reproduced: Reproduced, run: str) -> str:
        label = (figures or {}).get(run, run)
        figure = reproduced.figure(label)
        return f"{figure['published']:.2f}"

    return Column(head, cell)


def difference(head: str, figures: Mapping[str, str] | None = None) -> Column:
    """Ours - published for a run's figure, bold where outside its tolerance."""

    def cell(reproduced: Reproduced, run: str) -> str:
        figure = reproduced.figure((figures or {}).get(run, run))
        if figure["difference"] is None:
            return "n/a"
        text = f"{figure['difference']:+.2f}"
        return text if figure["within"] else f"**{text}**"

    return Column(head, cell)


def text(head: str, cells: Mapping[str, str]) -> Column:
    """A column of given text per run (the settings a row names)."""
    return Column(head, lambda reproduced, run: cells.get(run, ""))


def seed_count(head: str = "seeds") -> Column:
    return Column(head, lambda reproduced, run: str(len(reproduced.results[run])))


def runs_table(
    what: str,
    first: str,
    rows: Sequence[str] | Mapping[str, str],
    columns: Sequence[Column],
) -> Callable[[Reproduced], Table]:
    """A table with one row per run: the first column ``first`` names it (``rows``: run labels,
    or ``{run label: the row's name}``), then ``columns``; captioned ``what`` and the seeds."""
    names = dict(rows) if isinstance(rows, Mapping) else {run: run for run in rows}

    def table(reproduced: Reproduced) -> Table:
        body = tuple(
            (name, *(c.cell(reproduced, run) for c in columns)) for run, name in names.items()
        )
        return Table(seeds_caption(reproduced, what), (first, *(c.head for c in columns)), body)

    return table


def article_table(
    what: str, runs: Sequence[tuple[str, Sequence[tuple[str, int, int, float]]]]
) -> Callable[[Reproduced], Table]:
    """A seed article's table: a row per figure the article reports (accuracy on a task after
    another) and one for BWT; per run, ours (mean ± std) and the article's figure.

    ``runs``: ``(run label, [(figure label, row, column, article value), ...])``.
    """
    labels: dict[str, None] = {}
    for _, figures in runs:
        labels.update(dict.fromkeys(f[0] for f in figures))

    def table(reproduced: Reproduced) -> Table:
        head: list[str] = [""]
        for run, _ in runs:
            head += [f"{run} (ours)", f"{run} (article)"]
        body = []
        for label in labels:
            row = [label]
            for run, figures in runs:
                found = [f for f in figures if f[0] == label]
                if not found:
                    row += ["", ""]
                    continue
                _, i, j, value = found[0]
                ours = [100 * r.accuracy_matrix[i][j] for r in reproduced.results[run]]
                row += [spread(ours, 1), f"{value:g}"]
            body.append(tuple(row))
        bwt = ["BWT (points)"]
        for run, _ in runs:
            bwt += [spread(percent(reproduced, run, "bwt"), 1), ""]
        body.append(tuple(bwt))
        return Table(seeds_caption(reproduced, what), tuple(head), tuple(body))

    return table


def grid_table(
    what: str,
    first: str,
    grid: Mapping[str, Mapping[Any, str]],
    digits: int = 2,
) -> Callable[[Reproduced], Table]:
    """ACC (%) over a grid: a row per name of ``grid`` (``{row name: {column: run label}}``), a
    column per setting (a buffer size), each cell mean ± std over the seeds."""
    columns = list(dict.fromkeys(c for cells in grid.values() for c in cells))

    def table(reproduced: Reproduced) -> Table:
        body = tuple(
            (
                name,
                *(
                    spread(percent(reproduced, cells[c], "acc"), digits) if c in cells else ""
                    for c in columns
                ),
            )
            for name, cells in grid.items()
        )
        head = (first, *(str(c) for c in columns))
        return Table(seeds_caption(reproduced, what), head, body)

    return table


def settings_text(settings: Mapping[str, Any], keys: Sequence[str] = ("lr",)) -> str:
    """``lr 0.1, c 0.5, xi 1``: a run's loop settings ``keys`` and its strategy parameters,
    as BENCHMARKS.md's "settings" columns name them."""
    from forgetless.labels import value_text

    parts = [f"{k} {value_text(settings[k])}" for k in keys if k in settings]
    params = settings.get("strategy_params") or {}
    parts += [f"{k.replace('_', ' ')} {value_text(v)}" for k, v in params.items()]
    return ", ".join(parts)
