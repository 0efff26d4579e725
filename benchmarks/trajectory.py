"""The weight-space trajectory of task A then task B, fine-tuning against EWC (seed Figure 1).

Usage::

    python benchmarks/trajectory.py --data-dir /work/shared/data [--seed 0] \\
        [--lams 100 1000 10000] [--every 10] [--resolution 25] [--threads 1] \\
        [--json benchmarks/results/trajectory.json] [--out benchmarks/results/trajectory]

``mnist-fashion`` (MNIST, then Fashion-MNIST on one 10-way output, domain protocol) with the
MLP 784-400-400-10, Adam lr 1e-3 (``--optimizer``, ``--lr``), batch 128, 1 epoch per task (469
steps each), as ``mnist_fashion.py`` trains the CNN. Plain SGD draws smoother paths, but EWC's
penalty makes SGD diverge once ``lr * lam * max F > 2`` (about ``lam > 30`` at lr 0.05 here),
which leaves too narrow a range of lambda. One run
per strategy from the same initial weights and batches: fine-tuning and EWC (exact Fisher over
2,000 MNIST training images) at each ``--lams``: runs of
:mod:`forgetless.studies.trajectory` in the run store ``--store`` (default
``benchmarks/results/runs``; a rerun trains nothing that is there), ``--workers`` at once
through the one sweep runner. The weights are recorded every ``--every`` steps
(``RunConfig.path_every``, :class:`forgetless.strategies.recorder.ParameterRecorder`); the paths are projected on
the top two principal directions of all of them together (Li et al. 2018, Sec. 7), through the
end of task A, and the test losses of MNIST and Fashion-MNIST (2,000 images each) are drawn on a
``--resolution`` square grid of that plane.

Reported per strategy: the accuracy matrix, the distance of the final weights from the task-A
optimum in weight space, on the plane and weighted by task A's Fisher information (what EWC's
penalty measures), the MNIST loss at the end, and the share of the
paths' variance the plane holds. Prints one JSON object (also written to ``--json``); the
figure goes to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from forgetless.experiment import RunConfig
from forgetless.report.analysis_figures import trajectory_plot
from forgetless.report.figures import save
from forgetless.studies.trajectory import trajectory_configs, trajectory_study
from grid import log, publish


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lams", type=float, nargs="+", default=[100.0, 1000.0, 10000.0])
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the analysis")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--store", type=Path, default=Path("benchmarks/results/runs"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/trajectory.json"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/trajectory"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = RunConfig(
        scenario="mnist-fashion",
        data_dir=args.data_dir,
        model="mlp",
        hidden=[400, 400],
        seed=args.seed,
        epochs=1,
        batch_size=128,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=0.0,
    )
    strategies = {"finetune": ("finetune", {})}
    for lam in args.lams:
        params = {"lam": lam, "fisher": "exact", "fisher_samples": 2000}
        strategies[f"ewc lam {lam:g}"] = ("ewc", params)
    configs = trajectory_configs(base, strategies, args.every)
    start = time.perf_counter()
    study = trajectory_study(
        configs, args.store, args.workers, resolution=args.resolution, n_examples=2000
    )
    seconds = time.perf_counter() - start
    record = study.to_dict()
    record.pop("surfaces")  # the figure shows them; the numbers below summarise them
    paths = record.pop("paths")
    record["points_per_path"] = {k: len(v["steps"]) for k, v in paths.items()}
    record["settings"].update(
        {"model": "mlp 400-400", "optimizer": args.optimizer, "lr": args.lr, "batch_size": 128}
    )
    record["surface_seconds"] = {k: round(s.seconds, 1) for k, s in study.surfaces.items()}
    record["seconds"] = round(seconds, 1)
    for label, t in study.trajectories.items():
        row = t.result.accuracy_matrix[-1]
        log(
            f"{label:<16} MNIST {100 * row[0]:.1f}%, Fashion {100 * row[1]:.1f}%; distance "
            f"from the A optimum {study.distances[label]:.2f} (plane "
            f"{study.plane_distances[label]:.2f}, Fisher {study.fisher_distances[label]:.3f}); "
            f"MNIST loss {study.task_a_loss[label]:.3f}"
        )
    title = f"MNIST, then Fashion-MNIST: MLP 400-400, {args.optimizer} lr {args.lr:g}"
    files = save(trajectory_plot(study, title), args.out / "trajectory")
    record["figures"] = [str(f) for f in files]
    publish(record, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
