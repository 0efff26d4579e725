"""``forgetless trajectory``: the weight-space path of task A then task B, per strategy."""

from __future__ import annotations

import argparse

from forgetless.commands.common import write_outputs
from forgetless.commands.landscape import add_study_options, study_config
from forgetless.errors import ConfigError


def add_arguments(trajectory: argparse.ArgumentParser) -> None:
    trajectory.description = (
        "Train the first two tasks of a scenario with each --strategy from the "
        "same initial weights, record the weights every --every steps, and draw the paths on "
        "their top two principal directions over the losses of task A and task B. A --NAME "
        "VALUE after a --strategy goes to that strategy; one before them to every strategy "
        "that accepts it (--lam 1000)."
    )
    add_study_options(trajectory)
    trajectory.add_argument(
        "--strategy", action="append", help="repeat for several (default: finetune and ewc)"
    )
    trajectory.add_argument("--every", type=int, default=10, help="record every N steps")
    trajectory.add_argument("--resolution", type=int, default=25, help="grid points a side")


def run(args: argparse.Namespace) -> int:

    from forgetless.analysis.trajectory import trajectory_study
    from forgetless.experiment import prepare
    from forgetless.names import flag
    from forgetless.options import check_strategy_params, strategy_groups
    from forgetless.report.analysis_figures import trajectory_plot
    from forgetless.strategies import STRATEGIES, make_strategies, strategy_parameters

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
    own = {}
    for name, params in groups[1:]:
        check_strategy_params(name, params)
        own.setdefault(name, {}).update(params)
    strategies = {
        name: make_strategies(
            name,
            {
                **{k: v for k, v in shared.items() if k in accepted.get(name, ())},
                **own.get(name, {}),
            },
        )
        for name in names
    }
    config = study_config(args, "finetune", {})
    stream, model, _ = prepare(config)  # the strategies to compare are built above
    study = trajectory_study(
        stream,
        model,
        strategies,
        config.fit_config(),
        every=args.every,
        seed=args.seed,
        resolution=args.resolution,
        n_examples=args.examples or None,
    )
    explained = study.plane.explained.tolist()
    print(f"{stream.name}: PCA plane holds {100 * sum(explained):.1f}% of the paths' variance")
    for label, t in study.trajectories.items():
        row = t.result.accuracy_matrix[-1]
        print(
            f"{label:<12} {len(t.steps)} points; after task B: task A {100 * row[0]:.1f}%, "
            f"task B {100 * row[1]:.1f}%; distance from the A optimum "
            f"{study.distances[label]:.3f} (on the plane {study.plane_distances[label]:.3f}, "
            f"Fisher-weighted {study.fisher_distances[label]:.3f}); "
            f"task-A loss at the end {study.task_a_loss[label]:.3f}"
        )
    write_outputs(args.out, "trajectory", study.to_dict(), {"trajectory": trajectory_plot(study)})
    return 0
