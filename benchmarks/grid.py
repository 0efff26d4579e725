"""Run many configs into a run store, read their results back, and publish the benchmark's JSON.

Shared by the reproduction benchmarks: a thin layer over :func:`forgetless.sweeps.run_sweep`
(the one place that starts worker processes: a local pool, one torch thread per worker) and
the run store (:mod:`forgetless.runs`). Every finished run is a folder of the store, so a
stopped benchmark restarts where it was (an interrupted run continues from its last task), a
finished one reprints its tables without training, and benchmarks that share a config share its
run. The store keeps no per-task weights (kilobytes a run).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from forgetless.experiment import RunConfig, config_hash
from forgetless.runs import RunStore
from forgetless.sweeps import Sweep, run_sweep

#: The run store the benchmarks share unless told otherwise (not committed).
STORE = Path("benchmarks/results/runs")


def config_key(config: RunConfig) -> str:
    """A short hash of everything that decides a run's numbers (not threads or the bar)."""
    return config_hash(config)


def run_all(
    configs: Iterable[RunConfig],
    store: Path = STORE,
    workers: int = 2,
    keep_weights: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run every config not yet complete in the run store ``store`` on ``workers`` processes,
    and return the records of all of them by :func:`config_key`.

    A record is the run's :class:`~forgetless.result.Result` as a dict, with ``key`` and
    ``cpu_seconds`` (the process CPU seconds of the run, ``timings["cpu"]``). A run that fails
    is reported when all others are done, as a RuntimeError naming it.
    """
    configs = list(configs)
    run_store = RunStore(store, keep_weights)
    names = {run_store.run_id(c): c for c in configs}
    complete = {r["id"] for r in run_store.index.find(status="complete")} if names else set()
    pending = len(names.keys() - complete)
    log(f"{len(names) - pending} runs on record, {pending} to run on {workers} workers")
    lines: list[str] = []

    def on_run(run_id: str, error: str | None) -> None:
        if error is not None:
            lines.append(f"{run_id} failed: {error} (")
            return
        config, result = names[run_id], run_store.result(run_id)
        lines.append(
            f"{config.strategy} {config.strategy_params} seed {config.seed}: "
            f"ACC {100 * result.metrics['acc']:.2f} ({result.timings['total']:.0f} s; "
        )

    def progress(done: int, total: int, seconds_left: float) -> None:
        log(f"[{done}/{total}] {lines[-1]}about {seconds_left / 60:.0f} min left)")

    if pending:
        report = run_sweep(
            Sweep(configs, seeds=None),
            store,
            workers,
            progress=progress,
            keep_weights=keep_weights,
            on_run=on_run,
        )
        if report.failed:
            failures = "; ".join(f"{run_id}: {error}" for run_id, error in report.failed)
            raise RuntimeError(f"{len(report.failed)} of {pending} runs failed: {failures}")
    records = {}
    for run_id, config in names.items():
        record = run_store.result(run_id).to_dict()
        record["cpu_seconds"] = record["timings"].get("cpu")
        records[config_key(config)] = {"key": config_key(config), **record}
    return records


def record_of(records: dict[str, dict[str, Any]], config: RunConfig) -> dict[str, Any]:
    """The finished record of ``config``."""
    return records[config_key(config)]


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value), rounded for reading."""
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 4), "std": round(std, 4), "n": len(values)}


def percent(values: Iterable[float | None]) -> list[float]:
    """Fractions to percent."""
    return [100.0 * v for v in values if v is not None]


def publish(report: dict[str, Any], out: Path) -> None:
    """Write the report as JSON to ``out`` and print it on stdout, with the forgetless version
    and git commit that made it (``provenance``)."""
    text = json.dumps(stamped(report), indent=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)


def stamped(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with ``provenance``: the forgetless version and git commit that made it."""
    from forgetless.provenance import provenance

    return {**_without_data_dir(report), "provenance": provenance()}


def _without_data_dir(value: Any) -> Any:
    """``value`` with every ``data_dir`` shown as ``DATA``: where the data lay on the machine
    that ran it is no result, and published JSON must not name the machine's paths."""
    if isinstance(value, dict):
        return {
            k: ("DATA" if k == "data_dir" and v else _without_data_dir(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_without_data_dir(v) for v in value]
    return value


def log(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)
