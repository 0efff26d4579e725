"""Is the online-EWC gap on Permuted-MNIST the weight initialisation? A diagnostic for
BENCHMARKS.md.

Usage::

    python benchmarks/pmnist_init.py --data-dir /work/shared/data [--seeds 0 1 2] \\
        [--workers 2] [--tasks 20] [--store benchmarks/results/runs] \\
        [--out benchmarks/results/pmnist_init.json]

``regularisation.py --only pmnist`` runs the DER paper's protocol (Buzzega et al. 2020: 20 tasks,
MLP 784-100-100-10, 1 epoch, batch 128, SGD) with PyTorch's default initialisation of linear
layers, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases. The authors' code
(Mammoth's ``MNISTMLP``) re-initialises every linear layer with Xavier-uniform weights,
``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``, and zero biases: 2.3 times wider weights
in the first layer. This script trains the same runs with that initialisation: SGD (lr 0.2) and
online EWC (lr 0.1, gamma 1, lambda 1.4 = the code's 0.7 without the 1/2) with the empirical
Fisher and with the code's own estimate (``weighted-empirical``): ``RunConfig.init = "xavier"``.
The runs go into ``--store`` (a run store: a rerun trains only what is missing), one thread per
worker; ``--tasks`` fewer than 20 is a brief check, not the protocol.

Prints one JSON object on stdout (accuracies in percent, mean and sample std over seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from der_table import pmnist
from forgetless.reproduce.catalogue import DER_PMNIST_ARGS
from grid import STORE, mean_std, publish, record_of, run_all

#: The rows (the reproduce catalogue's entry der-pmnist-their-init, declared there).
SETTINGS = {
    "sgd": DER_PMNIST_ARGS["SGD"],
    "online-ewc empirical lam 1.4": DER_PMNIST_ARGS["oEWC"],
    "online-ewc weighted-empirical lam 1.4": DER_PMNIST_ARGS["oEWC, their Fisher"],
}
PUBLISHED = {"sgd": 40.70, "online-ewc": 75.79}


def config(label: str, seed: int, data_dir: str, tasks: int = 20):
    """The run of ``label`` (a key of :data:`SETTINGS`): ``der_table.py``'s P-MNIST protocol
    from the DER authors' initialisation."""
    strategy, lr, params = SETTINGS[label]
    protocol = pmnist(seed, data_dir, strategy, lr, params)
    return dataclasses.replace(protocol, n_tasks=tasks, init="xavier")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=20, help="permutations (the protocol: 20)")
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pmnist_init.json"))
    args = parser.parse_args()
    plan = {
        (label, seed): config(label, seed, args.data_dir, args.tasks)
        for label in SETTINGS
        for seed in args.seeds
    }
    records = run_all(plan.values(), args.store, args.workers)
    runs = [
        {"label": label, "seed": seed, "acc": 100 * record_of(records, c)["metrics"]["acc"]}
        for (label, seed), c in plan.items()
    ]
    report = {
        "init": "xavier-uniform weights, zero biases (Mammoth's MNISTMLP)",
        "published": PUBLISHED,
        "acc": {
            label: mean_std([r["acc"] for r in runs if r["label"] == label]) for label in SETTINGS
        },
        "runs": runs,
    }
    if args.tasks != 20:
        report["tasks"] = args.tasks
    publish(report, args.out)


if __name__ == "__main__":
    main()
