"""Your own model and your own data: EWC against replay, and fine-tuning as the baseline.

The data here are scikit-learn's 8x8 digits, standing in for your arrays (any numpy arrays or
tensors of inputs ``[N, ...]`` and integer labels ``[N]``); the model is a plain
``torch.nn.Module`` written here, standing in for yours. The stream splits the ten classes into
five tasks of two, learnt class-incrementally: one head over all ten classes and no task id
at test time, where forgetting is at its worst. Fine-tuning forgets each task as soon as the
next is learnt; EWC, which protects the weights but not the shared head, barely helps there
(van de Ven et al. 2022 find the same); a replay buffer of 200 examples keeps most of it.
``--protocol task`` (a head per task, the task's id given) shows the easy case.

    python examples/own_model_and_data.py                  # under a minute of CPU
    python examples/own_model_and_data.py --epochs 1       # a quick look (the CI test)

Prints each strategy's accuracy matrix and metrics, then one line per strategy.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

import forgetless
from forgetless.data import from_arrays
from forgetless.scenarios import split
from forgetless.strategies import EWC, Replay


class SmallNet(nn.Module):
    """Your model: any module from a batch of inputs to one logit per class."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def your_data():
    """Your arrays: here the digits, 8x8 images as floats in [0, 16], split 80/20."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


def main(argv: list[str] | None = None) -> dict[str, forgetless.Result]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="passes per task (default: 10)")
    parser.add_argument("--protocol", choices=["class", "task"], default="class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    source = from_arrays(*your_data(), name="my-digits")
    stream = split(source, n_tasks=5, protocol=args.protocol, seed=args.seed)
    strategies = {
        "finetune": "finetune",
        # The strength is a sweep's job (forgetless frontier); 1000 for this net with Adam.
        # (With plain SGD it is bounded by the lr: lr * lam * max(Fisher) < 2.)
        "ewc": EWC(lam=1000.0),
        "replay": Replay(buffer_size=200),
    }
    results = {}
    for name, strategy in strategies.items():
        torch.manual_seed(args.seed)  # the same initial weights for every strategy
        model = SmallNet()
        results[name] = forgetless.train(
            stream, model, strategy, epochs=args.epochs, batch_size=32, optimizer="adam", lr=1e-3,
            seed=args.seed, progress=False,
        )  # fmt: skip
        print(f"== {name}\n{results[name]}\n")
    for name, result in results.items():
        m = result.metrics
        print(f"{name:<10} ACC {100 * m['acc']:5.1f}%   BWT {100 * m['bwt']:+5.1f} points")
    return results


if __name__ == "__main__":
    main()
