"""Loss of plasticity on 100-task permuted MNIST: plain backprop against continual backprop and
shrink and perturb (Dohare et al. 2024, Nature 632, Fig. 1 and 3, made small).

Usage::

    python benchmarks/plasticity.py --data-dir /work/shared/data [--seeds 0 1 2] [--tasks 100]
        [--workers 2] [--only finetune continual-backprop shrink-perturb shrink-perturb-task]
        [--store benchmarks/results/plasticity.jsonl] [--out benchmarks/results/plasticity]

Setting (ours, chosen so that plain SGD loses plasticity within 100 tasks on two CPU cores):
each task draws its own 6,000 MNIST training images and 500 test images and applies its own
random pixel permutation (task 1 too); an MLP 784-100-100-100-10 (Dohare et al.'s small net:
three hidden layers of 100 ReLU units, PyTorch's default initialisation) is trained with plain
SGD, step size 0.3, batch 16, one epoch per task (375 steps), one output layer shared by all
tasks, no reset of the weights between tasks. After each task we record the test accuracy on
that task (the plasticity), the fraction of hidden units that are zero on all of 500 of its test
images (dead, as Dohare et al. count them on 2,000), the effective rank of each hidden layer on
those images, and the mean absolute weight.

Dohare et al. train online (batch 1) on all 60,000 images per task, step size 0.003 (and 0.01,
0.001 for the small net), for 800 tasks: 48 million steps, beyond this machine. A larger step
size makes plasticity go faster (their Extended Data figure on step sizes); with batch 16, 0.3
is about 0.02 per example. Strategies: ``finetune`` is plain backprop; ``continual-backprop``
with their rho 1e-4 (per step here, per example there), maturity 100, eta 0.99;
``shrink-perturb`` every step with lambda 1 - 1e-4 (weight decay 3.3e-4 at this step size;
theirs 1e-4) and noise std 1e-3 (theirs 1e-4..1e-6 at a step size 100 times smaller);
``shrink-perturb-task`` is Ash and Adams' form, once before each task, lambda 0.5 and noise std
0.01 (half the standard deviation of the first layer's initial weights; not tuned).

Each (strategy, seed) is a run of :mod:`forgetless.studies.plasticity` in the run store
``--store`` (default ``benchmarks/results/runs``), ``--workers`` at once through the one sweep
runner; a rerun trains only what is missing there. Prints one JSON object: per strategy, mean
and std over seeds of the accuracy, dormant fraction, effective rank (last hidden layer) and
weight magnitude over the first and the last 10 tasks, and the training time of each run;
writes the figure ``plasticity.png``/``.svg`` to ``--out`` and the summary to
``benchmarks/results/plasticity.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from forgetless.analysis.plasticity import PlasticityRun
from forgetless.reproduce.catalogue import PLASTICITY, PLASTICITY_RUNS, PLASTICITY_WINDOW
from forgetless.studies.plasticity import plasticity_study
from grid import log, mean_std, publish

#: The protocol and the strategies' runs: the reproduce catalogue's entry ``plasticity``
#: (declared there, so ``forgetless reproduce plasticity`` runs the same ones).
SETTINGS = {
    k: getattr(PLASTICITY, k)
    for k in ("train_per_task", "test_per_task", "hidden", "lr", "batch_size", "epochs", "probe")
}
STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    key: (strategy, params) for key, _, strategy, params in PLASTICITY_RUNS
}
WINDOW = PLASTICITY_WINDOW  # tasks averaged at the start and at the end of the stream


def summarise(runs: dict[str, list[PlasticityRun]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, found in runs.items():
        entry: dict[str, Any] = {"seeds": [r.seed for r in found], "params": found[0].params}
        for key, scale in (
            ("accuracy", 100),
            ("dormant", 100),
            ("effective_rank", 1),
            ("weight_magnitude", 1),
        ):
            k = min(WINDOW, len(found[0].records))
            first = [scale * sum(r.series(key)[:k]) / k for r in found]
            last = [scale * sum(r.series(key)[-k:]) / k for r in found]
            entry[key] = {
                f"first_{WINDOW}": mean_std(first),
                f"last_{WINDOW}": mean_std(last),
                "change": mean_std([b - a for a, b in zip(first, last, strict=True)]),
            }
        best = [100 * max(r.series("accuracy")) for r in found]
        entry["accuracy"]["best_task"] = mean_std(best)
        entry["train_seconds"] = [round(r.seconds, 1) for r in found]
        out[label] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=list(STRATEGIES), default=list(STRATEGIES))
    parser.add_argument("--store", type=Path, default=Path("benchmarks/results/runs"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/plasticity"))
    parser.add_argument("--summary", type=Path, default=Path("benchmarks/results/plasticity.json"))
    args = parser.parse_args()

    torch.set_num_threads(1)  # the measures as the runs compute: one thread, the same sums
    settings = dataclasses.replace(PLASTICITY, data_dir=args.data_dir, tasks=args.tasks)
    specs = [STRATEGIES[label] for label in args.only]
    started = time.perf_counter()
    found = plasticity_study(settings, specs, args.seeds, args.store, args.workers)
    log(f"{len(found)} runs in {time.perf_counter() - started:.0f} s")
    # The study returns the runs seeds outermost, strategies inner.
    runs = {label: found[k :: len(specs)] for k, label in enumerate(args.only)}
    from forgetless.report.analysis_figures import plasticity_curves
    from forgetless.report.figures import save

    files = save(
        plasticity_curves(
            found,
            title=f"{args.tasks}-task permuted MNIST, MLP 3x100, SGD 0.3, batch 16 "
            "(running mean over 5 tasks)",
            smooth=5,
        ),
        args.out / "plasticity",
    )
    publish(
        {
            "settings": {**SETTINGS, "tasks": args.tasks, "seeds": args.seeds},
            "strategies": {k: STRATEGIES[k] for k in args.only},
            "summary": summarise(runs),
            "figures": [str(f) for f in files],
            "elapsed_seconds": round(time.perf_counter() - started, 1),
        },
        args.summary,
    )


if __name__ == "__main__":
    main()
