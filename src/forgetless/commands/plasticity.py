"""``forgetless plasticity``: loss of plasticity on a long permuted stream."""

from __future__ import annotations

import argparse

from forgetless.commands.common import add_store_options, runs_bar, store_of, write_outputs
from forgetless.options import DeprecatedFlag, int_list
from forgetless.studies.plasticity import PlasticitySettings
from forgetless.validation import check_positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train an MLP on a long stream of permuted tasks (each its own pixel "
        "permutation and its own draw of images) with each --strategy, and record after every "
        "task the accuracy reached on it, the fraction of dormant units, the effective rank of "
        "the hidden layers and the mean weight magnitude (Dohare et al. 2024). Each --strategy "
        "is followed by its parameters, as for 'forgetless run' (--strategy continual-backprop "
        "--rho 1e-4 --maturity 100)."
    )
    d = PlasticitySettings  # the defaults, declared once
    p.add_argument("--data", default=d.data, help=f"source data set (default: {d.data})")
    p.add_argument("--data-dir", metavar="DIR", help="folder with the IDX files")
    p.add_argument(
        "--n-tasks", type=int, default=d.tasks, help=f"tasks in the stream (default: {d.tasks})"
    )
    p.add_argument(
        "--tasks", dest="n_tasks", type=int, action=DeprecatedFlag, new="--n-tasks",
        help=argparse.SUPPRESS,
    )  # fmt: skip
    p.add_argument(
        "--train-per-task",
        type=int,
        default=d.train_per_task,
        help=f"(default: {d.train_per_task})",
    )
    p.add_argument(
        "--test-per-task", type=int, default=d.test_per_task, help=f"(default: {d.test_per_task})"
    )  # fmt: skip
    p.add_argument(
        "--strategy",
        action="append",
        help="a strategy and its parameters; repeat for several (default: finetune)",
    )
    hidden = ",".join(str(h) for h in d.hidden)
    p.add_argument("--hidden", type=int_list, default=list(d.hidden), help=f"(default: {hidden})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"SGD step size (default: {d.lr:g})")
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"(default: {d.batch_size})"
    )
    p.add_argument(
        "--epochs", type=int, default=d.epochs, help=f"passes per task (default: {d.epochs})"
    )
    p.add_argument("--seeds", type=int_list, default=[0], help="seeds, e.g. 0,1,2 (default: 0)")
    p.add_argument(
        "--probe", type=int, default=d.probe,
        help=f"test inputs for unit measures (default: {d.probe})",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--smooth", type=int, default=1, help="running mean over tasks in the figure")
    add_store_options(p)
    p.add_argument(
        "-o", "--out", metavar="DIR", default="plasticity",
        help="where plasticity.json, .png and .svg go (default: ./plasticity)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import torch

    from forgetless.options import strategy_specs
    from forgetless.report.analysis_figures import plasticity_curves
    from forgetless.strategies import coerce_params
    from forgetless.studies.plasticity import format_plasticity, plasticity_study

    specs = strategy_specs(args.argv, args.extra, args.strategy)
    specs = [(name, coerce_params(name, params)) for name, params in specs]
    torch.set_num_threads(check_positive_int("--threads", args.threads))
    settings = PlasticitySettings(
        data=args.data,
        data_dir=args.data_dir,
        tasks=args.n_tasks,
        train_per_task=args.train_per_task,
        test_per_task=args.test_per_task,
        hidden=tuple(args.hidden),
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        probe=args.probe,
    )
    with runs_bar() as progress:
        runs = plasticity_study(
            settings, specs, args.seeds, store_of(args), args.workers, progress=progress
        )
    print(format_plasticity(runs, specs), end="")
    data = {"runs": [r.to_dict() for r in runs]}
    figure = plasticity_curves(runs, smooth=args.smooth)
    write_outputs(args.out, "plasticity", data, {"plasticity": figure})
    return 0
