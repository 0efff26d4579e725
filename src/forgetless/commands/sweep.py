"""``forgetless sweep``: every (config, seed) of a sweep file into a run store."""

from __future__ import annotations

import argparse

from forgetless.commands.common import runs_bar


def add_arguments(sweep: argparse.ArgumentParser) -> None:
    sweep.description = (
        "Run every (config, seed) of a TOML sweep file into a run store, skipping "
        "runs already complete there; print the summary over seeds. The file format is in "
        "the docstring of forgetless.sweeps (python -m pydoc forgetless.sweeps)."
    )
    sweep.add_argument("file", help="the sweep file (TOML)")
    sweep.add_argument(
        "--store", metavar="DIR", help="the run store (default: $FORGETLESS_RUNS or ./runs)"
    )
    sweep.add_argument("--workers", type=int, default=1, help="runs at once (default: 1)")
    sweep.add_argument("--backend", choices=["local", "ray"], default="local")
    sweep.add_argument(
        "--address", help="with --backend ray: an existing cluster ('auto' or host:port)"
    )
    sweep.add_argument(
        "--no-weights",
        action="store_true",
        help="keep no weights of complete runs (a stopped run still resumes): a few KB a run "
        "instead of a few MB",
    )
    sweep.add_argument("--format", choices=["table", "csv", "markdown"], default="table")
    sweep.add_argument("--summary-out", metavar="FILE", help="also write the summary to FILE")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forgetless.runs import RunStore, default_store
    from forgetless.sweeps import format_summary, load_sweep, run_sweep, summarise

    sweep = load_sweep(args.file)
    root = Path(args.store) if args.store else default_store()
    runs = sweep.runs()
    print(f"{len(runs)} runs ({len(sweep.configs)} configs x {len(sweep.seeds)} seeds) into {root}")
    with runs_bar() as progress:
        report = run_sweep(
            sweep,
            root,
            args.workers,
            args.backend,
            args.address,
            progress,
            keep_weights=not args.no_weights,
        )
    print(
        f"done: {len(report.done)} run now, {len(report.skipped)} already complete, "
        f"{len(report.failed)} failed, in {report.seconds:.0f} s"
    )
    for run_id, error in report.failed:
        print(f"  failed {run_id}: {error}")
    store = RunStore(root)
    results = [store.result(i) for i in sorted(report.done + report.skipped)]
    text = format_summary(summarise(results), args.format)
    print(text, end="")
    if args.summary_out:
        Path(args.summary_out).write_text(text)
    return 1 if report.failed else 0
