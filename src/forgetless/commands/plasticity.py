"""``forgetless plasticity``: loss of plasticity on a long permuted stream."""

from __future__ import annotations

import argparse

from forgetless.commands.common import write_outputs
from forgetless.options import DeprecatedFlag, int_list
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
    p.add_argument("--data", default="mnist", help="source data set (default: mnist)")
    p.add_argument("--data-dir", metavar="DIR", help="folder with the IDX files")
    p.add_argument("--n-tasks", type=int, default=100, help="tasks in the stream (default: 100)")
    p.add_argument(
        "--tasks", dest="n_tasks", type=int, action=DeprecatedFlag, new="--n-tasks",
        help=argparse.SUPPRESS,
    )  # fmt: skip
    p.add_argument("--train-per-task", type=int, default=6000, help="(default: 6000)")
    p.add_argument("--test-per-task", type=int, default=500, help="(default: 500)")
    p.add_argument(
        "--strategy",
        action="append",
        help="a strategy and its parameters; repeat for several (default: finetune)",
    )
    p.add_argument(
        "--hidden", type=int_list, default=[100, 100, 100], help="(default: 100,100,100)"
    )
    p.add_argument("--lr", type=float, default=0.3, help="SGD step size (default: 0.3)")
    p.add_argument("--batch-size", type=int, default=16, help="(default: 16)")
    p.add_argument("--epochs", type=int, default=1, help="passes per task (default: 1)")
    p.add_argument("--seeds", type=int_list, default=[0], help="seeds, e.g. 0,1,2 (default: 0)")
    p.add_argument("--probe", type=int, default=2000, help="test inputs for unit measures")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--smooth", type=int, default=1, help="running mean over tasks in the figure")
    p.add_argument(
        "-o", "--out", metavar="DIR", default="plasticity",
        help="where plasticity.json, .png and .svg go (default: ./plasticity)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:

    import torch

    from forgetless import data
    from forgetless.analysis.plasticity import permuted_subsets, run_plasticity
    from forgetless.engine import FitConfig
    from forgetless.options import strategy_specs
    from forgetless.report.analysis_figures import plasticity_curves
    from forgetless.strategies import coerce_params

    specs = strategy_specs(args.argv, args.extra, args.strategy)
    specs = [(name, coerce_params(name, params)) for name, params in specs]
    torch.set_num_threads(check_positive_int("--threads", args.threads))
    source = data.load(args.data, args.data_dir)
    fit = FitConfig(lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, progress=True)
    runs = []
    head = f"{'strategy':<40} {'seed':>4} {'acc first':>9} {'acc last':>8} {'dormant':>13} "
    print(head + f"{'erank':>13} {'|w|':>13} {'seconds':>7}")
    for seed in args.seeds:
        stream = permuted_subsets(
            source, args.n_tasks, args.train_per_task, args.test_per_task, seed=seed
        )
        for name, params in specs:
            run = run_plasticity(
                stream, name, params, tuple(args.hidden), fit, seed=seed, probe=args.probe
            )
            runs.append(run)
            k = max(1, len(run.records) // 10)

            def ends(key: str, scale: float = 1.0, run=run, k=k) -> tuple[float, float]:
                values = run.series(key)
                return scale * sum(values[:k]) / k, scale * sum(values[-k:]) / k

            acc, dormant = ends("accuracy", 100), ends("dormant", 100)
            rank, weight = ends("effective_rank"), ends("weight_magnitude")
            label = name + (":" + ",".join(f"{a}={b}" for a, b in params.items()) if params else "")
            print(
                f"{label:<40} {seed:>4} {acc[0]:>9.1f} {acc[1]:>8.1f} "
                f"{dormant[0]:>5.1f} -> {dormant[1]:>4.1f} {rank[0]:>5.1f} -> {rank[1]:>4.1f} "
                f"{weight[0]:>5.3f} -> {weight[1]:.3f} {run.seconds:>7.0f}"
            )
    print(f"(first and last {max(1, args.n_tasks // 10)} tasks; dormant in % of hidden units)")
    data = {"runs": [r.to_dict() for r in runs]}
    figure = plasticity_curves(runs, smooth=args.smooth)
    write_outputs(args.out, "plasticity", data, {"plasticity": figure})
    return 0
