"""``forgetless reproduce``: list the published protocols, or run one and compare with the paper.

Exit codes: 0 when the listing or the run succeeded, whatever the verdict (the verdict is data:
``within_tolerance`` in the JSON); with ``--check``, 1 when a figure is outside its tolerance
and no known difference explains it (for CI); 2 for an error (unknown name, missing data, a
failed run); 130 when interrupted (the runs finished so far are kept, and a rerun continues).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from forgetless.errors import ForgetlessError
from forgetless.options import int_list

HELP = "run a published protocol (a paper's table) and compare ours with its figures"
DESCRIPTION = (
    "Run one of the published protocols forgetless reproduces (--list shows them) through the "
    "run store, and print our figures beside the paper's with a verdict: within tolerance or "
    "not, and the known reason where ours differ. Runs complete in the store are read back, "
    "not trained again; an interrupted reproduction continues where it stopped. Exit 0 when "
    "it ran (the verdict is data); with --check, 1 when a figure is outside its tolerance "
    "without a known reason."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``forgetless reproduce``."""
    parser.description = DESCRIPTION
    parser.add_argument("name", nargs="?", help="the protocol to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the protocols and exit")
    parser.add_argument(
        "--seeds",
        type=int_list,
        metavar="SEEDS",
        help="seeds, e.g. 0,1,2 as everywhere (default: the entry's, 0,1,2)",
    )
    parser.add_argument(
        "--store", metavar="DIR", help="the run store (default: $FORGETLESS_RUNS or ./runs)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="runs at once, one process each (default: 1)"
    )
    parser.add_argument("--data-dir", metavar="DIR", help="where MNIST and Fashion-MNIST are")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON instead of a table")
    out.add_argument(
        "--markdown", action="store_true", help="print the table in BENCHMARKS.md's format"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a figure is outside its tolerance with no known reason",
    )


def run(args: argparse.Namespace) -> int:
    """Carry out ``forgetless reproduce`` (errors are raised as ForgetlessError)."""
    from forgetless.errors import ConfigError
    from forgetless.reproduce import CATALOGUE, find_entry

    if args.list:
        if args.name:
            raise ConfigError("give --list or a NAME, not both")
        if args.json:
            print(json.dumps([e.describe() for e in CATALOGUE.values()], indent=2))
        else:
            from forgetless.reproduce.runner import format_list

            print(format_list(list(CATALOGUE.values())), end="")
        return 0
    if not args.name:
        raise ConfigError(
            "name a protocol to run (forgetless reproduce --list shows them), or give --list"
        )
    entry = find_entry(args.name)
    if args.workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {args.workers}")
    from forgetless.reproduce.runner import format_markdown, format_text, reproduce

    def progress(finished: int, total: int, seconds_left: float) -> None:
        print(
            f"forgetless: {finished}/{total} runs trained, about {seconds_left / 60:.1f} min left",
            file=sys.stderr,
            flush=True,
        )

    reproduction = reproduce(
        entry, args.seeds, args.store, args.workers, args.data_dir, progress=progress
    )
    if args.json:
        print(json.dumps(reproduction, indent=2))
    elif args.markdown:
        print(format_markdown(reproduction), end="")
    else:
        print(format_text(reproduction), end="")
    return 1 if args.check and reproduction["unexplained"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``forgetless reproduce ARGS`` on its own parser (so that ``--list`` imports no torch)."""
    parser = argparse.ArgumentParser(prog="forgetless reproduce", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ForgetlessError as err:
        print(f"forgetless: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "forgetless: interrupted (the runs finished are kept; run it again to continue)",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:  # the reader went away (`forgetless reproduce --list | head`)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (stdout must stay open until exit)
        return 0
