"""Why Avalanche's replay beat ours on Split-MNIST (89.6 against 75.1, issue 17): each cause alone.

Usage::

    python benchmarks/replay_policy.py --data-dir DATA [--seeds 0 1 2] [--workers 2] \\
        [--store benchmarks/results/runs] [--out benchmarks/results/replay_policy.json]

The protocol of the comparison: Split-MNIST class-IL (5 tasks of 2 classes, the class order
drawn from the seed, one 10-way output, no masking), MLP 784-400-400-10, plain SGD lr 0.05,
batch 128, 1 epoch per task, a buffer of 500 examples, the whole test set after each task.

A full factorial over the four differences between the two replays, each seed running every
cell:

- ``standardize``: ``off`` (pixels in [0, 1], ours by default) or ``dataset`` (MNIST's
  0.1307 / 0.3081, as Avalanche's MNIST transform);
- ``buffer_policy``: ``reservoir`` (ours), ``task-balanced`` (Avalanche's
  ``ExperienceBalancedBuffer``) or ``class-balanced``;
- ``buffer_update``: ``step`` (ours: each batch after its step, so the current task is replayed
  too) or ``task`` (Avalanche: at each task's end, so a task trains beside past tasks only);
- ``replay_draw``: ``uniform`` (ours: a fresh sample each step) or ``passes`` (Avalanche's
  replay data loader: shuffled passes over the buffer, a full batch at a time).

Reported: per cell (mean and std over seeds) ACC (final average accuracy, percent), BWT and
``learnt`` (the accuracy on each task right after learning it); the main effect of each factor
(the mean over all cells at one level minus the mean at the other, paired by seed); the path
from our default to Avalanche's settings one factor at a time, in both directions; and the best
cell. Prints one JSON object on stdout; finished runs are kept in
``--store`` (a run store), so a rerun only trains what is missing.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path
from typing import Any

from forgetless.experiment import RunConfig
from grid import STORE, log, mean_std, publish, record_of, run_all

FACTORS: dict[str, tuple[str, ...]] = {
    "standardize": ("off", "dataset"),
    "buffer_policy": ("reservoir", "task-balanced", "class-balanced"),
    "buffer_update": ("step", "task"),
    "replay_draw": ("uniform", "passes"),
}
OURS = {"standardize": "off", "buffer_policy": "reservoir", "buffer_update": "step",
        "replay_draw": "uniform"}  # fmt: skip
AVALANCHE = {"standardize": "dataset", "buffer_policy": "task-balanced", "buffer_update": "task",
             "replay_draw": "passes"}  # fmt: skip
#: Issue 17's side-by-side figures (one run each, final ACC in percent).
ISSUE_ACC = {"avalanche_replay": 89.6, "forgetless_replay": 75.1}


def config(cell: dict[str, str], seed: int, data_dir: str) -> RunConfig:
    """The run of one cell of the factorial."""
    return RunConfig(
        scenario="split-mnist",
        protocol="class",
        data_dir=data_dir,
        standardize=None if cell["standardize"] == "off" else cell["standardize"],
        model="mlp",
        hidden=[400, 400],
        strategy="replay",
        strategy_params={
            "buffer_size": 500,
            "buffer_policy": cell["buffer_policy"],
            "buffer_update": cell["buffer_update"],
            "replay_draw": cell["replay_draw"],
        },
        seed=seed,
        epochs=1,
        batch_size=128,
        optimizer="sgd",
        lr=0.05,
    )


def _diagonal(matrix: list[list[float]]) -> float:
    return statistics.fmean(matrix[i][i] for i in range(len(matrix)))


def cells() -> list[dict[str, str]]:
    names = list(FACTORS)
    return [
        dict(zip(names, values, strict=True)) for values in itertools.product(*FACTORS.values())
    ]


def name_of(cell: dict[str, str]) -> str:
    return "/".join(cell[f] for f in FACTORS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding mnist/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/replay_policy.json"))
    args = parser.parse_args(argv)

    grid = cells()
    configs = [config(c, s, args.data_dir) for c in grid for s in args.seeds]
    records = run_all(configs, args.store, args.workers)

    acc: dict[str, list[float]] = {}  # cell name -> ACC (percent) per seed, in seed order
    rows = []
    for cell in grid:
        runs = [record_of(records, config(cell, s, args.data_dir)) for s in args.seeds]
        acc[name_of(cell)] = [100 * r["metrics"]["acc"] for r in runs]
        rows.append(
            {
                **cell,
                "acc": mean_std(acc[name_of(cell)]),
                "bwt": mean_std([100 * r["metrics"]["bwt"] for r in runs]),
                # Accuracy on each task right after learning it: how well a task is learnt at
                # all (plasticity), against BWT, how much of it is kept.
                "learnt": mean_std([100 * _diagonal(r["accuracy_matrix"]) for r in runs]),
                "train_seconds": mean_std([r["timings"]["train"] for r in runs]),
            }
        )

    def mean_acc(cell: dict[str, str]) -> float:
        return round(statistics.fmean(acc[name_of(cell)]), 2)

    effects = {}
    for factor, levels in FACTORS.items():
        base = levels[0]
        for level in levels[1:]:
            # Paired: every other factor and the seed held fixed.
            diffs = [
                b - a
                for cell in grid
                if cell[factor] == base
                for a, b in zip(
                    acc[name_of(cell)], acc[name_of({**cell, factor: level})], strict=True
                )
            ]
            effects[f"{factor}: {base} -> {level}"] = mean_std(diffs)

    from_ours = {f"{f}={AVALANCHE[f]}": mean_acc({**OURS, f: AVALANCHE[f]}) for f in FACTORS}
    from_avalanche = {f"{f}={OURS[f]}": mean_acc({**AVALANCHE, f: OURS[f]}) for f in FACTORS}
    best = max(rows, key=lambda r: r["acc"]["mean"])
    report: dict[str, Any] = {
        "protocol": "split-mnist class-IL, MLP 784-400-400-10, SGD lr 0.05, batch 128, 1 epoch "
        "per task, buffer 500, whole test set after each task",
        "seeds": args.seeds,
        "issue_acc": ISSUE_ACC,
        "ours_default_acc": mean_acc(OURS),
        "avalanche_settings_acc": mean_acc(AVALANCHE),
        "one_factor_changed_from_ours": from_ours,
        "one_factor_reverted_from_avalanche_settings": from_avalanche,
        "main_effects_acc_points": effects,
        "best_cell": {k: best[k] for k in (*FACTORS, "acc", "bwt", "learnt")},
        "cells": rows,
    }
    publish(report, args.out)
    log(
        f"ours {report['ours_default_acc']}, Avalanche's settings {report['avalanche_settings_acc']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
