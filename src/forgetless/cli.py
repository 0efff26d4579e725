"""The ``forgetless`` command. Thin: it parses arguments, then calls the library."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from forgetless.errors import ConfigError, ForgetlessError
from forgetless.validation import check_positive_int

EXAMPLES_RUN = """\
examples:
  forgetless run --scenario split-digits --strategy finetune --epochs 20 --lr 0.1
  forgetless run --scenario split-digits --protocol task --strategy ewc --lam 100
  forgetless run --scenario split-mnist --protocol class --strategy finetune --model mlp \\
      --epochs 1 --seed 0 --data-dir DIR --out runs/x
"""


def _run_epilog() -> str:
    """Each strategy with its parameters and defaults, then examples."""
    from forgetless.strategies import STRATEGIES, parameter_help, strategy_parameters

    lines = [
        "strategies and their parameters, with their defaults (any other --NAME VALUE goes "
        "to the strategy):"
    ]
    for name, cls in STRATEGIES.items():
        params = strategy_parameters(cls)
        meanings = parameter_help(cls)
        lines.append(f"  {name}" + ("" if params else "  (no parameters)"))
        for p, v in params.items():
            default = f"{v.default:g}" if isinstance(v.default, float) else v.default
            flag = f"--{p.replace('_', '-')} {default}"
            lines.append(f"      {flag:<28} {meanings[p]}".rstrip())
    return "\n".join(lines) + "\n\n" + EXAMPLES_RUN


def _say(message: str) -> None:
    """A line for the user on stderr (stdout may be JSON)."""
    print(f"forgetless: {message}", file=sys.stderr, flush=True)


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    from forgetless import __version__
    from forgetless.engine import OPTIMIZERS, PRECISIONS
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
        help="offline demo: the collapse, replay and EWC, and joint training as the bound",
        description="Train a small MLP on split-digits (scikit-learn's 8x8 digits, "
        "5 tasks of 2 classes, class-incremental) with plain fine-tuning (the collapse), "
        "replay and EWC (mitigations; EWC with the task given) and joint training (the "
        "bound); print each accuracy matrix, what ACC, BWT and the random-init row mean, and "
        "a summary. Offline, under a minute.",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--out", metavar="DIR", help="also save each run (config.json, result.json) under DIR"
    )

    from forgetless.articles import ARTICLES

    article = sub.add_parser(
        "article",
        help="a seed article's experiment, our figures printed beside the article's",
        description="Run one of the seed articles' experiments with the article's settings "
        "and print the article's figures beside ours: binary (two competing binary tasks, "
        "fine-tuning then EWC; offline, seconds) or mnist-fashion (MNIST then Fashion-MNIST, "
        "a CNN; needs the data, about 5 CPU-minutes).",
    )
    article.add_argument("name", choices=list(ARTICLES), help="the article")
    article.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    article.add_argument("--data-dir", metavar="DIR", help="where MNIST and Fashion-MNIST are")
    article.add_argument("--threads", type=int, help="CPU threads for torch")
    article.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    article.add_argument("--json", action="store_true", help="print the comparison as JSON instead")

    sub.add_parser(
        "scenarios",
        help="the scenarios: tasks, protocol, data and the loop settings that learn each",
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
        "--data-dir",
        metavar="DIR",
        help="folder with the IDX files (DIR/mnist/... or the files); for --scenario text, "
        "the domains: one .txt file or folder of them each, in name order",
    )
    g.add_argument(
        "--sequence-length", type=int, metavar="T", help="text: tokens per example (default 128)"
    )
    g.add_argument(
        "--tokenizer",
        metavar="KIND",
        help="text: char (default), bpe or bpe:SIZE (trained locally on the first domain)",
    )
    g.add_argument(
        "--standardize",
        metavar="HOW",
        help="map inputs to (x - mean) / std: train (the stream's training data), dataset "
        "(published constants: MNIST 0.1307,0.3081) or MEAN,STD (default: pixels in [0, 1])",
    )
    g.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="revisit the tasks: train them in order N times (A, B, A, B, ...); the matrix "
        "gets a row per training phase",
    )
    g.add_argument(
        "--schedule",
        type=_ints,
        metavar="T,T,...",
        help="the task of each training phase, counted from 1 as the tables do (1,2,1,2)",
    )
    g = run.add_argument_group("model and strategy")
    g.add_argument(
        "--model",
        default=d.model,
        metavar="NAME",
        help=f"one of {', '.join(MODEL_NAMES)}, or hf:TYPE (a Hugging Face causal LM from its "
        f"config, e.g. hf:gpt2; needs transformers) (default: {d.model})",
    )
    g.add_argument(
        "--hidden",
        type=_ints,
        metavar="N,N,...",
        help="hidden sizes (MLP default 400,400; CNN 128; gpt one width per block, "
        "default 128,128,128,128)",
    )
    g.add_argument(
        "--init",
        metavar="NAME",
        help="the initial weights: default (each layer's PyTorch default) or xavier "
        "(Xavier-uniform weights, zero biases: the DER authors' MLP), drawn from --seed",
    )
    g.add_argument(
        "--strategy",
        default=d.strategy,
        help=f"one of {', '.join(STRATEGIES)}, or names joined by + for a hybrid "
        "(default: finetune); their parameters are listed below",
    )
    g.add_argument(
        "--router",
        choices=["entropy", "mahalanobis", "ncm"],
        help="infer each test input's task, so that a method that needs the task id (pnn, "
        "packnet, hat, hypermask, specialists) runs under --protocol class or domain: lowest "
        "predictive entropy, Mahalanobis distance (Ledoit-Wolf covariance) or nearest class "
        "mean on each task's features; reports the routing accuracy",
    )
    g = run.add_argument_group("training loop")
    g.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help=f"seeds data, weights and batches (default: {d.seed})",
    )
    preset = " (default: the scenario's; see 'forgetless scenarios')"
    g.add_argument("--epochs", type=int, help="passes over each task's data" + preset)
    g.add_argument(
        "--iterations", type=int, help="optimiser steps per task, instead of epochs" + preset
    )
    g.add_argument("--batch-size", type=int, help="examples per step" + preset)
    g.add_argument("--optimizer", choices=list(OPTIMIZERS), help="the optimiser" + preset)
    g.add_argument("--lr", type=float, help="learning rate" + preset)
    g.add_argument("--momentum", type=float, help="SGD momentum" + preset)
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
        "--precision",
        choices=list(PRECISIONS),
        help="arithmetic of training steps: float32 (default), or bfloat16 (autocast: faster "
        "on CPUs with bfloat16 units, a little less accurate)",
    )
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
    g.add_argument(
        "--out",
        metavar="DIR",
        help="this run's folder: config.json, events.jsonl and checkpoints as it goes, "
        "result.json at the end (as a run in a store); --resume DIR continues it",
    )
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
        help="continue the run in RUN_DIR (of a store, or written with --out) from its last "
        "completed task (its config.json decides everything; other options are ignored)",
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
    sweep.add_argument(
        "--no-weights",
        action="store_true",
        help="keep no weights of complete runs (a stopped run still resumes): a few KB a run "
        "instead of a few MB",
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
    report.add_argument(
        "--analysis",
        nargs="+",
        metavar="SVG_OR_DIR",
        help="also embed these SVG figures (or every SVG in these folders), e.g. the output "
        "of 'forgetless landscape' or 'forgetless plasticity'",
    )

    frontier = sub.add_parser(
        "frontier",
        help="sweep strategies' strengths; plot stability against plasticity, Pareto fronts",
        description="For each --strategy with its --range, run every value times --seeds into "
        "a run store (complete runs are reused), place each setting by stability (accuracy "
        "kept on old tasks) and plasticity (accuracy reached on new ones), and report each "
        "strategy's Pareto front and hypervolume. Example: forgetless frontier --scenario "
        "mnist-fashion --strategy ewc --range lambda=1e0:1e6 --strategy replay --range "
        "buffer=50:5000 --seeds 3. Methods that answer by the task id (pnn, packnet, hat, "
        "hypermask) need --protocol task, and then every strategy runs under it.",
    )
    frontier.add_argument(
        "--strategy", action="append", required=True, help="a strategy (repeat for several)"
    )
    frontier.add_argument(
        "--range",
        action="append",
        required=True,
        metavar="NAME=LOW:HIGH",
        help="the parameter each --strategy sweeps, in the same order: LOW:HIGH on a log scale "
        "(--points values) or V1,V2,...; lambda and buffer are accepted for lam and buffer_size; "
        "'none' places the strategy once at its settings (pnn has no strength to sweep)",
    )
    frontier.add_argument("--points", type=int, default=7, help="values per range (default: 7)")
    frontier.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    frontier.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file of run settings (as for 'forgetless run --config'); the options "
        "below override it",
    )
    for name, kind in FRONTIER_RUN_OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        frontier.add_argument(flag, type=kind, help="as for 'forgetless run'")
    frontier.add_argument("--workers", type=int, default=1, help="runs at once (default: 1)")
    frontier.add_argument("--backend", choices=["local", "ray"], default="local")
    frontier.add_argument(
        "--store", metavar="DIR", help="the run store (default: $FORGETLESS_RUNS or ./runs)"
    )
    frontier.add_argument(
        "--no-weights",
        action="store_true",
        help="keep no weights of complete runs (a stopped run still resumes): a few KB a run "
        "instead of a few MB",
    )
    frontier.add_argument(
        "-o", "--out", metavar="DIR", default="frontier",
        help="where frontier.png, frontier.svg and frontier.json go (default: ./frontier)",
    )  # fmt: skip

    _add_analysis_parsers(sub)
    _add_plasticity_parsers(sub)
    from forgetless.production import commands as production

    production.add_parsers(sub)
    from forgetless.reproduce import command as reproduce

    reproduce.add_arguments(
        sub.add_parser("reproduce", help=reproduce.HELP, description=reproduce.DESCRIPTION)
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
    reindex = runs_sub.add_parser(
        "reindex",
        help="rebuild index.sqlite from the run folders (done by itself when it is missing "
        "or corrupt)",
    )
    reindex.add_argument("--store", metavar="DIR", help=store_help)

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
    from forgetless.experiment import RunConfig, run
    from forgetless.runs import RunStore, is_store, open_run_folder

    if args.resume:
        store, folder = open_run_folder(args.resume)
        result = store.resume(folder, rerun=args.rerun, on_wait=_say)
        print(result.to_json() if args.json else result)
        return 0
    config = RunConfig(
        scenario=args.scenario,
        protocol=args.protocol,
        n_tasks=args.n_tasks,
        class_order=args.class_order,
        data_dir=args.data_dir,
        sequence_length=args.sequence_length,
        tokenizer=args.tokenizer,
        standardize=args.standardize,
        model=args.model,
        hidden=args.hidden,
        init=args.init,
        strategy=args.strategy,
        strategy_params=_strategy_params(extra),
        router=args.router,
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
        precision=args.precision,
        repeat=args.repeat,
        schedule=None if args.schedule is None else [t - 1 for t in args.schedule],
    )
    if args.config:
        config = _merge_config_file(args.config, config, extra)
    if args.store and args.out:
        raise ConfigError(
            "give --store DIR (a folder per run, with an index) or --out DIR (this run's "
            "folder), not both: they write the same files"
        )
    if args.log and not (args.store or args.out):
        raise ConfigError("--log needs --store or --out (the loggers write next to the run)")
    if args.store or args.out:
        store = RunStore(args.store) if args.store else RunStore.run_folder(args.out)
        folder = store.folder(store.run_id(config))
        done = (folder / "result.json").is_file()
        if args.store and is_store(args.store):
            row = store.index.get(folder.name)
            done = row is not None and row["status"] == "complete"
        if done and not args.rerun:
            # On stderr: with --json, stdout must be the JSON alone.
            _say(f"already complete: {folder} (--rerun trains it again)")
        loggers = [n.strip() for n in args.log.split(",") if n.strip()] if args.log else []
        result = store.execute(config, rerun=args.rerun, loggers=loggers, on_wait=_say)
    else:
        result = run(config)
    print(result.to_json() if args.json else result)
    if (args.store or args.out) and not args.json:
        print(f"stored in {folder} (continue an interrupted run: forgetless run --resume {folder})")
    return 0


def _cmd_article(args: argparse.Namespace) -> int:
    import json

    from forgetless.articles import run_article

    report = run_article(
        args.name,
        args.seed,
        echo=(lambda _: None) if args.json else print,
        data_dir=args.data_dir,
        threads=args.threads,
        device=args.device,
        progress=False,
    )
    if args.json:
        del report["results"]
        print(json.dumps(report, indent=1))
    return 0


def _cmd_scenarios() -> int:
    from forgetless.scenarios import PRESETS

    print(f"{'scenario':<16} {'protocol':<9} {'tasks':>5}  loop settings (options override)")
    for name, preset in PRESETS.items():
        tasks = "?" if preset.default_tasks is None else str(preset.default_tasks)
        print(f"{name:<16} {preset.protocol.value:<9} {tasks:>5}  {preset.loop.describe()}")
        print(f"{'':<33}{preset.description}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forgetless.demo import run_demo
    from forgetless.experiment import save_run

    for name, result in run_demo(seed=args.seed, echo=print).items():
        if args.out:
            save_run(result, Path(args.out) / name)
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

    from forgetless.runs import RunStore, default_store, is_store

    if args.runs_command is None:
        parser.parse_args(["runs", "--help"])
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


@contextlib.contextmanager
def _runs_bar() -> Iterator[Callable[[int, int, float], None]]:
    """A progress bar of runs on stderr; yields the ``progress(done, total, seconds_left)``
    callback that sweeps call after each run."""
    from tqdm.auto import tqdm

    with tqdm(total=None, unit="run", file=sys.stderr, disable=None) as bar:

        def progress(done: int, total: int, left: float) -> None:
            bar.total = total
            bar.n = done
            bar.set_postfix_str(f"about {left / 60:.1f} min left")

        yield progress


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forgetless.runs import RunStore, default_store
    from forgetless.sweeps import format_summary, load_sweep, run_sweep, summarise

    sweep = load_sweep(args.file)
    root = Path(args.store) if args.store else default_store()
    runs = sweep.runs()
    print(f"{len(runs)} runs ({len(sweep.configs)} configs x {len(sweep.seeds)} seeds) into {root}")
    with _runs_bar() as progress:
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


#: The run settings `forgetless frontier` takes as options (the rest come from --config).
FRONTIER_RUN_OPTIONS = {
    "scenario": str,
    "protocol": str,
    "n_tasks": int,
    "data_dir": str,
    "model": str,
    "hidden": _ints,
    "epochs": int,
    "iterations": int,
    "batch_size": int,
    "optimizer": str,
    "lr": float,
}


def _cmd_frontier(args: argparse.Namespace) -> int:
    from forgetless.experiment import RunConfig, load_config
    from forgetless.report.figures import frontier_plot
    from forgetless.studies.frontier import format_frontiers, parse_range, run_frontiers

    if len(args.strategy) != len(args.range):
        raise ConfigError(
            f"give one --range per --strategy, in the same order: got {len(args.strategy)} "
            f"strategies and {len(args.range)} ranges"
        )
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    base = load_config(args.config) if args.config else RunConfig()
    overrides = {k: v for k in FRONTIER_RUN_OPTIONS if (v := getattr(args, k)) is not None}
    base = RunConfig.from_dict({**base.to_dict(), **overrides, "seed": 0})
    ranges = []
    for strategy, text in zip(args.strategy, args.range, strict=True):
        parameter, values = parse_range(text, args.points)
        ranges.append((strategy, parameter, values))
    with _runs_bar() as progress:
        frontiers = run_frontiers(
            base,
            ranges,
            list(range(args.seeds)),
            _store(args),
            args.workers,
            args.backend,
            progress,
            keep_weights=not args.no_weights,
        )
    print(format_frontiers(frontiers), end="")
    data = {"base": base.to_dict(), "frontiers": [f.to_dict() for f in frontiers]}
    _write_outputs(
        args.out, "frontier", data, {"frontier": frontier_plot(frontiers, scenario=base.scenario)}
    )
    return 0


def _store(args: argparse.Namespace):
    """The run store a study writes into: ``--store``, else the default one."""
    from pathlib import Path

    from forgetless.runs import default_store

    return Path(args.store) if args.store else default_store()


def _write_outputs(out: str, name: str, data: Any, figures: dict[str, Any]) -> None:
    """``OUT/NAME.json`` and each figure as ``OUT/STEM.png`` and ``.svg``, then one line
    naming the files: how every analysis command ends."""
    import json
    from pathlib import Path

    from forgetless.report.figures import save

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    files = [f for stem, figure in figures.items() for f in save(figure, folder / stem)]
    print(f"wrote {path}, " + ", ".join(str(f) for f in files))


def _add_analysis_parsers(sub) -> None:
    """``landscape`` and ``trajectory``: train task A then task B, then look at weight space."""
    landscape = sub.add_parser(
        "landscape",
        help="loss landscape around the task-A solution: 1-D, 2-D, sharpness, A-to-B line",
        description="Train the first two tasks of a scenario, then draw the loss of task A "
        "along filter-normalised random directions around the task-A solution (1-D curves "
        "and a 2-D plane, Li et al. 2018), its sharpness (top Hessian eigenvalue), and the "
        "losses of both tasks on the straight line from the A solution to the B solution. "
        "Any other --NAME VALUE goes to the strategy (--lam 1000).",
    )
    trajectory = sub.add_parser(
        "trajectory",
        help="weight-space path of task A then task B on its PCA plane, per strategy",
        description="Train the first two tasks of a scenario with each --strategy from the "
        "same initial weights, record the weights every --every steps, and draw the paths on "
        "their top two principal directions over the losses of task A and task B. Any other "
        "--NAME VALUE goes to the strategies that accept it (--lam 1000).",
    )
    for p in (landscape, trajectory):
        p.add_argument("--scenario", default="split-digits", help="(default: split-digits)")
        p.add_argument("--protocol", help="task, domain or class (default: the scenario's)")
        p.add_argument("--data-dir", metavar="DIR")
        p.add_argument("--model", default="mlp", help="mlp, cnn or cnn-skip (default: mlp)")
        p.add_argument("--hidden", type=_ints, help="hidden sizes, e.g. 400,400")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--epochs", type=int, default=1)
        p.add_argument("--iterations", type=int)
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
        p.add_argument("--lr", type=float, default=0.01)
        p.add_argument(
            "--examples",
            type=int,
            default=2000,
            help="test examples per task the losses are computed on (default: 2000; 0: all)",
        )
        p.add_argument(
            "-o",
            "--out",
            metavar="DIR",
            default=p.prog.split()[-1],
            help="where the JSON and the PNG/SVG figures go (default: ./landscape, ./trajectory)",
        )
    landscape.add_argument("--strategy", default="finetune", help="(default: finetune)")
    _add_store_options(landscape)
    landscape.add_argument("--directions", type=int, default=3, help="1-D curves (default: 3)")
    landscape.add_argument("--span", type=float, default=1.0, help="alpha in [-span, span]")
    landscape.add_argument("--resolution", type=int, default=41, help="points per 1-D curve")
    landscape.add_argument(
        "--plane-resolution", type=int, default=21, help="points a side of the plane (0: none)"
    )
    landscape.add_argument(
        "--hessian-examples", type=int, default=1000, help="for the sharpness (0: skip it)"
    )
    trajectory.add_argument(
        "--strategy", action="append", help="repeat for several (default: finetune and ewc)"
    )
    trajectory.add_argument("--every", type=int, default=10, help="record every N steps")
    trajectory.add_argument("--resolution", type=int, default=25, help="grid points a side")
    _add_store_options(trajectory)


def _analysis_config(args: argparse.Namespace, strategy: str, params: dict):
    from forgetless.experiment import RunConfig

    return RunConfig(
        scenario=args.scenario,
        protocol=args.protocol,
        data_dir=args.data_dir,
        model=args.model,
        hidden=args.hidden,
        strategy=strategy,
        strategy_params=params,
        seed=args.seed,
        epochs=args.epochs,
        iterations=args.iterations,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        progress=True,  # the engine draws a bar on a terminal only
    )


def _cmd_landscape(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from forgetless.report import analysis_figures as figs
    from forgetless.studies.landscape import format_landscape, landscape_run

    config = _analysis_config(args, args.strategy, _strategy_params(extra))
    with _runs_bar() as progress:
        study, solved = landscape_run(
            config,
            _store(args),
            args.examples or None,
            args.workers,
            progress=progress,
            directions=args.directions,
            span=args.span,
            resolution=args.resolution,
            plane=args.plane_resolution > 0,
            plane_resolution=args.plane_resolution or None,
            hessian=args.hessian_examples > 0,
            hessian_examples=args.hessian_examples,
            plane_progress=True,
        )
    report = study.to_dict()
    report["accuracy_matrix"] = solved.result.accuracy_matrix
    print(format_landscape(study, solved), end="")
    figures = {"landscape_1d": figs.loss_curves({"task A": study.lines})}
    if study.plane is not None:
        contour = figs.loss_contour(study.plane, "task A loss around its solution")
        figures["landscape_2d"] = contour
    if study.interpolation:
        figures["interpolation"] = figs.interpolation_plot(study.interpolation)
    _write_outputs(args.out, "landscape", report, figures)
    return 0


def _cmd_trajectory(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from forgetless.report.analysis_figures import trajectory_plot
    from forgetless.strategies import STRATEGIES, strategy_parameters
    from forgetless.studies.trajectory import (
        format_trajectory,
        trajectory_configs,
        trajectory_study,
    )

    names = args.strategy or ["finetune", "ewc"]
    params = _strategy_params(extra)
    accepted = {name: strategy_parameters(STRATEGIES[name]) for name in names if name in STRATEGIES}
    unused = set(params) - {k for keys in accepted.values() for k in keys}
    if unused:
        raise ConfigError(
            f"parameter(s) {', '.join(sorted(unused))} accepted by none of {', '.join(names)}"
        )
    strategies = {
        name: (name, {k: v for k, v in params.items() if k in accepted.get(name, ())})
        for name in names
    }
    configs = trajectory_configs(_analysis_config(args, "finetune", {}), strategies, args.every)
    with _runs_bar() as progress:
        study = trajectory_study(
            configs,
            _store(args),
            args.workers,
            progress=progress,
            resolution=args.resolution,
            n_examples=args.examples or None,
        )
    print(format_trajectory(study), end="")
    _write_outputs(args.out, "trajectory", study.to_dict(), {"trajectory": trajectory_plot(study)})
    return 0


def _collect_results(names: Sequence[str], store_dir: str | None) -> list:
    """Results from run folders, result.json files, stores (all complete runs) or run ids."""
    from pathlib import Path

    from forgetless.result import Result
    from forgetless.runs import RunStore, default_store, is_store

    results = []
    for name in names:
        path = Path(name)
        if path.is_file():
            results.append(Result.load(path))
        elif (path / "result.json").is_file():
            results.append(Result.load(path / "result.json"))
        elif is_store(path):
            results += RunStore(path).complete_results()
        else:
            root = Path(store_dir) if store_dir else default_store()
            if not is_store(root):
                raise ConfigError(f"{name!r} is not a run folder, a result file or a run store")
            store = RunStore(root)
            results.append(store.result(str(store.locate(name))))
    return results


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forgetless.report import (
        accuracy_heatmap,
        forgetting_curves,
        perplexity_heatmap,
        save,
        write_report,
    )

    results = _collect_results(args.runs, args.store)
    extra = []
    for name in args.analysis or []:
        path = Path(name)
        extra += sorted(path.glob("*.svg")) if path.is_dir() else [path]
    out = write_report(results, args.out, args.title, extra)
    print(f"wrote {out} ({len(results)} run(s))")
    if args.figures:
        from forgetless.analysis.frontier import frontiers_in
        from forgetless.labels import unique_stems
        from forgetless.report.figures import frontier_plot, run_title, strategy_comparison
        from forgetless.report.html import labelled

        folder = Path(args.figures)
        ordered, labels = labelled(results)
        # Named by what tells the runs apart, numbered where two would coincide: no run's
        # figures overwrite another's.
        for r, label, stem in zip(ordered, labels, unique_stems(labels), strict=True):
            stem = f"{r.scenario}_{stem}"
            save(
                accuracy_heatmap(r, run_title(r, "accuracy (%)", label)), folder / f"{stem}_matrix"
            )
            curves = forgetting_curves(
                r, run_title(r, "accuracy on each task along the stream", label)
            )
            save(curves, folder / f"{stem}_curves")
            if r.perplexity_matrix:
                heatmap = perplexity_heatmap(r, run_title(r, "perplexity per token", label))
                save(heatmap, folder / f"{stem}_perplexity")
        if len(results) > 1:
            save(strategy_comparison(results), folder / "comparison")
        frontiers = frontiers_in(results)
        if frontiers:
            scenario = ", ".join(sorted({r.scenario for r in results}))
            save(frontier_plot(frontiers, scenario=scenario), folder / "frontier")
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
        if found is None and args.name == "shakespeare":
            from forgetless.data.shakespeare import not_found_message
            from forgetless.errors import DataError

            raise DataError(not_found_message(args.data_dir))
        if found is None:
            data.load(args.name, args.data_dir)  # raises the detailed not-found error
        print(found.folder)
        return 0
    parser.parse_args(["data", "--help"])
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``forgetless`` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["reproduce"]:  # a module of its own, parsed alone: --list imports no torch
        from forgetless.reproduce import command

        return command.main(argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    from forgetless.production.commands import EXTRA_ARGUMENTS

    if args.command not in ("run", "landscape", "trajectory", *EXTRA_ARGUMENTS) and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _dispatch(args, extra, parser)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line a user reads, not a source location."""
    print(f"forgetless: warning: {message}", file=file or sys.stderr)


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _add_plasticity_parsers(sub) -> None:
    """``plasticity`` and ``overlap``: hidden units along a long stream and between two tasks."""
    p = sub.add_parser(
        "plasticity",
        help="loss of plasticity on a long permuted stream: new-task accuracy, dormant units",
        description="Train an MLP on a long stream of permuted tasks (each its own pixel "
        "permutation and its own draw of images) with each --strategy, and record after every "
        "task the accuracy reached on it, the fraction of dormant units, the effective rank of "
        "the hidden layers and the mean weight magnitude (Dohare et al. 2024). A --strategy is "
        "NAME or NAME:KEY=VALUE,KEY=VALUE (continual-backprop:rho=1e-4,maturity=100).",
    )
    p.add_argument("--data", default="mnist", help="source data set (default: mnist)")
    p.add_argument("--data-dir", metavar="DIR", help="folder with the IDX files")
    p.add_argument("--tasks", type=int, default=100, help="tasks in the stream (default: 100)")
    p.add_argument("--train-per-task", type=int, default=6000, help="(default: 6000)")
    p.add_argument("--test-per-task", type=int, default=500, help="(default: 500)")
    p.add_argument(
        "--strategy", action="append", help="a strategy, repeat for several (default: finetune)"
    )
    p.add_argument("--hidden", type=_ints, default=[100, 100, 100], help="(default: 100,100,100)")
    p.add_argument("--lr", type=float, default=0.3, help="SGD step size (default: 0.3)")
    p.add_argument("--batch-size", type=int, default=16, help="(default: 16)")
    p.add_argument("--epochs", type=int, default=1, help="passes per task (default: 1)")
    p.add_argument("--seeds", type=_ints, default=[0], help="seeds, e.g. 0,1,2 (default: 0)")
    p.add_argument("--probe", type=int, default=2000, help="test inputs for unit measures")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--smooth", type=int, default=1, help="running mean over tasks in the figure")
    _add_store_options(p)
    p.add_argument(
        "-o", "--out", metavar="DIR", default="plasticity",
        help="where plasticity.json, .png and .svg go (default: ./plasticity)",
    )  # fmt: skip
    o = sub.add_parser(
        "overlap",
        help="representation overlap, CKA and forgetting for task pairs of graded similarity",
        description="For each --angles value, train an MLP on the data set (task A) then on "
        "the data set rotated by that angle (task B); per hidden layer, measure the overlap of "
        "the units both tasks use, the CKA of A's representation before and after B, and the "
        "forgetting of A; then test the seed article's claim that 70% overlap forgets 45% "
        "more than 30% overlap.",
    )
    o.add_argument("--data", default="mnist", help="source data set (default: mnist)")
    o.add_argument("--data-dir", metavar="DIR", help="folder with the IDX files")
    o.add_argument(
        "--angles", type=_floats, default=[0, 15, 30, 45, 60, 90, 120, 150, 180],
        help="rotations of task B in degrees (default: 0,15,30,45,60,90,120,150,180)",
    )  # fmt: skip
    o.add_argument("--seeds", type=_ints, default=[0], help="seeds, e.g. 0,1,2 (default: 0)")
    o.add_argument("--hidden", type=_ints, default=[256, 256], help="(default: 256,256)")
    o.add_argument("--lr", type=float, default=0.05, help="SGD step size (default: 0.05)")
    o.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    o.add_argument("--epochs", type=int, default=5, help="passes per task (default: 5)")
    o.add_argument("--train-size", type=int, default=10000, help="training images drawn")
    o.add_argument("--test-size", type=int, default=2000, help="test images drawn")
    o.add_argument("--probe", type=int, default=1000, help="test inputs for unit measures")
    o.add_argument("--rate", type=float, default=0.5, help="firing rate that makes a unit active")
    o.add_argument("--threshold", type=float, default=0.0, help="activation that counts as firing")
    o.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    _add_store_options(o)
    o.add_argument(
        "-o", "--out", metavar="DIR", default="overlap",
        help="where overlap.json, .png and .svg go (default: ./overlap)",
    )  # fmt: skip


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    """``--store`` and ``--workers`` of a study: its runs go into the run store (a second
    call with the same store trains nothing), ``--workers`` at once."""
    parser.add_argument(
        "--store", metavar="DIR", help="the run store (default: $FORGETLESS_RUNS or ./runs)"
    )
    parser.add_argument("--workers", type=int, default=1, help="runs at once (default: 1)")


def _strategy_spec(text: str) -> tuple[str, dict[str, str]]:
    """``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` as a name and its (string) parameters."""
    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(
                f"--strategy {text!r}: parameters are KEY=VALUE pairs separated by commas, "
                "e.g. continual-backprop:rho=1e-4,maturity=100"
            )
        params[key.strip().replace("-", "_")] = value.strip()
    return name.strip(), params


def _cmd_plasticity(args: argparse.Namespace) -> int:
    import torch

    from forgetless.report.analysis_figures import plasticity_curves
    from forgetless.strategies import coerce_params
    from forgetless.studies.plasticity import (
        PlasticitySettings,
        format_plasticity,
        plasticity_study,
    )

    specs = [_strategy_spec(s) for s in (args.strategy or ["finetune"])]
    specs = [(name, coerce_params(name, params)) for name, params in specs]
    torch.set_num_threads(check_positive_int("--threads", args.threads))
    settings = PlasticitySettings(
        data=args.data,
        data_dir=args.data_dir,
        tasks=args.tasks,
        train_per_task=args.train_per_task,
        test_per_task=args.test_per_task,
        hidden=tuple(args.hidden),
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        probe=args.probe,
    )
    with _runs_bar() as progress:
        runs = plasticity_study(
            settings, specs, args.seeds, _store(args), args.workers, progress=progress
        )
    print(format_plasticity(runs, specs), end="")
    data = {"runs": [r.to_dict() for r in runs]}
    figure = plasticity_curves(runs, smooth=args.smooth)
    _write_outputs(args.out, "plasticity", data, {"plasticity": figure})
    return 0


def _cmd_overlap(args: argparse.Namespace) -> int:
    import torch

    from forgetless.report.analysis_figures import overlap_forgetting
    from forgetless.studies.overlap import (
        OverlapSettings,
        format_overlap,
        overlap_claims,
        overlap_study,
    )

    torch.set_num_threads(check_positive_int("--threads", args.threads))
    settings = OverlapSettings(
        data=args.data,
        data_dir=args.data_dir,
        angles=tuple(args.angles),
        hidden=tuple(args.hidden),
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        train_size=args.train_size,
        test_size=args.test_size,
        probe=args.probe,
    )
    with _runs_bar() as progress:
        records = overlap_study(
            settings, args.seeds, _store(args), args.workers, progress=progress,
            threshold=args.threshold, rate=args.rate,
        )  # fmt: skip
    print(format_overlap(records), end="")
    claims, text = overlap_claims(records)
    print(text, end="")
    data = {"records": [r.to_dict() for r in records], "claims": claims}
    _write_outputs(args.out, "overlap", data, {"overlap": overlap_forgetting(records)})
    return 0


def _dispatch(args: argparse.Namespace, extra: Sequence[str], parser) -> int:
    commands = {
        "demo": lambda: _cmd_demo(args),
        "scenarios": _cmd_scenarios,
        "article": lambda: _cmd_article(args),
        "run": lambda: _cmd_run(args, extra),
        "data": lambda: _cmd_data(args, parser),
        "runs": lambda: _cmd_runs(args, parser),
        "sweep": lambda: _cmd_sweep(args),
        "report": lambda: _cmd_report(args),
        "frontier": lambda: _cmd_frontier(args),
        "landscape": lambda: _cmd_landscape(args, extra),
        "trajectory": lambda: _cmd_trajectory(args, extra),
        "plasticity": lambda: _cmd_plasticity(args),
        "overlap": lambda: _cmd_overlap(args),
    }
    from forgetless.production.commands import HANDLERS

    for name, handler in HANDLERS.items():
        commands[name] = lambda handler=handler: handler(args, extra)
    try:
        if args.command in commands:
            return commands[args.command]()
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
    except OSError as err:  # a folder that cannot be written, a disk that is full, ...
        where = f": {err.filename}" if err.filename else ""
        print(f"forgetless: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
