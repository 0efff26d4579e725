"""Is the online-EWC gap on Permuted-MNIST the weight initialisation? A diagnostic for
BENCHMARKS.md.

Usage::

    python benchmarks/pmnist_init.py --data-dir /work/shared/data [--seeds 0 1 2] \\
        [--workers 2] [--out benchmarks/results/pmnist_init.json]

``regularisation.py --only pmnist`` runs the DER paper's protocol (Buzzega et al. 2020: 20 tasks,
MLP 784-100-100-10, 1 epoch, batch 128, SGD) with PyTorch's default initialisation of linear
layers, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases. The authors' code
(Mammoth's ``MNISTMLP``) re-initialises every linear layer with Xavier-uniform weights,
``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``, and zero biases: 2.3 times wider weights
in the first layer. This script trains the same runs with that initialisation: SGD (lr 0.2) and
online EWC (lr 0.1, gamma 1, lambda 1.4 = the code's 0.7 without the 1/2) with the empirical
Fisher and with the code's own estimate (``weighted-empirical``). Each run has a fresh process
with one thread.

Prints one JSON object on stdout (accuracies in percent, mean and sample std over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grid import log, mean_std, publish

SETTINGS = {
    "sgd": ("finetune", 0.2, {}),
    "online-ewc empirical lam 1.4": (
        "online-ewc",
        0.1,
        {"lam": 1.4, "fisher": "empirical", "gamma": 1.0},
    ),
    "online-ewc weighted-empirical lam 1.4": (
        "online-ewc",
        0.1,
        {"lam": 1.4, "fisher": "weighted-empirical", "gamma": 1.0},
    ),
}
PUBLISHED = {"sgd": 40.70, "online-ewc": 75.79}


def xavier_(model: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every linear layer (Glorot and Bengio 2010)."""
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            fan_out, fan_in = layer.weight.shape
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.zeros_(layer.bias)


def one_run(label: str, seed: int, data_dir: str) -> dict[str, Any]:
    from forgetless import train
    from forgetless.models import build_model
    from forgetless.scenarios import make_stream

    torch.set_num_threads(1)
    strategy, lr, params = SETTINGS[label]
    stream = make_stream("permuted-mnist", seed=seed, data_dir=data_dir, n_tasks=20)
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [100, 100], seed=seed)
    xavier_(model)
    from forgetless.strategies import make_strategies

    result = train(
        stream,
        model,
        make_strategies(strategy, params),
        seed=seed,
        epochs=1,
        batch_size=128,
        lr=lr,
        progress=False,
    )
    return {"label": label, "seed": seed, "acc": 100 * result.metrics["acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pmnist_init.json"))
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    jobs = [(label, seed) for label in SETTINGS for seed in args.seeds]
    with ProcessPoolExecutor(args.workers, mp_context=context, max_tasks_per_child=1) as pool:
        futures = [pool.submit(one_run, label, seed, args.data_dir) for label, seed in jobs]
        records = []
        for future in futures:
            records.append(future.result())
            log(json.dumps(records[-1]))
    report = {
        "init": "xavier-uniform weights, zero biases (Mammoth's MNISTMLP)",
        "published": PUBLISHED,
        "acc": {
            label: mean_std([r["acc"] for r in records if r["label"] == label])
            for label in SETTINGS
        },
        "runs": records,
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
