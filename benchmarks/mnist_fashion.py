"""MNIST -> Fashion-MNIST (seed article 2's pair): what EWC and replay keep, and what they cost.

Usage::

    python benchmarks/mnist_fashion.py --data-dir /work/shared/data [--seeds 0 1 2] \\
        [--workers 2] [--parts ewc replay] [--store benchmarks/results/runs] \\
        [--out benchmarks/results/mnist_fashion.json]

``mnist-fashion`` with the CNN on one shared 10-way output: fine-tuning, EWC over a decade range
of lambda (1e2 to 1e4), and replay with 100 and 1,000 MNIST images kept. For each
setting: MNIST accuracy after task 1 and after task 2 (what survives), Fashion-MNIST accuracy
after task 2 (what the new task gets), both as mean and sample std over seeds.

Settings: Adam lr 1e-3, batch 128, 1 epoch per task. This is cheaper than the seed-article run of
``seed_articles.py`` (batch 32, 2 epochs), which would take about 4 hours for this grid on two
cores; its fine-tuning baseline is measured here again under the same settings. EWC uses the
exact Fisher over 2,000 MNIST training images drawn at random (the CNN's convolutions go through
the per-example ``torch.func`` path, about 7 ms an image on one core); replay draws a batch of
128 stored images per step.

Finished runs are kept in ``--store`` (a run store), so a rerun only trains what is missing.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from forgetless.experiment import RunConfig
from grid import STORE, mean_std, publish, record_of, run_all

LAMBDAS = (1e2, 1e3, 1e4)
BUFFERS = (100, 1000)


def config(seed: int, data: str, strategy: str, params: dict) -> RunConfig:
    return RunConfig(
        scenario="mnist-fashion",
        data_dir=data,
        model="cnn",
        strategy=strategy,
        strategy_params=params,
        seed=seed,
        epochs=1,
        batch_size=128,
        optimizer="adam",
        lr=1e-3,
    )


def entry(records: list[dict[str, Any]]) -> dict[str, Any]:
    matrices = [r["accuracy_matrix"] for r in records]
    return {
        "mnist_after_1": mean_std([100 * m[0][0] for m in matrices]),
        "mnist_after_2": mean_std([100 * m[1][0] for m in matrices]),
        "fmnist_after_2": mean_std([100 * m[1][1] for m in matrices]),
        "acc": mean_std([100 * r["metrics"]["acc"] for r in records]),
        "train_seconds": mean_std([r["timings"]["train"] for r in records]),
        "strategy_state_mb": round(records[0]["strategy_state_bytes"] / 2**20, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--parts", nargs="+", choices=("ewc", "replay"), default=["ewc", "replay"])
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mnist_fashion.json"))
    args = parser.parse_args(argv)
    seeds, data = args.seeds, args.data_dir
    plan = {"finetune": [config(s, data, "finetune", {}) for s in seeds]}
    for lam in LAMBDAS if "ewc" in args.parts else ():
        params = {"lam": lam, "fisher": "exact", "fisher_samples": 2000}
        plan[f"ewc lam {lam:g}"] = [config(s, data, "ewc", params) for s in seeds]
    for size in BUFFERS if "replay" in args.parts else ():
        params = {"buffer_size": size, "replay_batch_size": 128}
        plan[f"replay {size}"] = [config(s, data, "replay", params) for s in seeds]
    records = run_all([c for cs in plan.values() for c in cs], args.store, args.workers)
    report = {
        "seeds": seeds,
        "settings": config(0, data, "finetune", {}).to_dict(),
        "runs": {
            label: {
                "strategy_params": cs[0].strategy_params,
                **entry([record_of(records, c) for c in cs]),
            }
            for label, cs in plan.items()
        },
    }
    publish(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
