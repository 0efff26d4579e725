"""Specialists and task inference on split digits: the task given (task-IL) and inferred by a
router (class-IL), against fine-tuning, over seeds.

Usage::

    python benchmarks/routing.py [--seeds 0 1 2] [--out benchmarks/results/routing.json]
    python benchmarks/routing.py --scenario split-mnist --data-dir DATA \
        --out benchmarks/results/routing_split_mnist.json

With ``--scenario split-mnist``: MNIST in 5 tasks of 2 classes, an MLP 784-400-400-10, Adam lr
1e-3, 1 epoch of batch 128 per task, the same configurations.

Split digits (scikit-learn's 8x8 digits, bundled: no data folder), 5 tasks of 2 classes, an MLP
64-64-64-10, Adam lr 0.002, 100 steps of 128 per task, one torch thread. Task-IL: finetune and
specialists (from the last specialist, and from the initial weights). Class-IL: finetune, and
specialists, packnet and pnn with each router (entropy, mahalanobis, ncm). Per configuration,
mean and sample std over the seeds of ACC (the task inferred, under class-IL), the ACC with the
task given (``task_aware_acc``), BWT, the routing accuracy, and the parameters after the last
task. Runs in one process, about two minutes on one idle core. Prints one JSON object and writes
it to ``--out``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from forgetless.experiment import RunConfig, run
from grid import log, mean_std, publish

LOOP = dict(
    scenario="split-digits",
    hidden=[64, 64],
    iterations=100,
    optimizer="adam",
    lr=0.002,
    threads=1,
    progress=False,
)

MNIST_LOOP = dict(
    scenario="split-mnist", hidden=[400, 400], iterations=None, epochs=1, batch_size=128, lr=1e-3
)

CONFIGS = [
    ("task", "finetune", {}, None),
    ("task", "specialists", {}, None),
    ("task", "specialists", {"start": "initial"}, None),
    ("class", "finetune", {}, None),
    *[
        ("class", strategy, params, router)
        for strategy, params in (
            ("specialists", {}),
            ("specialists", {"start": "initial"}),
            ("packnet", {}),
            ("pnn", {}),
        )
        for router in ("entropy", "mahalanobis", "ncm")
    ],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/routing.json"))
    parser.add_argument(
        "--scenario", choices=["split-digits", "split-mnist"], default="split-digits"
    )
    parser.add_argument("--data-dir", help="folder with the MNIST IDX files (split-mnist)")
    args = parser.parse_args()
    loop = dict(LOOP)
    if args.scenario == "split-mnist":
        loop.update(MNIST_LOOP, data_dir=args.data_dir)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", RuntimeWarning)
    rows = []
    start = time.perf_counter()
    for protocol, strategy, params, router in CONFIGS:
        runs = []
        for seed in args.seeds:
            config = RunConfig(
                **loop,
                protocol=protocol,
                strategy=strategy,
                strategy_params=params,
                router=router,
                seed=seed,
            )
            runs.append(run(config))
        name = strategy + "".join(f" {k}={v}" for k, v in params.items())
        log(f"{protocol} {name} router={router}: ACC {[round(r.metrics['acc'], 3) for r in runs]}")
        row = {
            "protocol": protocol,
            "strategy": strategy,
            "params": params,
            "router": router,
            "acc": mean_std([r.metrics["acc"] for r in runs]),
            "bwt": mean_std([r.metrics["bwt"] for r in runs]),
            "parameters": runs[0].model_size[-1]["parameters"],
            "parameters_first_task": runs[0].model_size[0]["parameters"],
        }
        if protocol == "class":
            row["task_given_acc"] = mean_std([r.metrics["task_aware_acc"] for r in runs])
        if router is not None:
            row["routing_acc"] = mean_std([r.metrics["routing_acc"] for r in runs])
            row["routing_last_row"] = [
                round(sum(r.routing_accuracy[-1][j] for r in runs) / len(runs), 4)
                for j in range(len(runs[0].routing_accuracy))
            ]
        rows.append(row)
    report = {
        "benchmark": "routing",
        "settings": {
            **loop,
            "data_dir": "DATA" if args.data_dir else None,
            "seeds": args.seeds,
            "tasks": 5,
        },
        "command": f"python benchmarks/routing.py --scenario {args.scenario}"
        + (" --data-dir DATA" if args.data_dir else "")
        + " --seeds "
        + " ".join(map(str, args.seeds)),
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
