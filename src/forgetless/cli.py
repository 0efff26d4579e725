"""The ``forgetless`` command. Thin: it parses arguments, then calls the library."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from forgetless.errors import ConfigError, ForgetlessError

EXAMPLES_RUN = """\
examples:
  forgetless run --scenario split-digits --strategy finetune --epochs 20 --lr 0.1
  forgetless run --scenario split-digits --protocol task --strategy ewc --lam 100
  forgetless run --scenario split-mnist --protocol class --strategy finetune --model mlp \\
      --epochs 1 --seed 0 --data-dir DIR --out runs/x
"""


def _run_epilog() -> str:
    """Each strategy with its parameters and defaults, then examples."""
    from forgetless.strategies import STRATEGIES, strategy_parameters

    lines = ["strategies and their parameters (any other --NAME VALUE goes to the strategy):"]
    for name, cls in STRATEGIES.items():
        params = strategy_parameters(cls)
        flags = " ".join(f"--{p.replace('_', '-')} {v.default}" for p, v in params.items())
        lines.append(f"  {name:<12} {flags}".rstrip())
    return "\n".join(lines) + "\n\n" + EXAMPLES_RUN


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    from forgetless import __version__
    from forgetless.engine import OPTIMIZERS
    from forgetless.experiment import RunConfig
    from forgetless.models import MODEL_NAMES
    from forgetless.scenarios import PRESETS
    from forgetless.strategies import STRATEGIES

    parser = argparse.ArgumentParser(
        prog="forgetless",
        description="Show, measure and mitigate catastrophic forgetting.",
    )
    parser.add_argument("--version", action="version", version=f"forgetless {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="offline demo: fine-tuning vs joint training on split digits",
        description="Train a small MLP on split-digits (scikit-learn's 8x8 digits, "
        "5 tasks of 2 classes, class-incremental) with plain fine-tuning and with "
        "joint training; print both accuracy matrices and what was forgotten.",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--out", metavar="DIR", help="also save each run (config.json, result.json) under DIR"
    )

    d = RunConfig()
    run = sub.add_parser(
        "run",
        help="train one strategy on one scenario and measure forgetting",
        epilog=_run_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = run.add_argument_group("scenario")
    g.add_argument(
        "--scenario",
        default=d.scenario,
        choices=list(PRESETS),
        metavar="NAME",
        help=f"one of: {', '.join(PRESETS)} (default: {d.scenario})",
    )
    g.add_argument(
        "--protocol",
        choices=["task", "domain", "class"],
        help="task-, domain- or class-incremental (default: the scenario's usual one)",
    )
    g.add_argument("--n-tasks", type=int, help="number of tasks (scenarios that take one)")
    g.add_argument(
        "--class-order", type=_ints, metavar="C,C,...", help="class order for split scenarios"
    )
    g.add_argument(
        "--data-dir", metavar="DIR", help="folder with the IDX files (DIR/mnist/... or the files)"
    )
    g = run.add_argument_group("model and strategy")
    g.add_argument(
        "--model", default=d.model, choices=list(MODEL_NAMES), help=f"(default: {d.model})"
    )
    g.add_argument(
        "--hidden",
        type=_ints,
        metavar="N,N,...",
        help="hidden sizes (MLP default 400,400; CNN 128)",
    )
    g.add_argument(
        "--strategy",
        default=d.strategy,
        help=f"one of {', '.join(STRATEGIES)}, or names joined by + for a hybrid "
        "(default: finetune); their parameters are listed below",
    )
    g = run.add_argument_group("training loop")
    g.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help=f"seeds data, weights and batches (default: {d.seed})",
    )
    g.add_argument(
        "--epochs", type=int, default=d.epochs, help=f"passes per task (default: {d.epochs})"
    )
    g.add_argument("--iterations", type=int, help="optimiser steps per task, instead of epochs")
    g.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"(default: {d.batch_size})"
    )
    g.add_argument(
        "--optimizer",
        default=d.optimizer,
        choices=list(OPTIMIZERS),
        help=f"(default: {d.optimizer})",
    )
    g.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default: {d.lr})")
    g.add_argument(
        "--momentum", type=float, default=d.momentum, help=f"SGD momentum (default: {d.momentum})"
    )
    g.add_argument("--keep-optimizer", action="store_true", help="keep one optimiser across tasks")
    g.add_argument(
        "--eval-every", type=int, metavar="STEPS", help="evaluate all tasks every STEPS steps"
    )
    g.add_argument(
        "--log-every",
        type=int,
        default=d.log_every,
        metavar="STEPS",
        help=f"with --store, record the mean loss every STEPS steps (default: {d.log_every})",
    )
    g.add_argument("--device", default=d.device, help=f"torch device (default: {d.device})")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument(
        "--no-raw-data",
        action="store_true",
        help="data-retention policy: refuse strategies that keep raw past inputs",
    )
    g.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file of settings named like these options (lam = 100.0 for --lam 100); "
        "options given here override it",
    )
    g = run.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="write config.json and result.json to DIR")
    g.add_argument(
        "--store",
        metavar="DIR",
        help="keep the run in this run store (a folder per run: config, events, checkpoints "
        "after each task, result; and an index for 'forgetless runs'); a config already "
        "complete there is not trained again, an interrupted one continues",
    )
    g.add_argument("--rerun", action="store_true", help="with --store: train a complete run again")
    g.add_argument(
        "--log",
        metavar="NAMES",
        help="with --store: also send the events to tensorboard and/or mlflow "
        "(comma-separated; each needs its package)",
    )
    g.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the stored run in RUN_DIR from its last completed task (its config.json "
        "decides everything; other options are ignored)",
    )
    g.add_argument(
        "--json", action="store_true", help="print the result as JSON instead of a table"
    )

    sweep = sub.add_parser(
        "sweep",
        help="run a grid or random search over configs and seeds into a run store",
        description="Run every (config, seed) of a TOML sweep file into a run store, skipping "
        "runs already complete there; print the summary over seeds. The file format is in "
        "the docstring of forgetless.sweeps (python -m pydoc forgetless.sweeps).",
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
    sweep.add_argument("--format", choices=["table", "csv", "markdown"], default="table")
    sweep.add_argument("--summary-out", metavar="FILE", help="also write the summary to FILE")

    report = sub.add_parser(
        "report",
        help="one self-contained HTML page (and PNG/SVG figures) from stored runs",
        description="Build an HTML report from runs: run folders, result.json files, run ids "
        "(or unique prefixes) in --store, or a whole store folder. The page needs no network.",
    )
    report.add_argument("runs", nargs="+", help="run folders, result.json files, run ids or stores")
    report.add_argument(
        "-o", "--out", default="report.html", help="the HTML file (default: report.html)"
    )
    report.add_argument(
        "--store",
        metavar="DIR",
        help="where run ids are looked up (default: $FORGETLESS_RUNS or ./runs)",
    )
    report.add_argument("--title", default="forgetless report")
    report.add_argument(
        "--figures", metavar="DIR", help="also save each figure as PNG and SVG in DIR"
    )

    runs = sub.add_parser("runs", help="list, show, compare and summarise stored runs")
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

    data = sub.add_parser("data", help="list, fetch or locate data sets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    lst = data_sub.add_parser("list", help="known data sets, where each was found or how to get it")
    lst.add_argument("--data-dir", metavar="DIR")
    fetch = data_sub.add_parser(
        "fetch", help="download a data set into the cache, verifying hashes"
    )
    fetch.add_argument("name")
    fetch.add_argument("--force", action="store_true", help="download again even if cached")
    fetch.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache folder (default: $FORGETLESS_CACHE or the user cache)",
    )
    path = data_sub.add_parser("path", help="print the folder a data set is loaded from")
    path.add_argument("name")
    path.add_argument("--data-dir", metavar="DIR")
    return parser


def _strategy_params(extra: Sequence[str]) -> dict[str, str]:
    """``--name value`` pairs left over by argparse, as strategy parameters."""
    params, i = {}, 0
    while i < len(extra):
        flag = extra[i]
        if not flag.startswith("--") or len(flag) == 2:
            raise ConfigError(
                f"unexpected argument {flag!r}; strategy parameters are --NAME VALUE pairs"
            )
        name, eq, value = flag[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise ConfigError(f"strategy parameter {flag} needs a value")
            value = extra[i + 1]
            i += 1
        params[name.replace("-", "_")] = value
        i += 1
    return params


def _cmd_run(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from pathlib import Path

    from forgetless.experiment import RunConfig, run, save_run
    from forgetless.runs import RunStore

    if args.resume:
        folder = Path(args.resume)
        result = RunStore(folder.parent).resume(folder)
        print(result.to_json() if args.json else result)
        return 0
    config = RunConfig(
        scenario=args.scenario,
        protocol=args.protocol,
        n_tasks=args.n_tasks,
        class_order=args.class_order,
        data_dir=args.data_dir,
        model=args.model,
        hidden=args.hidden,
        strategy=args.strategy,
        strategy_params=_strategy_params(extra),
        seed=args.seed,
        epochs=args.epochs,
        iterations=args.iterations,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        reset_optimizer=not args.keep_optimizer,
        eval_every=args.eval_every,
        log_every=args.log_every,
        device=args.device,
        threads=args.threads,
        progress=not args.no_progress,
        retain_raw_data=not args.no_raw_data,
    )
    if args.config:
        config = _merge_config_file(args.config, config, extra)
    if args.log and not args.store:
        raise ConfigError("--log needs --store (the loggers write next to the stored run)")
    if args.store:
        store = RunStore(args.store)
        folder = store.folder(store.run_id(config))
        row = store.index.get(folder.name)
        if row is not None and row["status"] == "complete" and not args.rerun:
            print(f"already complete in the store: {folder} (--rerun trains it again)")
        loggers = [n.strip() for n in args.log.split(",") if n.strip()] if args.log else []
        result = store.execute(config, rerun=args.rerun, loggers=loggers)
    else:
        result = run(config)
    print(result.to_json() if args.json else result)
    if args.store and not args.json:
        print(f"stored in {folder}")
    if args.out:
        out = save_run(result, args.out)
        if not args.json:
            print(f"saved {out / 'config.json'} and {out / 'result.json'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forgetless.demo import run_demo
    from forgetless.experiment import save_run

    for result in run_demo(seed=args.seed, echo=print):
        if args.out:
            save_run(result, Path(args.out) / result.strategy)
    if args.out:
        print(f"saved the runs under {args.out}")
    return 0


def _merge_config_file(path: str, from_flags, extra: Sequence[str]):
    """The config in ``path``, with the options given on the command line on top (an option
    counts as given when its value differs from the default)."""
    from dataclasses import fields

    from forgetless.experiment import RunConfig, load_config

    config = load_config(path)
    defaults = RunConfig()
    data = config.to_dict()
    for f in fields(RunConfig):
        value = getattr(from_flags, f.name)
        if f.name != "strategy_params" and value != getattr(defaults, f.name):
            data[f.name] = value
    data["strategy_params"] = {**config.strategy_params, **_strategy_params(extra)}
    return RunConfig.from_dict(data)


def _cmd_runs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from forgetless.runs import RunStore, default_store

    if args.runs_command is None:
        parser.parse_args(["runs", "--help"])
        return 2
    root = Path(args.store) if args.store else default_store()
    if not (root / "index.sqlite").is_file():
        raise ConfigError(
            f"no run store at {root} (create one with 'forgetless run --store {root}')"
        )
    store = RunStore(root)
    if args.runs_command == "ls":
        where = {
            k: getattr(args, k) for k in ("status", "scenario", "strategy") if getattr(args, k)
        }
        rows = store.index.find(**where)
        print(f"{'id':<58} {'status':<12} {'tasks':>5} {'ACC':>6} {'BWT':>6}")
        for row in rows:
            tasks = f"{row['tasks_done'] or 0}/{row['n_tasks'] or '?'}"
            acc = "" if row["acc"] is None else f"{100 * row['acc']:.1f}"
            bwt = "" if row["bwt"] is None else f"{100 * row['bwt']:.1f}"
            print(f"{row['id']:<58} {row['status']:<12} {tasks:>5} {acc:>6} {bwt:>6}")
        print(f"{len(rows)} run(s) in {root}")
        return 0
    if args.runs_command == "summary":
        from forgetless.sweeps import format_summary, summarise

        complete = [store.result(r["id"]) for r in store.index.find(status="complete")]
        print(format_summary(summarise(complete), args.format), end="")
        return 0
    if args.runs_command == "show":
        folder = store.locate(args.run)
        print(f"{folder}")
        print(store.result(str(folder)))
        return 0
    results = [store.result(str(store.locate(r))) for r in args.runs]
    names = ["ACC", "BWT", "FWT", "forgetting", "learning acc"]
    keys = ["acc", "bwt", "fwt", "forgetting", "learning_accuracy"]
    print(f"{'run':<40}" + "".join(f"{n:>14}" for n in names))
    for run_name, result in zip(args.runs, results, strict=True):
        m = result.metrics
        cells = ["n/a" if m[k] is None else f"{100 * m[k]:.1f}" for k in keys]
        label = f"{result.strategy} s{result.seed} ({Path(run_name).name[:20]})"
        print(f"{label:<40}" + "".join(f"{c:>14}" for c in cells))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from forgetless.runs import RunStore, default_store
    from forgetless.sweeps import format_summary, load_sweep, run_sweep, summarise

    sweep = load_sweep(args.file)
    root = Path(args.store) if args.store else default_store()
    runs = sweep.runs()
    print(f"{len(runs)} runs ({len(sweep.configs)} configs x {len(sweep.seeds)} seeds) into {root}")
    bar = tqdm(total=None, unit="run", file=sys.stderr, disable=None)

    def progress(done: int, total: int, left: float) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(f"about {left / 60:.1f} min left")

    with bar:
        report = run_sweep(sweep, root, args.workers, args.backend, args.address, progress)
    print(
        f"done: {len(report.done)} run now, {len(report.skipped)} already complete, "
        f"{len(report.failed)} failed, in {report.seconds:.0f} s"
    )
    for run_id, error in report.failed:
        print(f"  failed {run_id}: {error}")
    store = RunStore(root)
    ids = {store.run_id(c) for c in runs}
    results = [store.result(i) for i in sorted(ids) if store.index.get(i)["status"] == "complete"]
    text = format_summary(summarise(results), args.format)
    print(text, end="")
    if args.summary_out:
        Path(args.summary_out).write_text(text)
    return 1 if report.failed else 0


def _collect_results(names: Sequence[str], store_dir: str | None) -> list:
    """Results from run folders, result.json files, stores (all complete runs) or run ids."""
    from pathlib import Path

    from forgetless.result import Result
    from forgetless.runs import RunStore, default_store

    results = []
    for name in names:
        path = Path(name)
        if path.is_file():
            results.append(Result.load(path))
        elif (path / "result.json").is_file():
            results.append(Result.load(path / "result.json"))
        elif (path / "index.sqlite").is_file():
            store = RunStore(path)
            results += [store.result(r["id"]) for r in store.index.find(status="complete")]
        else:
            root = Path(store_dir) if store_dir else default_store()
            if not (root / "index.sqlite").is_file():
                raise ConfigError(f"{name!r} is not a run folder, a result file or a run store")
            store = RunStore(root)
            results.append(store.result(str(store.locate(name))))
    return results


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forgetless.report import accuracy_heatmap, forgetting_curves, save, write_report

    results = _collect_results(args.runs, args.store)
    out = write_report(results, args.out, args.title)
    print(f"wrote {out} ({len(results)} run(s))")
    if args.figures:
        folder = Path(args.figures)
        for r in results:
            stem = f"{r.scenario}_{r.strategy}_s{r.seed}"
            save(accuracy_heatmap(r), folder / f"{stem}_matrix")
            save(forgetting_curves(r), folder / f"{stem}_curves")
        print(f"figures (PNG and SVG) in {folder}")
    return 0


def _cmd_data(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from forgetless import data

    if args.data_command == "list":
        print(f"{'name':<15}{'status':<10}where / how to get it")
        print(f"{'digits':<15}{'ready':<10}bundled with scikit-learn (offline)")
        for status in data.source_status(args.data_dir):
            state = "ready" if status.found else "missing"
            print(f"{status.name:<15}{state:<10}{status.hint}")
        return 0
    if args.data_command == "fetch":
        folder = data.fetch(args.name, cache_dir=args.cache_dir, force=args.force)
        print(f"{args.name}: verified files in {folder}")
        return 0
    if args.data_command == "path":
        if args.name == "digits":
            print("digits: bundled with scikit-learn")
            return 0
        found = data.locate(args.name, args.data_dir)
        if found is None:
            data.load(args.name, args.data_dir)  # raises the detailed not-found error
        print(found.folder)
        return 0
    parser.parse_args(["data", "--help"])
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``forgetless`` command; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command != "run" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "run":
            return _cmd_run(args, extra)
        if args.command == "data":
            return _cmd_data(args, parser)
        if args.command == "runs":
            return _cmd_runs(args, parser)
        if args.command == "sweep":
            return _cmd_sweep(args)
        if args.command == "report":
            return _cmd_report(args)
        parser.print_help()
        return 2
    except ForgetlessError as err:
        print(f"forgetless: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("forgetless: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`forgetless runs ls | head`): stop quietly, as Unix tools do.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (stdout must stay open until exit)
        return 0


if __name__ == "__main__":
    sys.exit(main())
