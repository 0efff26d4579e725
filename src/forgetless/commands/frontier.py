"""``forgetless frontier``: sweep strategies' strengths, place each setting by stability and
plasticity, and report each strategy's Pareto front.

Each ``--strategy`` is followed by its parameters as for ``forgetless run``; the one given a
range (``--lam 1:1e6``, log-spaced over ``--points`` values, or ``--lam 1,10,100``) is swept.
"""

from __future__ import annotations

import argparse
import warnings

from forgetless.commands.common import runs_bar, write_outputs
from forgetless.errors import ConfigError
from forgetless.options import int_list

#: Run options frontier does not take: it sets the strategies and seeds itself.
NOT_RUN_OPTIONS = ("strategy", "seed")


def add_arguments(frontier: argparse.ArgumentParser) -> None:
    from forgetless.options import add_run_options

    frontier.description = (
        "For each --strategy with the range of its parameter, run every value times --seeds "
        "into a run store (complete runs are reused), place each setting by stability "
        "(accuracy kept on old tasks) and plasticity (accuracy reached on new ones), and "
        "report each strategy's Pareto front and hypervolume. Example: forgetless frontier "
        "--scenario mnist-fashion --strategy ewc --lam 1e0:1e6 --strategy replay "
        "--buffer-size 50:5000 --seeds 0,1,2. A strategy given no range (pnn) is placed once "
        "at its settings. Methods that answer by the task id (pnn, packnet, hat, hypermask) "
        "need --protocol task, and then every strategy runs under it."
    )
    frontier.add_argument(
        "--strategy",
        action="append",
        required=True,
        help="a strategy, followed by its parameters (--NAME VALUE): the one given a range "
        "LOW:HIGH (on a log scale, --points values) or V1,V2,... is swept; repeat for several",
    )
    frontier.add_argument(
        "--range",
        action="append",
        metavar="NAME=LOW:HIGH",
        help="deprecated (one release): the range of each --strategy in the same order; give "
        "it as the parameter's value instead (--strategy ewc --lam 1:1e6)",
    )
    frontier.add_argument("--points", type=int, default=7, help="values per range (default: 7)")
    frontier.add_argument(
        "--seeds",
        type=_seeds,
        default=[0, 1, 2],
        metavar="S,S,...",
        help="the seeds, e.g. 0,1,2 (default: 0,1,2)",
    )
    frontier.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file of run settings (as for 'forgetless run --config'); the options "
        "given here override it",
    )
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
    g = frontier.add_argument_group("run options (as for 'forgetless run')")
    from forgetless.options import run_options

    add_run_options(g, only=[o.name for o in run_options() if o.name not in NOT_RUN_OPTIONS])


def _seeds(text: str) -> list[int]:
    """``0,1,2``; a single number ``N`` without a comma is the old count (seeds 0..N-1)."""
    seeds = int_list(text)
    if "," not in text and len(seeds) == 1 and seeds[0] > 0:  # 0 was never a count
        warnings.warn(
            f"frontier --seeds {text} as a count is deprecated (one release): --seeds lists "
            f"the seeds, as everywhere (--seeds {','.join(map(str, range(seeds[0])))}); "
            f"'--seeds {text},' is the seed {text} alone",
            DeprecationWarning,
            stacklevel=2,
        )
        return list(range(seeds[0]))
    return seeds


def is_range(value: str) -> bool:
    """Whether a parameter's value is a range to sweep (``LOW:HIGH`` or ``V1,V2,...``)."""
    return ":" in value or "," in value


def strategy_ranges(args: argparse.Namespace) -> list[tuple[str, str, list[float]]]:
    """``(strategy, parameter, values)`` per ``--strategy``, from the range given as one of
    its parameters (or the deprecated ``--range``); no range: ``("pnn", "", [])``."""
    from forgetless.options import check_strategy_params, strategy_groups
    from forgetless.studies.frontier import parse_range

    groups = strategy_groups(args.argv, args.extra)[1:]
    if args.range:
        warnings.warn(
            "frontier --range is deprecated (one release): give the range as the parameter's "
            "value after its --strategy (--strategy ewc --lam 1:1e6)",
            DeprecationWarning,
            stacklevel=2,
        )
        if len(args.strategy) != len(args.range):
            raise ConfigError(
                f"give one --range per --strategy, in the same order: got {len(args.strategy)} "
                f"strategies and {len(args.range)} ranges"
            )
        if any(params for _, params in groups):
            raise ConfigError("give the ranges as --range or as parameters, not both")
        return [
            (s, *parse_range(t, args.points))
            for s, t in zip(args.strategy, args.range, strict=True)
        ]
    ranges = []
    for strategy, params in groups:
        check_strategy_params(strategy, params)
        swept = {k: v for k, v in params.items() if is_range(v)}
        fixed = sorted(set(params) - set(swept))
        if len(swept) > 1 or fixed:
            raise ConfigError(
                f"frontier --strategy {strategy}: give one parameter, with a range to sweep "
                f"(got {', '.join('--' + k.replace('_', '-') for k in params)}); settings "
                "every strategy shares go before the first --strategy or in --config"
            )
        if swept:
            ((name, text),) = swept.items()
            ranges.append((strategy, *parse_range(f"{name}={text}", args.points)))
        else:
            ranges.append((strategy, "", []))
    return ranges


def run(args: argparse.Namespace) -> int:
    from forgetless.commands.common import store_of
    from forgetless.commands.run import config_from_args
    from forgetless.experiment import RunConfig
    from forgetless.options import strategy_groups
    from forgetless.report.figures import frontier_plot
    from forgetless.studies.frontier import format_frontiers, run_frontiers

    if not args.seeds or min(args.seeds) < 0:
        raise ConfigError(f"--seeds lists non-negative seeds, got {args.seeds}")
    ranges = strategy_ranges(args)
    # The base config: --config, the run options given, and the parameters given before the
    # first --strategy (every strategy gets them; the first strategy checks them here).
    options = argparse.Namespace(**vars(args))
    del options.strategy
    shared = strategy_groups(args.argv, args.extra)[0][1]
    strategy = args.strategy[0] if shared else None
    base = config_from_args(options, params=shared, strategy=strategy, known=[])
    base = RunConfig.from_dict({**base.to_dict(), "seed": 0})
    with runs_bar() as progress:
        frontiers = run_frontiers(
            base,
            ranges,
            list(args.seeds),
            store_of(args),
            args.workers,
            args.backend,
            progress,
            keep_weights=not args.no_weights,
        )
    print(format_frontiers(frontiers), end="")
    data = {"base": base.to_dict(), "frontiers": [f.to_dict() for f in frontiers]}
    write_outputs(
        args.out, "frontier", data, {"frontier": frontier_plot(frontiers, scenario=base.scenario)}
    )
    return 0
