"""Reproduce the two seed-article results with plain fine-tuning, and say where they differ.

Usage::

    python benchmarks/seed_articles.py --data-dir /work/shared/data --seeds 0 1 2 \\
        [--only two-task|mnist-fashion] [--out benchmarks/results/seed_articles.json]

Prints one JSON object on stdout (per-seed figures, mean and sample std over seeds, the exact
settings, the article's numbers); progress goes to stderr. Accuracies are in percent, BWT in
points.

Seed article 1 (``two-task-binary``, small MLP, fine-tuning): task A 93.6% after A, 53.6% after
B, task B 95.6%. Settings: MLP 2-32-32-2, Adam, lr 0.01, batch 32, 20 epochs per task; it reaches
the noise ceiling of both tasks (A 94.3 of 94.8, B 94.6 of 94.8). A sweep of hidden sizes (16,
64, 32-32, 100-100), SGD lr 0.1 / Adam lr 0.01 or 0.001, 5 or 20 epochs, batch 32, gave A
92.5-94.4, A after B 49.7-51.2, B 93.1-94.6 (one under-trained exception, below). With the
rules 90 degrees apart (orthogonal) the article's figures are out of reach of
any network, however trained. Test labels carry the same 5% noise, so a classifier ``f`` scores
``noise + (1 - 2 noise) P(f = clean label)`` on each task, and on the fraction ``angle / 180`` of
inputs where the two rules disagree it is right for one task only:
``acc_A(after B) + acc_B <= 2 noise + (1 - 2 noise)(2 - angle / 180) = 1.45`` at 90 degrees,
against the article's 0.536 + 0.956 = 1.492. A network that has learnt B keeps
``noise + (1 - 2 noise)(1 - angle / 180) = 50%`` on A at 90 degrees; the only way to 53-56% there
is to under-train B (Adam lr 1e-3, 5 epochs: A 56.1, B 88.0). 53.6% needs an angle near 82-83
degrees (``dim`` changes nothing: the rules live in a 2-D subspace), so the library's default
angle is 82 degrees, calibrated to the article's reported conflict (its generator is not
published). The benchmark measures the defaults, the per-seed noise ceilings, and, for
comparison, the same MLP with orthogonal rules (``angle=90``).

Seed article 2 (``mnist-fashion``, the CNN, fine-tuning on one shared 10-way output): MNIST
99.2% after task 1, Fashion-MNIST 91.1% after task 2, MNIST 33.9% after task 2 (BWT -65.3).
Settings: Adam, lr 1e-3, batch 32, 2 epochs per task (a fresh optimiser per task). Measured on
seed 0 (accuracy after each epoch): Adam batch 128, 1 epoch: 98.1 / 87.8 F-MNIST, short of the
targets; Adam batch 64: MNIST 98.1, 98.5, 98.9 after epochs 1-3, then F-MNIST 88.0, 90.1, 90.9
(MNIST 41.7, 27.8, 23.9); SGD momentum 0.9, lr 0.05, batch 64: MNIST 98.6 from epoch 1 but
F-MNIST 86.2, 89.2, 89.0 and MNIST falls to 23.5, 15.4, 13.8, far below the article's 33.9.
Adam at batch 32 passes both targets in two epochs (about 4.6 CPU-minutes a run, 15 minutes for
the whole benchmark); three epochs would come closer to the article but would not fit three
seeds in the ~25-minute budget on two shared cores.

Timing: torch runs with ``--threads`` threads (default 1). On a small shared CPU, two threads
fighting other jobs for two cores ran about 4x slower per step than one thread. Each MNIST run
records wall time, the process's CPU time (close to the wall time the run would take alone on one
thread) and the 1-minute load average before and after, since other jobs inflate wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import forgetless
from forgetless.data import two_task_binary
from forgetless.engine import FitConfig, train
from forgetless.experiment import RunConfig, run
from forgetless.models import build_model
from forgetless.provenance import provenance
from forgetless.result import Result
from forgetless.scenarios import sequence

#: What the seed articles report, in percent (BWT in points).
ARTICLE_1 = {"a_after_a": 93.6, "a_after_b": 53.6, "b_after_b": 95.6}
ARTICLE_2 = {"mnist_after_1": 99.2, "fmnist_after_2": 91.1, "mnist_after_2": 33.9, "bwt": -65.3}
#: The brief's targets for article 2 (plain fine-tuning, honest settings).
TARGETS_2 = {"mnist_after_1_min": 98.5, "fmnist_after_2_min": 89.0, "mnist_after_2_max": 60.0}

#: The generator's defaults, as ``forgetless.data.two_task_binary`` documents them.
GENERATOR_DEFAULTS = {"dim": 2, "angle": 82.0, "noise": 0.05}
#: Orthogonal rules, for comparison: a network that learns B keeps 50% on A.
COMPARISON_ANGLE = 90.0


@dataclass(frozen=True)
class Settings:
    """How one scenario is trained (plain fine-tuning, a fresh optimiser per task)."""

    model: str
    hidden: list[int] | None
    epochs: int
    optimizer: str
    lr: float
    momentum: float
    batch_size: int

    def fit(self) -> FitConfig:
        """The loop settings for :func:`forgetless.engine.train` (no progress bar)."""
        # The scenario, seed and data folder do not enter the loop settings.
        return self.run_config("two-task-binary", 0, None).fit_config()

    def run_config(self, scenario: str, seed: int, data_dir: str | None) -> RunConfig:
        """The full :class:`RunConfig` of one run of ``scenario``."""
        return RunConfig(
            scenario=scenario,
            data_dir=data_dir,
            model=self.model,
            hidden=self.hidden,
            strategy="finetune",
            seed=seed,
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            lr=self.lr,
            momentum=self.momentum,
            progress=False,
        )


def log(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def pct(fraction: float) -> float:
    """A fraction as percent, rounded for the report."""
    return round(100.0 * fraction, 2)


def summarise(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (n - 1; 0 for one seed) of ``keys`` over ``rows``."""
    out = {}
    for key in keys:
        values = [float(row[key]) for row in rows]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out[key] = {"mean": round(statistics.fmean(values), 2), "std": round(std, 2)}
    return out


def two_task_row(result: Result, wall: float) -> dict[str, Any]:
    """The per-seed figures of a two-task run."""
    R = result.accuracy_matrix
    return {
        "seed": result.seed,
        "a_after_a": pct(R[0][0]),
        "a_after_b": pct(R[1][0]),
        "b_after_b": pct(R[1][1]),
        "bwt": pct(R[1][0] - R[0][0]),
        "wall_s": round(wall, 2),
    }


def noise_ceilings(seed: int, angle: float, noise: float) -> dict[str, Any]:
    """The best test accuracy any model can get on each task of one seed's data.

    The generator draws the same inputs whatever ``noise`` is (the flips come from draws it makes
    in any case), so regenerating with ``noise=0`` gives the clean labels of the same test
    inputs; the ceiling is the share of test labels left unflipped. Returns ``None`` values if
    the inputs do not match (the generator changed).
    """
    noisy = two_task_binary(seed, angle=angle, noise=noise)
    clean = two_task_binary(seed, angle=angle, noise=0.0)
    ceilings: dict[str, Any] = {}
    for key, n, c in zip(("a", "b"), noisy, clean, strict=True):
        same = torch.equal(n.test.x, c.test.x)
        ceilings[f"{key}_ceiling"] = (
            pct((n.test.y == c.test.y).float().mean().item()) if same else None
        )
    return ceilings


def run_two_task(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Seed article 1: the preset ``two-task-binary`` (generator defaults), then 90 degrees."""
    keys = ("a_after_a", "a_after_b", "b_after_b", "bwt", "wall_s")
    angle, noise = GENERATOR_DEFAULTS["angle"], GENERATOR_DEFAULTS["noise"]
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        result = run(settings.run_config("two-task-binary", seed, None))
        row = two_task_row(result, time.perf_counter() - start)
        row.update(noise_ceilings(seed, angle, noise))
        rows.append(row)
        log(
            f"[two-task] seed {seed}: A {row['a_after_a']} -> {row['a_after_b']}, "
            f"B {row['b_after_b']} (ceilings A {row['a_ceiling']}, B {row['b_ceiling']})"
        )
    ceiling_keys = [k for k in ("a_ceiling", "b_ceiling") if all(r[k] is not None for r in rows)]
    mean = summarise(rows, [*keys, *ceiling_keys])

    orthogonal = []
    for seed in args.seeds:
        start = time.perf_counter()
        result = train_two_task(seed, settings, COMPARISON_ANGLE, noise)
        orthogonal.append(two_task_row(result, time.perf_counter() - start))
        log(
            f"[two-task, angle {COMPARISON_ANGLE:g}] seed {seed}: A {orthogonal[-1]['a_after_a']} -> "
            f"{orthogonal[-1]['a_after_b']}, B {orthogonal[-1]['b_after_b']}"
        )

    article_sum = (ARTICLE_1["a_after_b"] + ARTICLE_1["b_after_b"]) / 100
    return {
        "scenario": "two-task-binary",
        "protocol": "domain",
        "strategy": "finetune",
        "settings": asdict(settings),
        "generator": dict(GENERATOR_DEFAULTS),
        "article": ARTICLE_1,
        "per_seed": rows,
        "mean_std": mean,
        "gap_to_article": {k: round(mean[k]["mean"] - v, 2) for k, v in ARTICLE_1.items()},
        "bound": {
            "a_after_b_if_b_learnt": pct(a_after_b_if_b_learnt(angle, noise)),
            "max_a_after_b_plus_b": round(max_sum(angle, noise), 4),
            "article_a_after_b_plus_b": round(article_sum, 4),
            "angle_for_article_a_after_b": round(angle_for(ARTICLE_1["a_after_b"] / 100, noise), 1),
        },
        "orthogonal_rules": {
            "generator": {**GENERATOR_DEFAULTS, "angle": COMPARISON_ANGLE},
            "note": "rules 90 degrees apart, for comparison with the default 82",
            "a_after_b_if_b_learnt": pct(a_after_b_if_b_learnt(COMPARISON_ANGLE, noise)),
            "per_seed": orthogonal,
            "mean_std": summarise(orthogonal, keys),
        },
    }


def train_two_task(seed: int, settings: Settings, angle: float, noise: float) -> Result:
    """One fine-tuning run on the two-task generator with another ``angle`` (as ``run`` does)."""
    stream = sequence(
        list(two_task_binary(seed, angle=angle, noise=noise)),
        "domain",
        seed,
        name=f"two-task-binary(angle={angle:g})",
    )
    torch.manual_seed(seed)
    model = build_model(settings.model, stream.input_shape, stream.num_outputs, settings.hidden)
    return train(stream, model, "finetune", settings.fit(), seed)


def a_after_b_if_b_learnt(angle: float, noise: float) -> float:
    """Expected accuracy on A of a model that predicts B's clean rule exactly."""
    return noise + (1 - 2 * noise) * (1 - angle / 180)


def max_sum(angle: float, noise: float) -> float:
    """Upper bound on ``acc_A + acc_B`` of any single classifier, in expectation."""
    return 2 * noise + (1 - 2 * noise) * (2 - angle / 180)


def angle_for(a_after_b: float, noise: float) -> float:
    """The angle at which a model that learns B keeps ``a_after_b`` on A."""
    return 180 * (1 - (a_after_b - noise) / (1 - 2 * noise))


def run_mnist_fashion(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Seed article 2: MNIST then Fashion-MNIST, the CNN, one shared 10-way output."""
    rows = []
    for seed in args.seeds:
        load_before = os.getloadavg()[0]
        start, cpu_start = time.perf_counter(), time.process_time()
        result = run(settings.run_config("mnist-fashion", seed, args.data_dir))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        R = result.accuracy_matrix
        row = {
            "seed": seed,
            "mnist_after_1": pct(R[0][0]),
            "fmnist_after_2": pct(R[1][1]),
            "mnist_after_2": pct(R[1][0]),
            "bwt": pct(R[1][0] - R[0][0]),  # BWT of two tasks (result.metrics["bwt"])
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "train_s": round(result.timings["train"], 1),
            "eval_s": round(result.timings["eval"], 1),
            "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        rows.append(row)
        log(
            f"[mnist-fashion] seed {seed}: MNIST {row['mnist_after_1']} -> {row['mnist_after_2']}, "
            f"F-MNIST {row['fmnist_after_2']}, BWT {row['bwt']} "
            f"({row['wall_s']} s wall, {row['cpu_s']} s CPU)"
        )
    keys = (
        "mnist_after_1",
        "fmnist_after_2",
        "mnist_after_2",
        "bwt",
        "wall_s",
        "cpu_s",
        "train_s",
        "eval_s",
    )
    mean = summarise(rows, keys)
    return {
        "scenario": "mnist-fashion",
        "protocol": "domain",
        "strategy": "finetune",
        "settings": asdict(settings),
        "article": ARTICLE_2,
        "targets": TARGETS_2,
        "per_seed": rows,
        "mean_std": mean,
        "gap_to_article": {k: round(mean[k]["mean"] - v, 2) for k, v in ARTICLE_2.items()},
        "targets_met": {
            "mnist_after_1": mean["mnist_after_1"]["mean"] >= TARGETS_2["mnist_after_1_min"],
            "fmnist_after_2": mean["fmnist_after_2"]["mean"] >= TARGETS_2["fmnist_after_2_min"],
            "mnist_after_2": mean["mnist_after_2"]["mean"] <= TARGETS_2["mnist_after_2_max"],
        },
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; every default is the setting chosen for the reproduction."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="folder with mnist/ and fashion-mnist/")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", choices=("two-task", "mnist-fashion"), default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    tt = p.add_argument_group("two-task-binary (small MLP)")
    tt.add_argument("--tt-hidden", type=int, nargs="+", default=[32, 32])
    tt.add_argument("--tt-epochs", type=int, default=20)
    tt.add_argument("--tt-optimizer", choices=("sgd", "adam"), default="adam")
    tt.add_argument("--tt-lr", type=float, default=0.01)
    tt.add_argument("--tt-momentum", type=float, default=0.0)
    tt.add_argument("--tt-batch-size", type=int, default=32)
    mf = p.add_argument_group("mnist-fashion (CNN)")
    mf.add_argument("--mf-epochs", type=int, default=2)
    mf.add_argument("--mf-optimizer", choices=("sgd", "adam"), default="adam")
    mf.add_argument("--mf-lr", type=float, default=0.001)
    mf.add_argument("--mf-momentum", type=float, default=0.0)
    mf.add_argument("--mf-batch-size", type=int, default=32)
    return p.parse_args(argv)


def environment() -> dict[str, str]:
    """Versions and the CPU budget, for reading the wall times."""
    return {
        "forgetless": forgetless.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": str(torch.get_num_threads()),
        "cpu_count": str(os.cpu_count()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts, print the JSON report (and write it to ``--out``)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    parts: dict[str, tuple[Callable[[argparse.Namespace, Settings], dict[str, Any]], Settings]] = {
        "two-task": (
            run_two_task,
            Settings(
                "mlp",
                args.tt_hidden,
                args.tt_epochs,
                args.tt_optimizer,
                args.tt_lr,
                args.tt_momentum,
                args.tt_batch_size,
            ),
        ),
        "mnist-fashion": (
            run_mnist_fashion,
            Settings(
                "cnn",
                None,
                args.mf_epochs,
                args.mf_optimizer,
                args.mf_lr,
                args.mf_momentum,
                args.mf_batch_size,
            ),
        ),
    }
    output: dict[str, Any] = {
        "benchmark": "seed_articles",
        "seeds": args.seeds,
        "std": "sample standard deviation over seeds (n - 1)",
        "units": "accuracies in percent, BWT in points, times in seconds",
        "environment": environment(),
    }
    start = time.perf_counter()
    for name, (part, settings) in parts.items():
        if args.only in (None, name):
            log(f"== {name}: {asdict(settings)}")
            output[name] = part(args, settings)
    output["total_wall_s"] = round(time.perf_counter() - start, 1)
    output["provenance"] = provenance()  # the forgetless version and git commit
    text = json.dumps(output, indent=1)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
