"""``forgetless run``: one strategy on one scenario, its forgetting measured.

Its options are RunConfig's fields (:mod:`forgetless.options`); ``--config FILE`` reads them
from a TOML file, and every option given on the command line wins over the file's, even at
its default value. Any other ``--NAME VALUE`` is a parameter of the strategy.
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap

from forgetless.commands.common import say
from forgetless.errors import ConfigError

EXAMPLES = """\
examples:
  forgetless run --scenario split-digits --strategy finetune --epochs 20 --lr 0.1
  forgetless run --scenario split-digits --protocol task --strategy ewc --lam 100
  forgetless run --scenario split-mnist --protocol class --strategy finetune --model mlp \\
      --epochs 1 --seed 0 --data-dir DIR --out runs/x
"""


def epilog() -> str:
    """The strategies by name (from the torch-free list), where to read their parameters,
    then examples."""
    from forgetless.names import STRATEGIES

    names = textwrap.fill(", ".join(STRATEGIES), 96, initial_indent="  ", subsequent_indent="  ")
    return (
        "strategies (any --NAME VALUE not listed above is a parameter of the strategy, e.g. "
        "--lam 100;\n'forgetless strategies' lists each one's parameters, defaults and "
        f"meanings):\n{names}\n\n{EXAMPLES}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from forgetless.options import add_run_options

    parser.epilog = epilog()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_run_options(parser)
    g = parser.add_argument_group("config file and output")
    g.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file of settings named like these options (lam = 100.0 for --lam 100); "
        "options given here override it",
    )
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


def config_from_args(
    args: argparse.Namespace,
    params: dict[str, str] | None = None,
    strategy: str | None = None,
    known: list[str] | None = None,
):
    """The RunConfig the command line asks for: ``--config FILE``'s settings, then the run
    options given (each wins, whatever its value), then the strategy parameters (``params``,
    or every ``--NAME VALUE`` among the unknown flags). ``strategy`` replaces the one given.
    A parameter the strategy does not take is an error naming the closest option (did you
    mean), among ``known`` flags (default: the command's)."""
    from forgetless.experiment import RunConfig, config_from_flat
    from forgetless.options import check_strategy_params, given_settings, strategy_params
    from forgetless.toml_file import read_toml

    settings = read_toml(args.config, "config file") if getattr(args, "config", None) else {}
    given = given_settings(args)
    if strategy is not None:
        given["strategy"] = strategy
    if params is None:
        params = strategy_params(args.argv, args.extra)
    name = given.get("strategy", settings.get("strategy", RunConfig.strategy))
    if isinstance(name, str):
        check_strategy_params(name, params, known if known is not None else _flags(args))
    if not settings:
        return RunConfig(**given, strategy_params=params)
    # The file's own settings are checked as the file gives them, even those a flag replaces.
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    config_from_flat({k: v for k, v in settings.items() if k in fields}, str(args.config))
    return config_from_flat({**settings, **given, **params}, str(args.config))


def _flags(args: argparse.Namespace) -> list[str]:
    parser = getattr(args, "command_parser", None)
    return [] if parser is None else [f for f in parser._option_string_actions if f[:2] == "--"]


def run(args: argparse.Namespace) -> int:
    from forgetless.experiment import run
    from forgetless.runs import RunStore, is_store, open_run_folder

    if args.resume:
        store, folder = open_run_folder(args.resume)
        result = store.resume(folder, rerun=args.rerun, on_wait=say)
        print(result.to_json() if args.json else result)
        return 0
    config = config_from_args(args)
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
            say(f"already complete: {folder} (--rerun trains it again)")
        loggers = [n.strip() for n in args.log.split(",") if n.strip()] if args.log else []
        result = store.execute(config, rerun=args.rerun, loggers=loggers, on_wait=say)
    else:
        result = run(config)
    print(result.to_json() if args.json else result)
    if (args.store or args.out) and not args.json:
        print(f"stored in {folder} (continue an interrupted run: forgetless run --resume {folder})")
    return 0
