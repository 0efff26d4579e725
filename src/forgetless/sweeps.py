"""Sweeps: grids and random searches over configs, times seeds, run into a run store.

A sweep file is TOML::

    seeds = [0, 1, 2]
    sample_seed = 0              # draws of [[random]] blocks

    [base]                       # any `forgetless run` option, as RunConfig fields
    scenario = "split-digits"
    iterations = 200

    [[grid]]                     # lists vary (their product is taken), scalars are fixed
    strategy = "finetune"

    [[grid]]
    strategy = "ewc"
    protocol = ["task", "class"]
    lam = [10.0, 1000.0]         # names that are not RunConfig fields are strategy parameters

    [[random]]                   # n draws, each value a distribution or a fixed value
    n = 4
    strategy = "si"
    c = {log_uniform = [0.01, 10.0]}
    lr = {uniform = [0.01, 0.1]}
    optimizer = {choice = ["sgd", "adam"]}

Every config runs once per seed. A config complete in the store is skipped, so a stopped sweep
restarts where it was; one that was interrupted continues from its last task.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetless.errors import ConfigError
from forgetless.experiment import NON_RESULT_FIELDS, RunConfig, config_from_flat, config_hash
from forgetless.toml_file import read_toml
from forgetless.worker import die_with_parent

_TOP_KEYS = ("seeds", "sample_seed", "base", "grid", "random")
_DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")


@dataclass
class Sweep:
    """A list of configs to run, each once per seed.

    Attributes:
        configs: the configs without seeds (``seed`` is set per run).
        seeds: the seeds; ``None``: each config once, with its own ``seed`` (a list of
            runs made elsewhere, such as a benchmark's).
    """

    configs: list[RunConfig]
    seeds: list[int] | None = field(default_factory=lambda: [0])

    def runs(self) -> list[RunConfig]:
        """Every (config, seed) as its own config, in a stable order; duplicates removed."""
        out, seen = [], set()
        for config in self.configs:
            for seed in [config.seed] if self.seeds is None else self.seeds:
                one = RunConfig.from_dict({**config.to_dict(), "seed": seed})
                key = config_hash(one)
                if key not in seen:
                    seen.add(key)
                    out.append(one)
        return out


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file (format in the module docstring); errors name the bad key."""
    return sweep_from_dict(read_toml(path, "sweep file"), where=str(path))


def sweep_from_dict(spec: dict[str, Any], where: str = "sweep") -> Sweep:
    """A :class:`Sweep` from parsed TOML."""
    for key in spec:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}{_hint(key, _TOP_KEYS)}")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    base = spec.get("base", {})
    _check_keys(base, f"{where} [base]")
    blocks = [("grid", b) for b in spec.get("grid", [])]
    blocks += [("random", b) for b in spec.get("random", [])]
    if not blocks:
        blocks = [("grid", {})]
    rng = random.Random(spec.get("sample_seed", 0))
    configs = []
    for n, (kind, block) in enumerate(blocks, 1):
        label = f"{where} [[{kind}]] #{n}"
        if kind == "grid":
            _check_keys(block, label)
            settings = _grid(block, label)
        else:
            settings = _random(block, rng, label)
        for setting in settings:
            configs.append(config_from_flat({**base, **setting}, label))
    return Sweep(configs, seeds)


_LIST_FIELDS = ("hidden", "class_order")


def _grid(block: dict[str, Any], label: str = "[[grid]]") -> list[dict[str, Any]]:
    """The product of the block's lists. ``hidden`` and ``class_order`` take lists as values,
    so for them only a list of lists varies. An empty list would make the product empty (a
    sweep that runs nothing), so it is an error."""
    axes = []
    for key, value in block.items():
        if isinstance(value, list) and not value:
            raise ConfigError(
                f"{label}: {key} = [] gives no values, so the grid would run nothing; list at "
                "least one value, or remove the key"
            )
        if key in _LIST_FIELDS:
            varies = isinstance(value, list) and all(isinstance(v, list) for v in value)
        else:
            varies = isinstance(value, list)
        axes.append(value if varies else [value])
    return [dict(zip(block, combo, strict=True)) for combo in itertools.product(*axes)]


def _random(block: dict[str, Any], rng: random.Random, label: str) -> list[dict[str, Any]]:
    block = dict(block)
    n = block.pop("n", None)
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"{label}: a [[random]] block needs n = a positive integer")
    _check_keys(block, label)
    draws = []
    for _ in range(n):
        draws.append({k: _draw(v, rng, f"{label} {k}") for k, v in block.items()})
    return draws


def _draw(value: Any, rng: random.Random, label: str) -> Any:
    if not isinstance(value, dict):
        return value
    if len(value) != 1 or next(iter(value)) not in _DISTRIBUTIONS:
        raise ConfigError(
            f"{label}: expected one of {', '.join(_DISTRIBUTIONS)} = [...], got {value!r}"
        )
    kind, args = next(iter(value.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{label}: choice needs a non-empty list of values, got {args!r}")
        return rng.choice(args)
    numbers = isinstance(args, list) and len(args) == 2
    numbers = numbers and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    if not numbers or not all(math.isfinite(a) for a in args) or args[0] > args[1]:
        raise ConfigError(f"{label}: {kind} needs [low, high], two finite numbers, got {args!r}")
    low, high = args
    if kind == "uniform":
        return rng.uniform(low, high)
    if kind == "int_uniform":
        return rng.randint(low, high)
    if low <= 0:
        raise ConfigError(f"{label}: log_uniform needs a positive lower bound, got {low}")
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _check_keys(block: dict[str, Any], label: str) -> None:
    if not isinstance(block, dict):
        raise ConfigError(f"{label}: expected a table of settings, got {block!r}")
    for key in block:
        if key in ("seed", "strategy_params"):
            raise ConfigError(
                f"{label}: {key!r} is not set here (use seeds = [...] and plain names)"
            )


def _hint(key: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


# --- running ---------------------------------------------------------------------------------


@dataclass
class SweepReport:
    """What a sweep did: runs ``done`` now, ``skipped`` (already complete), ``failed``
    (``(run id, error)``), and the wall time."""

    total: int
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def run_sweep(
    sweep: Sweep,
    store: str | Path,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    keep_weights: bool = True,
    on_run: Callable[[str, str | None], None] | None = None,
) -> SweepReport:
    """Run every (config, seed) of ``sweep`` not yet complete in the store at ``store``.

    Args:
        workers: processes at once (local backend); each uses one torch thread.
        backend: ``"local"`` (a process pool) or ``"ray"`` (needs ``pip install ray``).
        address: with Ray, an existing cluster (``"auto"`` or ``"host:port"``); ``None`` starts
            a local Ray.
        progress: called as ``progress(finished, total, seconds_left)`` after each run.
        on_run: called as ``on_run(run id, error)`` as each run ends (``error`` is ``None``
            for a run that completed), before ``progress``.
        keep_weights: keep each run's weights after every task (``False``: see
            :class:`~forgetless.runs.RunStore`; a stopped run still resumes).
    """
    from forgetless.runs import RunStore, check_runnable

    if backend not in ("local", "ray"):
        raise ConfigError(f"backend must be 'local' or 'ray', got {backend!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    runs = sweep.runs()
    for config in runs:  # before the store is created or touched
        check_runnable(config)
    run_store = RunStore(store)
    report = SweepReport(total=len(runs))
    pending = []
    for config in runs:
        row = run_store.index.get(run_store.run_id(config))
        if row is not None and row["status"] == "complete":
            report.skipped.append(row["id"])
        else:
            config.threads, config.progress = 1, False
            pending.append(config)
    start = time.perf_counter()
    execute = _run_local if backend == "local" else _run_ray
    outcomes = execute(pending, str(store), workers, address, keep_weights)
    try:
        for finished, (run_id, error) in enumerate(outcomes, 1):
            if error is None:
                report.done.append(run_id)
            else:
                report.failed.append((run_id, error))
            if on_run is not None:
                on_run(run_id, error)
            if progress is not None:
                elapsed = time.perf_counter() - start
                progress(finished, len(pending), elapsed / finished * (len(pending) - finished))
    finally:
        # Interrupted here (Ctrl-C while drawing progress): the backend still stops its workers.
        outcomes.close()
    report.seconds = time.perf_counter() - start
    return report


def execute_one(
    config_data: dict[str, Any], store: str, keep_weights: bool = True
) -> tuple[str, str | None]:
    """Run one config into the store (in a worker process); returns ``(run id, error)``.

    A run another process is writing (an overlapping sweep) is waited for, with a line on
    stderr naming the holder; then its result is taken as it is, or, if the holder died, the
    run is continued here. Each process writes one run at a time, so waiting cannot deadlock.
    """
    from forgetless.runs import RunStore

    config = RunConfig.from_dict(config_data)
    run_store = RunStore(store, keep_weights)
    run_id = run_store.run_id(config)
    with warnings.catch_warnings():
        # As the command line prints them, with the run they came from: many runs share one
        # terminal, and a source line means nothing to the reader.
        warnings.showwarning = lambda message, *_, **__: _say(f"warning: {message} ({run_id})")
        try:
            run_store.execute(config, on_wait=_say)
        except Exception as err:  # one bad run must not stop the sweep; it is reported
            return run_id, f"{type(err).__name__}: {err}"
    return run_id, None


def _say(message: str) -> None:
    print(f"forgetless: {message}", file=sys.stderr, flush=True)


def _run_local(pending, store, workers, address, keep_weights=True):
    if not pending:
        return
    context = multiprocessing.get_context("spawn")
    # Workers are reused: starting a process (importing torch, loading the data) costs more than
    # a small run. Nothing a run leaves behind changes the next one's numbers (each seeds its
    # own generators; peak memory is counted per run).
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),)
    )
    try:
        futures = [pool.submit(execute_one, c.to_dict(), store, keep_weights) for c in pending]
        for future in as_completed(futures):
            yield future.result()
    except BaseException:
        # Ctrl-C (or an error here): stop now rather than wait for the runs in flight; they
        # are checkpointed after each task and continue when the sweep is run again.
        processes = list((pool._processes or {}).values())  # no public way to stop workers
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        raise
    pool.shutdown()


def _run_ray(pending, store, workers, address, keep_weights=True):
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the ray backend needs Ray: pip install 'forgetless[ray]' (or pip install ray)"
        ) from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False)
    try:
        task = ray.remote(num_cpus=1)(execute_one)
        refs = [task.remote(c.to_dict(), store, keep_weights) for c in pending]
        while refs:
            ready, refs = ray.wait(refs, num_returns=1)
            yield ray.get(ready[0])
    finally:
        if started:
            ray.shutdown()


# --- summaries -------------------------------------------------------------------------------

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
        config = {
            k: v for k, v in result.config.items() if k != "seed" and k not in NON_RESULT_FIELDS
        }
        configs.append(config)
    varying = _varying_keys(configs)
    for result, config in zip(results, configs, strict=True):
        groups.setdefault(_group_key(config), []).append((result, config))
    from forgetless.labels import sort_key, varying_keys

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
