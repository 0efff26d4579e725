"""Regularisation strategies against published figures: seed article 1, Permuted-MNIST, LwF, memory.

Usage::

    python benchmarks/regularisation.py --data-dir /work/shared/data \\
        [--only two-task pmnist lwf memory] [--seeds 0 1 2] [--workers 2] \\
        [--store benchmarks/results/runs] \\
        [--out benchmarks/results/regularisation.json]

Sections (accuracies in percent, mean and sample std over ``--seeds``):

``two-task`` (seed article 1): ``two-task-binary`` with the seed-article settings of
``seed_articles.py`` (MLP 2-32-32-2, Adam lr 0.01, batch 32, 20 epochs per task), fine-tuning
against EWC with lambda 1000 (exact Fisher), and a decade sweep of lambda around it to show the
trade between keeping task A and learning task B. The article: A 91.8 -> 74.4 with EWC, 93.6 ->
53.6 without; B 73.8 with EWC, 95.6 without. Our lambda multiplies a Fisher that is a mean over
examples (``forgetless.fisher``); the article's scale is not published. If its Fisher was a sum
over the 2,000 training examples, as in many tutorials, its lambda 1000 is our 2e6, which the
grid includes.

``pmnist``: Permuted-MNIST, 20 tasks, domain-IL, MLP 784-100-100-10, 1 epoch per task, batch
128, plain SGD: the DER paper's protocol (Buzzega et al. 2020, Table 2: SGD 40.70, oEWC 75.79,
SI 65.86, joint 94.33). Learning rates and strengths from the DER authors' published best
settings for this benchmark: SGD lr 0.2; joint (one epoch over the union of the 20 tasks, from
the initial weights, as their joint does for domain-IL) lr 0.2, SGD's, as they list none; SI lr 0.1, c 0.5, xi 1.0; online EWC lr 0.1, gamma 1.0, lambda 0.7 in
their code, whose penalty has no 1/2 (so 1.4 here), with an empirical Fisher; and with their code's own estimate,
``weighted-empirical`` (each squared gradient weighted by p(y|x): about 4x smaller on a trained
task, see ``forgetless.fisher``). Online EWC is also run
at lambda 5, the best of 1.4 / 5 / 20 on seed 0 in development (so chosen on a reported seed).
Our first task is MNIST unpermuted; theirs are all permuted.

``lwf``: Split-MNIST (digits in order), MLP 784-400-400, Adam lr 1e-3, 2000 iterations of 128 per
task, LwF (alpha 1, T 2) under class-IL and task-IL, with fine-tuning under class-IL for
reference (van de Ven and Tolias 2019, "Three scenarios for continual learning": LwF class-IL
23.85, task-IL 99.57 in their Table 4).

``memory``: the state each method keeps, ``Result.strategy_state_bytes``, and the process's peak
resident memory, on Permuted-MNIST with 10 and 20 tasks (MLP 100-100, 20 steps per task: memory
does not depend on how long a task trains). Every run has a fresh process.

Finished runs are kept in ``--store`` (a run store), so a rerun only trains what is missing.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from forgetless.articles import ARTICLES
from forgetless.experiment import RunConfig
from forgetless.reproduce.catalogue import (
    DER_PMNIST_ARGS,
    LWF_PARAMS,
    der_pmnist_settings,
    van_de_ven_settings,
)
from grid import STORE, log, mean_std, percent, publish, record_of, run_all

SECTIONS = ("two-task", "pmnist", "lwf", "memory")
PUBLISHED_PMNIST = {"finetune": 40.70, "online-ewc": 75.79, "si": 65.86, "joint": 94.33}
ARTICLE_1 = {
    "finetune": {"a_after_a": 93.6, "a_after_b": 53.6, "b_after_b": 95.6},
    "ewc": {"a_after_a": 91.8, "a_after_b": 74.4, "b_after_b": 73.8},
}
PUBLISHED_LWF = {"class": 23.85, "task": 99.57}


def two_task(seed: int, lam: float | None) -> RunConfig:
    """Seed article 1's run (the settings of ``forgetless.articles``): fine-tuning, or EWC at
    ``lam``."""
    strategy, params = ("finetune", {}) if lam is None else ("ewc", {"lam": lam})
    return RunConfig(
        **ARTICLES["binary"].base, strategy=strategy, strategy_params=params, seed=seed
    )


#: The P-MNIST rows: the catalogue's (the DER authors' best arguments), and lambda 5.
PMNIST_SETTINGS = {
    "finetune": DER_PMNIST_ARGS["SGD"],
    "joint": DER_PMNIST_ARGS["joint"],
    "si": DER_PMNIST_ARGS["SI"],
    "online-ewc lam 1.4": DER_PMNIST_ARGS["oEWC"],
    "online-ewc lam 5": ("online-ewc", 0.1, {"lam": 5.0, "fisher": "empirical", "gamma": 1.0}),
    # Mammoth's own estimate (the Fisher the paper's lambda was tuned for): see fisher.py.
    "online-ewc weighted-empirical lam 1.4": DER_PMNIST_ARGS["oEWC, their Fisher"],
}


def pmnist(seed: int, data_dir: str, label: str, n_tasks: int = 20, iterations=None) -> RunConfig:
    """The DER paper's P-MNIST run (the catalogue's protocol) of the row ``label``."""
    strategy, lr, params = PMNIST_SETTINGS.get(label, (label, 0.1, {}))
    return RunConfig(
        **der_pmnist_settings(strategy, lr, params, n_tasks),
        data_dir=data_dir,
        seed=seed,
        iterations=iterations,
    )


def lwf(seed: int, data_dir: str, strategy: str, protocol: str) -> RunConfig:
    """van de Ven and Tolias' Split-MNIST run (the catalogue's protocol): LwF or fine-tuning."""
    params = LWF_PARAMS if strategy == "lwf" else {}
    return RunConfig(
        **van_de_ven_settings(strategy, params, protocol), data_dir=data_dir, seed=seed
    )


MEMORY_STRATEGIES = {
    "finetune": {},
    "ewc": {"lam": 1.0, "fisher_samples": 1000},
    "online-ewc": {"lam": 1.0, "fisher_samples": 1000},
    "si": {"c": 0.5},
    "mas": {"lam": 1.0, "samples": 1000},
}


def memory(data_dir: str, strategy: str, n_tasks: int) -> RunConfig:
    config = pmnist(0, data_dir, strategy, n_tasks=n_tasks, iterations=20)
    config.strategy_params = MEMORY_STRATEGIES[strategy]
    return config


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "acc": mean_std(percent(r["metrics"]["acc"] for r in records)),
        "bwt": mean_std(percent(r["metrics"]["bwt"] for r in records)),
        "acc_per_seed": [round(100 * r["metrics"]["acc"], 2) for r in records],
        "train_seconds": mean_std([r["timings"]["train"] for r in records]),
        "peak_memory_mb": mean_std([r["peak_memory_mb"] for r in records]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/regularisation.json"))
    args = parser.parse_args(argv)
    seeds, data = args.seeds, args.data_dir

    plans: dict[str, dict[str, list[RunConfig]]] = {}
    if "two-task" in args.only:
        plans["two-task"] = {"finetune": [two_task(s, None) for s in seeds]}
        for lam in (1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 2e6):
            plans["two-task"][f"ewc lam {lam:g}"] = [two_task(s, lam) for s in seeds]
    if "pmnist" in args.only:
        plans["pmnist"] = {k: [pmnist(s, data, k) for s in seeds] for k in PMNIST_SETTINGS}
    if "lwf" in args.only:
        plans["lwf"] = {
            f"{strategy} {protocol}-IL": [lwf(s, data, strategy, protocol) for s in seeds]
            for strategy, protocol in (("lwf", "class"), ("lwf", "task"), ("finetune", "class"))
        }
    if "memory" in args.only:
        plans["memory"] = {
            f"{strategy} {n} tasks": [memory(data, strategy, n)]
            for strategy in MEMORY_STRATEGIES
            for n in (10, 20)
        }
    every = [c for plan in plans.values() for cs in plan.values() for c in cs]
    records = run_all(every, args.store, args.workers)

    report: dict[str, Any] = {"seeds": seeds}
    for section, plan in plans.items():
        out = report[section] = {}
        for label, configs in plan.items():
            recs = [record_of(records, c) for c in configs]
            entry = out[label] = {"config": configs[0].to_dict(), **summary(recs)}
            if section == "two-task":
                matrices = [r["accuracy_matrix"] for r in recs]
                entry["a_after_a"] = mean_std([100 * m[0][0] for m in matrices])
                entry["a_after_b"] = mean_std([100 * m[1][0] for m in matrices])
                entry["b_after_b"] = mean_std([100 * m[1][1] for m in matrices])
            if section == "memory":
                entry["strategy_state_bytes"] = recs[0]["strategy_state_bytes"]
        if section == "memory":
            for label, entry in out.items():
                strategy, n = label.split(" ")[0], label.split(" ")[1]
                base = out[f"finetune {n} tasks"]["peak_memory_mb"]["mean"]
                entry["peak_over_finetune_mb"] = round(entry["peak_memory_mb"]["mean"] - base, 1)
                log(
                    f"{label}: state {entry['strategy_state_bytes']} B, "
                    f"peak {entry['peak_memory_mb']['mean']:.0f} MB ({strategy})"
                )
    report["published"] = {
        "two-task": ARTICLE_1,
        "pmnist": PUBLISHED_PMNIST,
        "lwf": PUBLISHED_LWF,
    }
    publish(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
