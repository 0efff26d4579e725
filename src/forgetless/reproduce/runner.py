"""Run a catalogue entry through the run store and the sweep runner, and compare with the paper.

Every run is a RunConfig in a :class:`~forgetless.runs.RunStore`, executed by
:func:`forgetless.sweeps.run_sweep`: a complete run is read back, not trained again, and an
interrupted one continues from its last task.
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from forgetless.errors import DataError, ForgetlessError
from forgetless.reproduce.entry import Entry, Measure, Reproduced, Table, compare


def check_data(entry: Entry, data_dir: str | Path | None) -> None:
    """Raise a DataError naming where we looked and how to get them if a data set that
    ``entry`` reads cannot be found (before any run starts or any folder is made)."""
    from forgetless.data.catalog import IDX_SOURCES, locate, not_found_message
    from forgetless.scenarios import PRESETS

    sources = {s for run in entry.runs for s in PRESETS[run.settings["scenario"]].sources}
    for source in sorted(sources & set(IDX_SOURCES)):
        if locate(source, data_dir) is None:
            raise DataError(
                f"forgetless reproduce {entry.name} needs {source}.\n"
                + not_found_message(IDX_SOURCES[source], data_dir)
            )


def reproduce(
    entry: Entry,
    seeds: Sequence[int] | None = None,
    store: str | Path | None = None,
    workers: int = 1,
    data_dir: str | Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Run ``entry`` (each of its runs once per seed) into ``store`` and compare ours with the
    published figures.

    Args:
        seeds: the seeds (``None``: the entry's).
        store: the run store (``None``: ``$FORGETLESS_RUNS`` or ``./runs``).
        workers: runs at once, one process and one torch thread each.
        data_dir: where the data sets are (as ``--data-dir``).
        progress: ``progress(finished, total, seconds_left)`` after each run trained.

    Returns:
        Plain data: the entry's fields (:meth:`Entry.describe`), ``seeds``, ``store``,
        ``run_ids`` (per run label, one id per seed), ``trained`` and ``reused`` (how many runs
        were trained now and how many were complete in the store), ``seconds`` and the load
        average before and after, ``ours`` (per published label: value, per seed, std), and the
        verdict of :func:`~forgetless.reproduce.entry.compare` (``figures``,
        ``within_tolerance``, ``unexplained``), and ``tables``: the BENCHMARKS.md tables the
        entry's runs give (:class:`~forgetless.reproduce.entry.Table` as plain data).

    Raises:
        DataError: a data set is missing. ForgetlessError: a run failed (the others are kept).
    """
    from forgetless.experiment import RunConfig
    from forgetless.runs import RunStore, default_store
    from forgetless.sweeps import Sweep, run_sweep

    seeds = list(entry.seeds if seeds is None else seeds)
    store = Path(store) if store is not None else default_store()
    check_data(entry, data_dir)
    configs = entry.configs(data_dir=None if data_dir is None else str(data_dir))
    load_before = os.getloadavg()
    started = time.perf_counter()
    report = run_sweep(Sweep(configs, seeds), store, workers, progress=progress)
    seconds = time.perf_counter() - started
    if report.failed:
        lines = "; ".join(f"{run_id}: {error}" for run_id, error in report.failed)
        raise ForgetlessError(
            f"{len(report.failed)} of {report.total} runs failed ({lines}); the others are kept "
            f"in {store}, so running it again trains only what is missing"
        )
    run_store = RunStore(store)
    results: dict[str, list[Any]] = {}
    run_ids: dict[str, list[str]] = {}
    seeded: dict[str, list[RunConfig]] = {}
    for run, config in zip(entry.runs, configs, strict=True):
        for seed in seeds:
            seeded_config = RunConfig.from_dict({**config.to_dict(), "seed": seed})
            run_id = run_store.run_id(seeded_config)
            seeded.setdefault(run.label, []).append(seeded_config)
            run_ids.setdefault(run.label, []).append(run_id)
            results.setdefault(run.label, []).append(run_store.result(run_id))
    ours: dict[str, Measure] = entry.ours(results)
    verdict = compare(entry, ours)
    reproduced = Reproduced(results, seeded, tuple(seeds), store, verdict)
    tables = [table(reproduced).to_dict() for table in entry.tables]
    return {
        **entry.describe(),
        "seeds": seeds,
        "store": str(store),
        "run_ids": run_ids,
        "trained": len(report.done),
        "reused": len(report.skipped),
        "seconds": round(seconds, 1),
        "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
        "workers": workers,
        "ours": {label: measure.to_dict() for label, measure in ours.items()},
        **verdict,
        "tables": tables,
    }


# --- formatting --------------------------------------------------------------------------------


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}"


def _ours(figure: dict[str, Any]) -> str:
    measure = figure["ours"]
    text = _number(measure["value"])
    if measure["std"] is not None:
        text += f" ± {measure['std']:.2f}"
    return text


def _difference(figure: dict[str, Any]) -> str:
    return "n/a" if figure["difference"] is None else f"{figure['difference']:+.2f}"


def _verdict(figure: dict[str, Any]) -> str:
    if figure["within"]:
        return "within"
    return "outside, known" if figure["known_difference"] else "OUTSIDE"


def format_text(reproduction: dict[str, Any]) -> str:
    """Ours beside the published figures, a verdict per figure and the known reasons."""
    r = reproduction
    seeds = ", ".join(str(s) for s in r["seeds"])
    units = "" if r["units"] == "percent" else f" ({r['units']})"
    lines = [
        f"{r['name']}: {r['title']}{units}",
        f"  {r['reference']}",
        f"  seeds {seeds}; {r['trained']} runs trained, {r['reused']} reused from {r['store']} "
        f"({r['seconds']:.0f} s)",
        "",
    ]
    head = ["figure", "published", "ours", "ours - published", "tolerance", "verdict"]
    rows = [
        [
            f["label"],
            _number(f["published"]),
            _ours(f),
            _difference(f),
            f"± {f['tolerance']:g}",
            _verdict(f),
        ]
        for f in r["figures"]
    ]
    widths = [max(len(x) for x in column) for column in zip(head, *rows, strict=True)]
    for row in [head, *rows]:
        lines.append("  " + "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)))
    lines.append("")
    unexplained = r["unexplained"]
    if r["within_tolerance"]:
        lines.append("  verdict: every figure within tolerance")
    elif not unexplained:
        lines.append("  verdict: outside tolerance where a known difference explains it")
    else:
        lines.append(f"  verdict: OUTSIDE tolerance, unexplained: {', '.join(unexplained)}")
    for f in r["figures"]:
        if not f["within"] and f["known_difference"]:
            lines.append(_wrap(f"{f['label']}: {f['known_difference']}", "  - "))
    if r["known_difference"]:
        lines.append(_wrap(r["known_difference"], "  note: "))
    lines.append(_wrap(f"tolerance: {r['tolerance']['reason']}", "  "))
    return "\n".join(lines) + "\n"


def format_markdown(reproduction: dict[str, Any]) -> str:
    """The comparison as a BENCHMARKS.md table, with the command that reproduces it, then
    every table of BENCHMARKS.md the entry's runs give (its ``tables``)."""
    r = reproduction
    units = r["units"]
    seeds = ",".join(str(s) for s in r["seeds"])
    what = (
        f"one seed, {r['seeds'][0]}"
        if len(r["seeds"]) == 1
        else "mean ± sample std over seeds " + ", ".join(str(s) for s in r["seeds"])
    )
    lines = [
        "```bash",
        f"forgetless reproduce {r['name']} --seeds {seeds}"
        + (" --data-dir DATA" if r["data"] else ""),
        "```",
        "",
        f"{r['reference']}; ours: {what}" + ("" if units == "percent" else f" ({units})") + ".",
        "",
        "| figure | ours | published | ours - published | within ± tolerance |",
        "|---|---|---|---|---|",
    ]
    for f in r["figures"]:
        verdict = "yes" if f["within"] else ("no (known)" if f["known_difference"] else "**no**")
        lines.append(
            f"| {f['label']} | {_ours(f)} | {_number(f['published'])} | "
            f"{_difference(f)} | {verdict} (± {f['tolerance']:g}) |"
        )
    for table in reproduction.get("tables", []):
        lines += ["", Table.from_dict(table).markdown().rstrip("\n")]
    return "\n".join(lines) + "\n"


def format_list(entries: Sequence[Entry]) -> str:
    """One block per entry: name, minutes, reference, the published figures."""
    lines = []
    for e in entries:
        data = f"; data: {', '.join(e.data)}" if e.data else ""
        lines.append(
            f"{e.name}  (~{e.minutes:g} min on 2 cores, {_count(len(e.runs), 'run')} x "
            f"{_count(len(e.seeds), 'seed')}{data})"
        )
        lines.append(f"  {e.title}")
        lines.append(_wrap(e.reference, "  ", "    "))
        figures = ", ".join(f"{f.label} {f.value:g}" for f in e.published)
        lines.append(_wrap(f"published: {figures}", "  ", "    "))
    return "\n".join(lines) + "\n"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _wrap(text: str, first: str, rest: str | None = None, width: int = 96) -> str:
    return textwrap.fill(
        text, width, initial_indent=first, subsequent_indent=rest or " " * len(first)
    )
