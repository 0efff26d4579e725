"""Models that grow (issue 13, must-show): parameter isolation against fine-tuning, EWC, replay
and DER++ under task-IL, with what each holds after the last task and what it costs per task.

Usage::

    python benchmarks/isolation.py --data-dir /work/shared/data \\
        [--only smnist pmnist hypermask-paper] [--seeds 0 1 2] [--workers 1] \\
        [--store benchmarks/results/runs] [--out benchmarks/results/isolation.json]

Every run is task-incremental: the task is given in training and at test time (each task has
its own output units; ``pnn`` picks its column, ``packnet``/``hat``/``hypermask`` their
masks by it). Accuracies in percent, mean and sample std over ``--seeds``.

``smnist``: the DER paper's protocol (Buzzega et al. 2020, NeurIPS; their code's
``seq-mnist``): MNIST in 5 tasks of 2 classes, digits in order, MLP 784-100-100, plain SGD,
1 epoch per task, batch 10, learning rates from the authors' ``utils/best_args.py``: SGD 0.03,
online EWC 0.03 (lambda 90 for their penalty without the 1/2, so ``lam`` 180 here, empirical
Fisher), ER 0.1 and DER++ 0.03 (buffer 500, replay batch 10, DER++ alpha 1.0, beta 0.5), PNN
0.1. PackNet, HAT and ``specialists`` (a copy of the model per task, each fine-tuned from the last;
``specialists-initial``: each from the same initial weights) are not in the DER paper: they
train at PNN's 0.1. HyperMask diverges with SGD at 0.1 (loss inf within 400 steps): it trains
with its authors' Adam at lr 1e-3, 1 epoch, batch 10 (``hypermask``) or its authors' 128
(``hypermask-b128``: 94 steps a task instead of 1200, what fitted on the loaded machine). One difference from the paper: the paper trains the non-PNN methods
class-incrementally and reads task-IL off the same runs by masking the other tasks' outputs at
test time; here every method trains with the task's outputs only (protocol ``task``), the
setting in which parameter isolation is defined.

``pmnist``: Permuted-MNIST, 10 tasks, task-IL (10 output units per task), MLP 100-100, SGD,
1 epoch, batch 128, the DER authors' ``perm-mnist`` learning rates (SGD 0.2, online EWC 0.1
with lambda 0.7 -> ``lam`` 1.4, ER and DER++ 0.2 with buffer 500 and replay batch 128, DER++
alpha 1.0, beta 0.5); PNN, PackNet and HAT at 0.1, HyperMask with Adam lr 1e-3 and its
authors' P-MNIST setting (no sparsity, beta 0.0005, embedding 24) but a 25-25 hypernetwork
instead of their 100-100 (whose last layer alone is 8.9 M parameters here: too slow on one
thread).

``hypermask-paper``: HyperMask's Split-MNIST protocol (Ksiazek and Spurek 2024, arXiv
2310.00113; their best Split-MNIST setting): target MLP 400-400, Adam lr 1e-3, batch 128,
2000 iterations per task, embedding 128, hypernetwork 25-25, sparsity 30 %, beta 0.001,
lambda 0.001; ``finetune``, ``pnn``, ``packnet`` and ``hat`` in the same protocol beside it.
``--paper-iterations`` cuts the 2000 iterations per task (each HyperMask step on the 400-400
target costs about a second on one loaded thread: its hypernetwork's last layer has 12 M
parameters).

``--hypermask-seeds`` runs HyperMask's rows on fewer seeds than the rest (it is about 15 times slower than fine-tuning); ``--pmnist-seeds`` the
other rows of ``pmnist``. ``--rows`` trains and reports only the rows named (to run a slow row in
a process of its own beside the others; its ratios need ``finetune`` among them).

Reported per row: ACC and BWT; parameters (elements) and bytes of the model after the last
task (``Result.model_size``), bytes of strategy state (``strategy_state_bytes``: buffers,
anchors, saved masks; HyperMask's hypernetwork is part of the model's count); wall seconds of
training per task and CPU seconds of the whole run (data loading and evaluation included),
each with its ratio to fine-tuning's in the same section. On a loaded machine the wall time
depends on the load while the run ran; the CPU time much less.

Finished runs are kept in ``--store`` (a run store), so a rerun only trains what is missing.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from forgetless.experiment import RunConfig
from forgetless.reproduce.catalogue import der_pmnist_settings, der_smnist_settings
from grid import STORE, log, mean_std, percent, publish, record_of, run_all

SECTIONS = ("smnist", "pmnist", "hypermask-paper")
STRATEGIES = (
    "finetune",
    "ewc",
    "replay",
    "derpp",
    "pnn",
    "packnet",
    "hat",
    "hypermask",
    "specialists",
    "specialists-initial",
    "hypermask-b128",
)
#: Rows that run a strategy under another name (its parameters tell them apart).
ROW_STRATEGY = {"specialists-initial": "specialists", "hypermask-b128": "hypermask"}
#: Rows with their own batch size: HyperMask at its authors' 128 (batch 10 did not fit here).
ROW_BATCH = {"hypermask-b128": 128}
#: The DER paper, Table 2, S-MNIST task-IL (buffer 500 where there is one).
PUBLISHED_DER_SMNIST_TASK = {"pnn": 99.23}

# strategy -> (optimizer, lr, params), per section.
SMNIST: dict[str, tuple[str, float, dict[str, Any]]] = {
    "finetune": ("sgd", 0.03, {}),
    "ewc": ("sgd", 0.03, {"lam": 180.0, "fisher": "empirical"}),
    "replay": ("sgd", 0.1, {"buffer_size": 500, "replay_batch_size": 10}),
    "derpp": (
        "sgd",
        0.03,
        {"buffer_size": 500, "replay_batch_size": 10, "alpha": 1.0, "beta": 0.5},
    ),
    "pnn": ("sgd", 0.1, {}),
    "packnet": ("sgd", 0.1, {}),
    "hat": ("sgd", 0.1, {}),
    "hypermask": ("adam", 1e-3, {}),
    "specialists": ("sgd", 0.1, {}),
    "specialists-initial": ("sgd", 0.1, {"start": "initial"}),
    "hypermask-b128": ("adam", 1e-3, {}),
}
PMNIST: dict[str, tuple[str, float, dict[str, Any]]] = {
    "finetune": ("sgd", 0.2, {}),
    "ewc": ("sgd", 0.1, {"lam": 1.4, "fisher": "empirical"}),
    "replay": ("sgd", 0.2, {"buffer_size": 500, "replay_batch_size": 128}),
    "derpp": (
        "sgd",
        0.2,
        {"buffer_size": 500, "replay_batch_size": 128, "alpha": 1.0, "beta": 0.5},
    ),
    "pnn": ("sgd", 0.1, {}),
    "packnet": ("sgd", 0.1, {}),
    "hat": ("sgd", 0.1, {}),
    # The authors' P-MNIST hypernetwork is 100-100: its last layer alone would be 8.9 M
    # parameters for this 89 k target, too slow here on one thread; 25-25 as on S-MNIST.
    "hypermask": (
        "adam",
        1e-3,
        {"sparsity": 0.0, "beta": 0.0005, "embedding_size": 24, "hypernet_width": 25},
    ),
    "specialists": ("sgd", 0.1, {}),
    "specialists-initial": ("sgd", 0.1, {"start": "initial"}),
}
PAPER = ("finetune", "pnn", "packnet", "hat", "hypermask")


def smnist(seed: int, data: str, row: str) -> RunConfig:
    """The DER paper's S-MNIST run (the catalogue's protocol), task-IL, of the row ``row``."""
    optimizer, lr, params = SMNIST[row]
    settings = der_smnist_settings(ROW_STRATEGY.get(row, row), lr, params, ROW_BATCH.get(row, 10))
    return RunConfig(
        **{**settings, "protocol": "task", "optimizer": optimizer}, data_dir=data, seed=seed
    )


def pmnist(seed: int, data: str, row: str) -> RunConfig:
    """The DER paper's P-MNIST run (the catalogue's protocol) on 10 tasks, task-IL."""
    optimizer, lr, params = PMNIST[row]
    settings = der_pmnist_settings(ROW_STRATEGY.get(row, row), lr, params, n_tasks=10)
    return RunConfig(
        **{**settings, "protocol": "task", "optimizer": optimizer}, data_dir=data, seed=seed
    )


#: Iterations per task of the ``hypermask-paper`` section (the paper's 2000 unless cut).
PAPER_ITERATIONS = [2000]


def hypermask_paper(seed: int, data: str, strategy: str) -> RunConfig:
    return RunConfig(
        scenario="split-mnist",
        protocol="task",
        class_order=list(range(10)),
        data_dir=data,
        model="mlp",
        hidden=[400, 400],
        strategy=strategy,
        seed=seed,
        iterations=PAPER_ITERATIONS[0],
        batch_size=128,
        optimizer="adam",
        lr=1e-3,
    )


BUILDERS = {"smnist": smnist, "pmnist": pmnist, "hypermask-paper": hypermask_paper}
ROWS = {
    "smnist": STRATEGIES,
    "pmnist": tuple(s for s in STRATEGIES if s not in ROW_BATCH),
    "hypermask-paper": PAPER,
}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """ACC, BWT, sizes and time per task of one strategy's runs over seeds."""
    acc = percent(r["metrics"]["acc"] for r in records)
    bwt = percent(r["metrics"]["bwt"] for r in records)
    last = records[0]["model_size"][-1] if records[0]["model_size"] else {}
    per_task = [statistics.fmean(r["timings"]["train_per_task"]) for r in records]
    row = {
        "acc": mean_std(acc),
        "bwt": mean_std(bwt),
        "bwt_exactly_zero": all(r["metrics"]["bwt"] == 0.0 for r in records),
        "parameters": last.get("parameters"),
        "trainable_at_end": last.get("trainable"),
        "model_bytes": last.get("bytes"),
        "parameters_per_task": [s["parameters"] for s in records[0]["model_size"]],
        "strategy_state_bytes": records[0]["strategy_state_bytes"],
        "train_seconds_per_task": mean_std(per_task),
        "cpu_seconds_per_run": mean_std([r["cpu_seconds"] for r in records]),
        "seeds": [r["seed"] for r in records],
    }
    reports = records[0].get("strategy_reports") or {}
    if reports:
        row["strategy_reports_seed0"] = reports
    return row


#: Seeds of the ``pmnist`` section, when fewer than ``--seeds`` (``--pmnist-seeds``).
PMNIST_SEEDS: list[list[int]] = []


def seeds_of(name: str, strategy: str, seeds: list[int], hypermask_seeds: list[int]) -> list[int]:
    """The seeds a row runs on: fewer for HyperMask's slow rows, and for P-MNIST, when asked."""
    if ROW_STRATEGY.get(strategy, strategy) == "hypermask":
        return hypermask_seeds
    if name == "pmnist" and PMNIST_SEEDS:
        return PMNIST_SEEDS[0]
    return seeds


def section(
    name: str,
    seeds: list[int],
    hypermask_seeds: list[int],
    data: str,
    records: dict,
    only_rows: list[str] | None = None,
) -> dict[str, Any]:
    build = BUILDERS[name]
    rows = {}
    for strategy in [s for s in ROWS[name] if not only_rows or s in only_rows]:
        chosen = seeds_of(name, strategy, seeds, hypermask_seeds)
        runs = [record_of(records, build(s, data, strategy)) for s in chosen]
        rows[strategy] = summarise(runs)
    base = rows.get("finetune")
    for row in rows.values() if base else []:
        row["time_vs_finetune"] = round(
            row["train_seconds_per_task"]["mean"] / base["train_seconds_per_task"]["mean"], 2
        )
        row["cpu_vs_finetune"] = round(
            row["cpu_seconds_per_run"]["mean"] / base["cpu_seconds_per_run"]["mean"], 2
        )
        row["parameters_vs_finetune"] = round(row["parameters"] / base["parameters"], 2)
    config = build(seeds[0], data, "finetune").to_dict()
    config.pop("strategy"), config.pop("strategy_params"), config.pop("seed")
    settings = {s: (build(seeds[0], data, s).optimizer, build(seeds[0], data, s).lr) for s in rows}
    out = {"protocol": config, "optimizer_lr": settings, "rows": rows}
    if name == "smnist":
        out["published_der_task_il"] = PUBLISHED_DER_SMNIST_TASK
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--hypermask-seeds", nargs="+", type=int, default=None)
    parser.add_argument("--pmnist-seeds", nargs="+", type=int, default=None)
    parser.add_argument("--rows", nargs="+", choices=STRATEGIES, default=None)
    parser.add_argument("--paper-iterations", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/isolation.json"))
    args = parser.parse_args()
    PAPER_ITERATIONS[0] = args.paper_iterations
    if args.pmnist_seeds:
        PMNIST_SEEDS.append(args.pmnist_seeds)
    hypermask_seeds = args.hypermask_seeds or args.seeds
    configs = [
        BUILDERS[name](seed, args.data_dir, strategy)
        for name in args.only
        for strategy in ROWS[name]
        if not args.rows or strategy in args.rows
        for seed in seeds_of(name, strategy, args.seeds, hypermask_seeds)
    ]
    records = run_all(configs, args.store, args.workers)
    report = {"seeds": args.seeds, "hypermask_seeds": hypermask_seeds}
    if "pmnist" in args.only:
        report["pmnist_seeds"] = args.pmnist_seeds or args.seeds
    if "hypermask-paper" in args.only:
        report["paper_iterations"] = args.paper_iterations
    for name in args.only:
        report[name] = section(name, args.seeds, hypermask_seeds, args.data_dir, records, args.rows)
        log(
            f"{name}: "
            + ", ".join(
                f"{s} {r['acc']['mean']:.2f}/{r['bwt']['mean']:+.2f}"
                for s, r in report[name]["rows"].items()
            )
        )
    publish(report, args.out)


if __name__ == "__main__":
    main()
