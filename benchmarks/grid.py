"""Run many configs over a process pool, keep every finished run, and summarise over seeds.

Shared by the reproduction benchmarks. Each run gets a fresh worker process (so its peak memory
is its own) with one torch thread (on a small CPU, one thread per process beats threads
fighting over cores). Every
finished run is appended at once to a JSON-lines file keyed by the config, so a stopped
benchmark restarts where it was and a finished one reprints its tables without training.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from forgetless.experiment import RunConfig, config_hash, run


def config_key(config: RunConfig) -> str:
    """A short hash of everything that decides a run's numbers (not threads or the bar)."""
    return config_hash(config)


def _one_run(config: RunConfig) -> dict[str, Any]:
    torch.set_num_threads(1)
    start_cpu = time.process_time()
    result = run(config)
    record = result.to_dict()
    record["cpu_seconds"] = time.process_time() - start_cpu
    return record


def run_all(
    configs: Iterable[RunConfig],
    store: Path,
    workers: int = 2,
    *,
    runner: Callable[[RunConfig], dict[str, Any]] = _one_run,
    key: Callable[[RunConfig], str] = config_key,
) -> dict[str, dict[str, Any]]:
    """Run every config not yet in ``store`` (a JSON-lines file); return all records by key.

    ``runner`` trains one config in a worker process (a picklable module-level function; the
    default: :func:`forgetless.experiment.run`); ``key`` names its record in the store (runs
    that differ in something outside the config, such as the initialisation, need their own).
    """
    store.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    if store.exists():
        for line in store.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["key"]] = record
    pending = {}
    for config in configs:
        config.progress = False
        config.threads = 1
        name = key(config)
        if name not in done:
            pending[name] = config
    log(f"{len(done)} runs on record, {len(pending)} to run on {workers} workers")
    if not pending:
        return done
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with (
        ProcessPoolExecutor(workers, mp_context=context, max_tasks_per_child=1) as pool,
        store.open("a") as sink,
    ):
        futures = {pool.submit(runner, config): name for name, config in pending.items()}
        for finished, future in enumerate(as_completed(futures), 1):
            name = futures[future]
            record = {"key": name, **future.result()}
            done[name] = record
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            elapsed = time.perf_counter() - started
            left = elapsed / finished * (len(futures) - finished)
            config = pending[name]
            log(
                f"[{finished}/{len(futures)}] {config.strategy} {config.strategy_params} "
                f"seed {config.seed}: ACC {100 * record['metrics']['acc']:.2f} "
                f"({record['timings']['total']:.0f} s; about {left / 60:.0f} min left)"
            )
    return done


def record_of(records: dict[str, dict[str, Any]], config: RunConfig) -> dict[str, Any]:
    """The finished record of ``config``."""
    config.progress = False
    config.threads = 1
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

    return {**report, "provenance": provenance()}


def log(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)
