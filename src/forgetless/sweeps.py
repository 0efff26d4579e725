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
import math
import multiprocessing
import os
import random
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetless.errors import ConfigError
from forgetless.experiment import RunConfig, config_from_flat, config_hash
from forgetless.options import list_fields
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


#: RunConfig's list fields (hidden, class_order, schedule), read from its declaration.
_LIST_FIELDS = list_fields()


def _grid(block: dict[str, Any], label: str = "[[grid]]") -> list[dict[str, Any]]:
    """The product of the block's lists. ``hidden``, ``class_order`` and ``schedule`` take lists,
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
    config = RunConfig.from_dict(config_data)
    run_store = _worker_store(store, keep_weights)
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


#: A worker's stores, kept between its runs: the index's connection stays open (see
#: forgetless.runs.index), and the index file is checked once per worker, not once per run.
_STORES: dict[tuple[str, bool], Any] = {}


def _worker_store(store: str, keep_weights: bool) -> Any:
    """The store at ``store`` for this process's runs: the one kept, unless its index file is
    gone (a store deleted meanwhile starts afresh, as a new RunStore would)."""
    from forgetless.runs import RunStore
    from forgetless.runs.store import INDEX_NAME

    key = (store, keep_weights)
    kept = _STORES.get(key)
    if kept is None or not (Path(store) / INDEX_NAME).exists():
        kept = _STORES[key] = RunStore(store, keep_weights)
    return kept


def _say(message: str) -> None:
    print(f"forgetless: {message}", file=sys.stderr, flush=True)


def start_method() -> str:
    """How the local backend starts its workers: ``"fork"`` on Linux while this process runs
    one Python thread, else ``"spawn"``.

    A forked worker starts in milliseconds with torch and forgetless already imported; a
    spawned one imports them again (about two seconds, which weighed as much as two of the
    sweep benchmark's runs on every worker). Forking is safe here for what the workers use:
    each run seeds its own generators, a worker opens its own index connection (an inherited
    one is never used), and every sweep run is set to one torch thread (:func:`run_sweep`),
    which matters: GNU OpenMP's thread pool does not survive a fork, so a forked child that
    runs a parallel region at 2 threads after its parent did hangs (checked with torch
    2.13.0), while at one thread it never starts the pool. Another Python thread could hold a lock at
    the moment of the fork, so with one running the workers are spawned. The numbers are the
    same either way (tests/test_sweeps.py)."""
    forks = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
    return "fork" if forks and threading.active_count() == 1 else "spawn"


def _start_worker(parent_pid: int) -> None:
    """A local worker's first call: tie its life to the sweep's process, then read the fault
    plan of the crash tests from the environment (a forked worker would otherwise keep the
    plan its parent read at import)."""
    die_with_parent(parent_pid)
    from forgetless.runs import faults

    faults.arm_from_environment()


def _run_local(pending, store, workers, address, keep_weights=True):
    if not pending:
        return
    context = multiprocessing.get_context(start_method())
    # Workers are reused: starting a process costs more than a small run. Nothing a run leaves
    # behind changes the next one's numbers (each seeds its own generators and sets its
    # threads; peak memory is counted per run).
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(os.getpid(),)
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


# The summaries are pure functions of Results (forgetless.summaries, which reports use without
# importing the runner); their names stay importable from here.
from forgetless.summaries import (  # noqa: E402
    METRICS,
    format_summary,
    mean_and_spread,
    summarise,
)

__all__ = [
    "METRICS",
    "Sweep",
    "SweepReport",
    "execute_one",
    "format_summary",
    "load_sweep",
    "mean_and_spread",
    "run_sweep",
    "start_method",
    "summarise",
    "sweep_from_dict",
]
