"""``forgetless strategies``: every strategy with its parameters, their defaults and meanings
(what ``forgetless run --help`` leaves out, so that it needs no torch)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Each strategy with its parameters as the command line takes them (--NAME VALUE, "
        "after its --strategy), their defaults and what they mean."
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these (default: all)")


def listing(names: list[str] | None = None) -> str:
    """The strategies (all, or ``names``) with each parameter as ``--name default  meaning``."""
    from forgetless.names import flag
    from forgetless.strategies import STRATEGIES, _lookup, parameter_help, strategy_parameters

    classes = [_lookup(n) for n in names] if names else list(STRATEGIES.values())
    lines = ["strategies and their parameters, with their defaults:"]
    for cls in classes:
        params = strategy_parameters(cls)
        meanings = parameter_help(cls)
        lines.append(f"  {cls.name}" + ("" if params else "  (no parameters)"))
        for p, v in params.items():
            default = f"{v.default:g}" if isinstance(v.default, float) else v.default
            lines.append(f"      {flag(p) + ' ' + str(default):<28} {meanings[p]}".rstrip())
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    print(listing(args.names), end="")
    return 0
