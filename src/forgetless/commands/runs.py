"""``forgetless runs``: list, show, compare and summarise the runs of a store."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from forgetless.errors import ConfigError, ForgetlessError


def add_arguments(runs: argparse.ArgumentParser) -> None:
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION")
    store_help = "the run store (default: $FORGETLESS_RUNS or ./runs)"
    ls = runs_sub.add_parser("ls", help="one line per run: id, status, tasks done, ACC, BWT")
    ls.add_argument("--store", metavar="DIR", help=store_help)
    ls.add_argument("--status", choices=["running", "interrupted", "failed", "complete"])
    ls.add_argument("--scenario")
    ls.add_argument("--strategy")
    show = runs_sub.add_parser("show", help="one run's accuracy matrix and metrics")
    show.add_argument("run", help="run id (or a unique prefix) or folder")
    show.add_argument("--store", metavar="DIR", help=store_help)
    compare = runs_sub.add_parser("compare", help="metrics of several runs side by side")
    compare.add_argument("runs", nargs="+", help="run ids (or unique prefixes) or folders")
    compare.add_argument("--store", metavar="DIR", help=store_help)
    summary = runs_sub.add_parser(
        "summary", help="mean, std and SEM over seeds per scenario, strategy and settings"
    )
    summary.add_argument("--store", metavar="DIR", help=store_help)
    summary.add_argument("--format", choices=["table", "csv", "markdown"], default="table")
    reindex = runs_sub.add_parser(
        "reindex",
        help="rebuild index.sqlite from the run folders (done by itself when it is missing "
        "or corrupt)",
    )
    reindex.add_argument("--store", metavar="DIR", help=store_help)
    for p in runs_sub.choices.values():
        p.allow_abbrev = False


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forgetless.runs import RunStore, default_store, is_store

    if args.runs_command is None:
        args.command_parser.parse_args(["--help"])
        return 2
    root = Path(args.store) if args.store else default_store()
    if not is_store(root):
        raise ConfigError(
            f"no run store at {root} (create one with 'forgetless run --store {root}')"
        )
    store = RunStore(root)
    if args.runs_command == "reindex":
        counts = store.reindex()
        found = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no runs"
        print(f"rebuilt {root / 'index.sqlite'} from the run folders: {found}")
        return 0
    if args.runs_command == "ls":
        return _runs_ls(store, args, root)
    if args.runs_command == "summary":
        from forgetless.sweeps import format_summary, summarise

        complete = store.complete_results()
        print(format_summary(summarise(complete), args.format), end="")
        return 0
    if args.runs_command == "show":
        return _runs_show(store, store.locate(args.run))
    return _runs_compare(store, args.runs)


def _runs_ls(store, args: argparse.Namespace, root) -> int:
    """One line per run: id, status, tasks done of planned, ACC, BWT, and the settings that
    differ among the runs listed."""
    from forgetless.labels import run_labels
    from forgetless.runs.store import planned_tasks

    where = {k: getattr(args, k) for k in ("status", "scenario", "strategy") if getattr(args, k)}
    rows = store.index.find(**where)
    labels = run_labels([_stored_config(store, row["id"]) for row in rows])
    print(f"{'id':<58} {'status':<12} {'tasks':>5} {'ACC':>6} {'BWT':>6}  settings")
    for row, label in zip(rows, labels, strict=True):
        planned = row["n_tasks"] or planned_tasks(store.folder(row["id"]))
        tasks = f"{row['tasks_done'] or 0}/{planned or 'not started'}"
        acc = "" if row["acc"] is None else f"{100 * row['acc']:.1f}"
        bwt = "" if row["bwt"] is None else f"{100 * row['bwt']:.1f}"
        print(f"{row['id']:<58} {row['status']:<12} {tasks:>5} {acc:>6} {bwt:>6}  {label}")
    print(f"{len(rows)} run(s) in {root}")
    return 0


def _stored_config(store, run_id: str) -> dict[str, Any]:
    """A stored run's config as plain data; an unreadable one as empty (it labels as such)."""
    from forgetless.runs.files import read_json

    try:
        data = read_json(store.folder(run_id) / "config.json", "run config", required=False)
    except ForgetlessError:
        return {}
    return data if isinstance(data, dict) else {}


def _runs_show(store, folder) -> int:
    """A run's folder, status, resolved config (every setting, as the run used it), then its
    result when it has one."""
    from forgetless.labels import value_text
    from forgetless.runs.store import planned_tasks

    config = _stored_config(store, folder.name)
    row = store.index.get(folder.name) or {}
    planned = row.get("n_tasks") or planned_tasks(folder) or "?"
    print(f"{folder}")
    print(
        f"status: {row.get('status', 'unknown')}, tasks done {row.get('tasks_done') or 0}/{planned}"
    )
    print("config:")
    for key, value in config.items():
        if key == "strategy_params":
            for name, param in sorted(value.items()):
                print(f"  {name} = {value_text(param)}  (strategy parameter)")
        else:
            print(f"  {key} = {value_text(value)}")
    if (folder / "result.json").is_file():
        print(store.result(str(folder)))
    return 0


def _runs_compare(store, names: Sequence[str]) -> int:
    """Metrics of several runs side by side, each row named by what differs between them."""
    from forgetless.labels import run_labels

    results = [store.result(str(store.locate(r))) for r in names]
    labels = run_labels([r.config or {} for r in results])
    names_ = ["ACC", "BWT", "FWT", "forgetting", "learning acc"]
    keys = ["acc", "bwt", "fwt", "forgetting", "learning_accuracy"]
    width = max(12, *(len(label) + 2 for label in labels))
    print(f"{'run':<{width}}" + "".join(f"{n:>14}" for n in names_))
    for label, result in zip(labels, results, strict=True):
        m = result.metrics
        cells = ["n/a" if m[k] is None else f"{100 * m[k]:.1f}" for k in keys]
        print(f"{label:<{width}}" + "".join(f"{c:>14}" for c in cells))
    print("(in percent; each run named by the settings that differ between them)")
    return 0
