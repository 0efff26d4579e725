"""``forgetless trajectory``: the weight-space path of task A then task B, per strategy."""

from __future__ import annotations

import argparse

from forgetless.commands.common import add_store_options, runs_bar, store_of, write_outputs
from forgetless.commands.landscape import add_measure_option, add_study_options, study_config
from forgetless.errors import ConfigError
from forgetless.studies.defaults import TRAJECTORY


def add_arguments(trajectory: argparse.ArgumentParser) -> None:
    trajectory.description = (
        "Train the first two tasks of a scenario with each --strategy from the "
        "same initial weights, record the weights every --every steps, and draw the paths on "
        "their top two principal directions over the losses of task A and task B. A --NAME "
        "VALUE after a --strategy goes to that strategy; one before them to every strategy "
        "that accepts it (--lam 1000)."
    )
    add_study_options(trajectory, TRAJECTORY)
    trajectory.add_argument(
        "--strategy", action="append", help="repeat for several (default: finetune and ewc)"
    )
    add_measure_option(
        trajectory, "every", int, TRAJECTORY, "record every N steps (default: {default})"
    )
    add_measure_option(
        trajectory, "resolution", int, TRAJECTORY, "grid points a side (default: {default})"
    )
    add_store_options(trajectory)


def run(args: argparse.Namespace) -> int:
    from forgetless.names import flag
    from forgetless.options import check_strategy_params, strategy_groups
    from forgetless.report.analysis_figures import trajectory_plot
    from forgetless.strategies import STRATEGIES, strategy_parameters
    from forgetless.studies.trajectory import (
        format_trajectory,
        trajectory_configs,
        trajectory_study,
    )

    names = args.strategy or ["finetune", "ewc"]
    groups = strategy_groups(args.argv, args.extra)
    shared = groups[0][1]  # before any --strategy: to every strategy that takes it
    accepted = {name: strategy_parameters(STRATEGIES[name]) for name in names if name in STRATEGIES}
    unused = set(shared) - {k for keys in accepted.values() for k in keys}
    if unused:
        raise ConfigError(
            f"parameter(s) {', '.join(flag(k) for k in sorted(unused))} accepted by none of "
            f"{', '.join(names)}"
        )
    own: dict[str, dict] = {}
    for name, params in groups[1:]:
        check_strategy_params(name, params)
        own.setdefault(name, {}).update(params)
    strategies = {
        name: (
            name,
            {
                **{k: v for k, v in shared.items() if k in accepted.get(name, ())},
                **own.get(name, {}),
            },
        )
        for name in names
    }
    configs = trajectory_configs(study_config(args, "finetune", {}), strategies, args.every)
    with runs_bar() as progress:
        study = trajectory_study(
            configs,
            store_of(args),
            args.workers,
            progress=progress,
            resolution=args.resolution,
            n_examples=args.examples or None,
        )
    print(format_trajectory(study), end="")
    write_outputs(args.out, "trajectory", study.to_dict(), {"trajectory": trajectory_plot(study)})
    return 0
