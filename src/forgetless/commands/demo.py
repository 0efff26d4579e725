"""``forgetless demo``: fine-tuning's collapse, replay and EWC, and joint training as the bound."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train a small MLP on split-digits (scikit-learn's 8x8 digits, "
        "5 tasks of 2 classes, class-incremental) with plain fine-tuning (the collapse), "
        "replay and EWC (mitigations; EWC with the task given) and joint training (the "
        "bound); print each accuracy matrix, what ACC, BWT and the random-init row mean, and "
        "a summary. Offline, under a minute."
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--out", metavar="DIR", help="also save each run (config.json, result.json) under DIR"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forgetless.demo import run_demo
    from forgetless.experiment import save_run

    for name, result in run_demo(seed=args.seed, echo=print).items():
        if args.out:
            save_run(result, Path(args.out) / name)
    if args.out:
        print(f"saved the runs under {args.out}")
    return 0
