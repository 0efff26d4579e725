"""A published protocol as data: what it runs, what the paper reports, how close ours must be.

Nothing here imports torch: listing the catalogue is instant. The configs are built (and torch
imported) only when an entry is run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forgetless.experiment import RunConfig
    from forgetless.result import Result

#: ``{run label: [its Result per seed, in the order of the seeds]}``: what an entry's
#: ``ours`` function reads.
Results = Mapping[str, Sequence["Result"]]


@dataclass(frozen=True)
class Tolerance:
    """How far (in the figure's units) ours may lie from the published figure, and why."""

    points: float
    reason: str


@dataclass(frozen=True)
class Published:
    """One figure a paper reports.

    Attributes:
        label: the row it belongs to (``"ER, buffer 500"``); ``ours`` answers under it.
        value: the figure as printed.
        what: what it is (``"ACC (%), class-IL, mean of 10 runs"``).
        std: the spread the paper gives with it, if any.
        tolerance: this figure's own tolerance, where it differs from the entry's.
        known_difference: why ours differ, where we know (BENCHMARKS.md explains it).
    """

    label: str
    value: float
    what: str
    std: float | None = None
    tolerance: Tolerance | None = None
    known_difference: str | None = None


@dataclass(frozen=True)
class Run:
    """One setting of an entry: a label and the :class:`~forgetless.experiment.RunConfig`
    fields it sets (strategy parameters under ``strategy_params``), run once per seed."""

    label: str
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class Measure:
    """Our figure: ``value`` (compared with the published one), the values per seed it comes
    from (empty when it is computed from means, such as an interpolated buffer size) and their
    sample std (``None`` for one seed)."""

    value: float | None
    per_seed: tuple[float, ...] = ()
    std: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "per_seed": list(self.per_seed), "std": self.std}


@dataclass(frozen=True)
class Table:
    """A table of BENCHMARKS.md regenerated from an entry's runs: a caption (what the rows
    are, over which seeds), the header and the rows, as text cells."""

    caption: str
    head: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "caption": self.caption,
            "head": list(self.head),
            "rows": [list(r) for r in self.rows],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Table:
        return cls(data["caption"], tuple(data["head"]), tuple(tuple(r) for r in data["rows"]))

    def markdown(self) -> str:
        """The table in BENCHMARKS.md's format, its caption above it."""
        lines = [self.caption, ""] if self.caption else []
        lines.append("| " + " | ".join(self.head) + " |")
        lines.append("|" + "---|" * len(self.head))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Reproduced:
    """What an entry's table functions read: the Results (``{run label: [Result per seed]}``),
    the configs they ran (the same shape), the seeds, the store that holds the runs (for
    tables measured on the weights it kept) and the verdict of :func:`compare` (``figures``:
    ours beside the published figures)."""

    results: Results
    configs: Mapping[str, Sequence[RunConfig]]
    seeds: tuple[int, ...]
    store: Path
    verdict: Mapping[str, Any]

    def figure(self, label: str) -> Mapping[str, Any]:
        """The verdict's row for the published figure ``label``."""
        for figure in self.verdict["figures"]:
            if figure["label"] == label:
                return figure
        raise KeyError(label)


def over_seeds(values: Iterable[float]) -> Measure:
    """The mean of per-seed values, with them and their sample std."""
    values = tuple(float(v) for v in values)
    if not values:
        return Measure(None)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Measure(statistics.fmean(values), values, std)


@dataclass(frozen=True)
class Entry:
    """A published protocol we reproduce.

    Attributes:
        name: the name ``forgetless reproduce NAME`` takes.
        title: one line saying what it is.
        reference: the paper, and the table or figure the numbers are from.
        published: the figures, each compared with ours.
        tolerance: how close ours must be (a figure may have its own), with the reason.
        minutes: expected wall minutes on 2 cores with ``--workers 1`` and the default seeds.
        minutes_note: where ``minutes`` comes from (measured how, at what load).
        runs: the settings it runs, each once per seed.
        ours: a pure function from the Results (``{run label: [Result per seed]}``) to our
            figures, ``{published label: Measure}``.
        data: the data sets it reads (from ``--data-dir``).
        known_difference: why ours differ from the paper as a whole, where we know.
        benchmark: the BENCHMARKS.md section and benchmarks/ script that hold these figures.
        seeds: the seeds run when ``--seeds`` is not given.
        units: of the figures (``"percent"`` unless said).
        tables: the tables of BENCHMARKS.md these runs give, each a function of the
            :class:`Reproduced` runs (``forgetless reproduce NAME --markdown`` prints them
            after the comparison).
    """

    name: str
    title: str
    reference: str
    published: tuple[Published, ...]
    tolerance: Tolerance
    minutes: float
    minutes_note: str
    runs: tuple[Run, ...]
    ours: Callable[[Results], dict[str, Measure]]
    data: tuple[str, ...] = ()
    known_difference: str | None = None
    benchmark: str = ""
    seeds: tuple[int, ...] = (0, 1, 2)
    units: str = "percent"
    tables: tuple[Callable[[Reproduced], Table], ...] = ()

    def tolerance_of(self, figure: Published) -> Tolerance:
        return figure.tolerance or self.tolerance

    def configs(self, **options: Any) -> list[RunConfig]:
        """One config per run (seed 0; a sweep sets the seeds); ``options`` are further
        RunConfig fields (``data_dir``)."""
        from forgetless.experiment import RunConfig

        return [RunConfig(**{**run.settings, **options}) for run in self.runs]

    def describe(self) -> dict[str, Any]:
        """The entry as plain data (``forgetless reproduce --list --json``)."""
        return {
            "name": self.name,
            "title": self.title,
            "reference": self.reference,
            "published": [published_dict(self, f) for f in self.published],
            "tolerance": {"points": self.tolerance.points, "reason": self.tolerance.reason},
            "minutes": self.minutes,
            "minutes_note": self.minutes_note,
            "seeds": list(self.seeds),
            "units": self.units,
            "data": list(self.data),
            "runs": [{"label": r.label, "settings": dict(r.settings)} for r in self.runs],
            "known_difference": self.known_difference,
            "benchmark": self.benchmark,
        }


def published_dict(entry: Entry, figure: Published) -> dict[str, Any]:
    tolerance = entry.tolerance_of(figure)
    return {
        "label": figure.label,
        "value": figure.value,
        "what": figure.what,
        "std": figure.std,
        "tolerance": tolerance.points,
        "tolerance_reason": tolerance.reason,
        "known_difference": figure.known_difference,
    }


def compare(entry: Entry, ours: Mapping[str, Measure]) -> dict[str, Any]:
    """The verdict: each published figure beside ours, within its tolerance or not.

    Returns plain data: ``figures`` (per figure: ``label``, ``published``, ``ours``, the
    ``difference`` ours - published, ``tolerance``, ``within``, ``known_difference``),
    ``within_tolerance`` (every figure within), ``unexplained`` (the labels of figures outside
    their tolerance with no known difference: what ``--check`` fails on).
    """
    figures = []
    for figure in entry.published:
        measure = ours.get(figure.label, Measure(None))
        tolerance = entry.tolerance_of(figure).points
        value = measure.value
        finite = value is not None and math.isfinite(value)
        difference = value - figure.value if finite else None
        # A figure we could not compute (a target never reached) is outside, never "within".
        within = difference is not None and abs(difference) <= tolerance + 1e-9
        figures.append(
            {
                "label": figure.label,
                "published": figure.value,
                "ours": measure.to_dict(),
                "difference": difference,
                "tolerance": tolerance,
                "within": within,
                "known_difference": figure.known_difference,
            }
        )
    outside = [f for f in figures if not f["within"]]
    return {
        "figures": figures,
        "within_tolerance": not outside,
        "unexplained": [f["label"] for f in outside if not f["known_difference"]],
    }
