"""Loss of plasticity along a long stream: does the network still learn the hundredth task?

Dohare et al. (2024, "Loss of plasticity in deep continual learning", Nature 632) train one
network on hundreds of permuted-MNIST tasks and watch, task after task, the accuracy reached on
the new task fall while dormant (dead) units pile up, the effective rank of the hidden
representation shrinks and the weights grow. :func:`run_plasticity` does that through the
engine (:func:`forgetless.engine.train`), measuring after each task with ``on_task_end``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from forgetless.analysis.representation import (
    dormant_fraction,
    effective_rank,
    layer_activations,
    mean_weight_magnitude,
)
from forgetless.data.arrays import ArraySet, SourceData
from forgetless.engine import FitConfig, Snapshot, train
from forgetless.errors import ConfigError
from forgetless.models import build_model
from forgetless.scenarios.stream import Protocol, Stream, Task
from forgetless.strategies import make_strategies
from forgetless.validation import check_positive_int


@dataclass
class PlasticityRecord:
    """What was measured after training one task.

    Attributes:
        task: the task's position in the stream.
        accuracy: test accuracy on that task right after training it (``R[i, i]``), the
            plasticity: how well the network still learns something new.
        dormant: fraction of all hidden units that are dead on the task's probe inputs
            (:func:`~forgetless.analysis.representation.dormant_fraction`, zero on every input).
        effective_rank: effective rank of each hidden layer's ``[probe, units]`` activations.
        weight_magnitude: mean absolute weight over the weight matrices.
        train_loss: mean training loss over the task's last epoch.
    """

    task: int
    accuracy: float
    dormant: float
    effective_rank: list[float]
    weight_magnitude: float
    train_loss: float


@dataclass
class PlasticityRun:
    """One long run: the settings, a record per task and the wall time. Plain data; JSON via
    :meth:`to_dict` and :meth:`from_dict`."""

    strategy: str
    params: dict[str, Any]
    seed: int
    settings: dict[str, Any]
    records: list[PlasticityRecord] = field(default_factory=list)
    seconds: float = 0.0

    def series(self, key: str) -> list[float]:
        """One measure along the stream: ``accuracy``, ``dormant``, ``weight_magnitude``,
        ``train_loss``, or ``effective_rank`` (of the last hidden layer)."""
        if key == "effective_rank":
            return [r.effective_rank[-1] for r in self.records]
        if key not in ("accuracy", "dormant", "weight_magnitude", "train_loss"):
            raise ConfigError(
                f"unknown series {key!r}; known: accuracy, dormant, effective_rank, "
                "weight_magnitude, train_loss"
            )
        return [getattr(r, key) for r in self.records]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlasticityRun:
        data = dict(data)
        data["records"] = [PlasticityRecord(**r) for r in data.get("records", [])]
        return cls(**data)


def permuted_subsets(
    source: SourceData,
    n_tasks: int,
    train_size: int,
    test_size: int,
    seed: int = 0,
) -> Stream:
    """A long permuted stream of small tasks (Dohare et al.'s online permuted MNIST, made
    small): every task draws its own ``train_size`` training and ``test_size`` test images from
    ``source`` and applies its own random pixel permutation (task 0 too). Domain-incremental:
    one 10-way output shared by all tasks. Only the drawn images are stored (uint8), so 100
    tasks of 6,000 MNIST images take about 0.5 GB.
    """
    n_tasks = check_positive_int("n_tasks", n_tasks)
    train_size = check_positive_int("train_size", train_size)
    test_size = check_positive_int("test_size", test_size)
    if train_size > len(source.train) or test_size > len(source.test):
        raise ConfigError(
            f"train_size {train_size} / test_size {test_size} exceed {source.name}'s "
            f"{len(source.train)} / {len(source.test)} examples"
        )
    gen = torch.Generator().manual_seed(seed)
    n_pixels = math.prod(source.train.shape)
    tasks = []
    for t in range(n_tasks):
        perm = torch.randperm(n_pixels, generator=gen)
        sets = []
        for data, size in ((source.train, train_size), (source.test, test_size)):
            rows = torch.randperm(len(data), generator=gen)[:size]
            x = data.x[rows].reshape(size, -1)[:, perm].reshape(size, *data.shape)
            sets.append(ArraySet(x.contiguous(), data.y[rows], data.scale))
        units = tuple(range(source.num_classes))
        tasks.append(Task(f"permutation {t}", *sets, units, tuple(source.class_names)))
    return Stream(f"permuted-{source.name}-long", tuple(tasks), Protocol.DOMAIN, len(units), seed)


def run_plasticity(
    stream: Stream,
    strategy: str = "finetune",
    params: Mapping[str, Any] | None = None,
    hidden: tuple[int, ...] = (100, 100, 100),
    fit: FitConfig | None = None,
    seed: int = 0,
    probe: int = 2000,
) -> PlasticityRun:
    """Train an MLP on ``stream`` with ``strategy`` and measure plasticity after every task.

    Training is :func:`forgetless.engine.train` (weights initialised from ``seed``); its
    ``on_task_end`` callback reads the live model after each task: the accuracy the task reached
    (row ``i``, column ``i`` of the accuracy matrix), and, on up to ``probe`` of that task's test
    inputs, the dormant fraction over all hidden units, each hidden layer's effective rank and
    the mean weight magnitude (Dohare et al. 2024 measure the same on 2,000 inputs).

    Args:
        stream: e.g. :func:`permuted_subsets`.
        strategy: a strategy name, e.g. ``"finetune"`` (plain backprop),
            ``"continual-backprop"``, ``"shrink-perturb"``.
        params: the strategy's parameters.
        hidden: the MLP's hidden layer sizes.
        fit: loop settings (default: SGD, lr 0.01, batch 128, 1 epoch; no progress bar).
        seed: weights, batch order and the strategy's draws.
        probe: test inputs per task used for the unit measures.
    """
    probe = check_positive_int("probe", probe)
    fit = fit or FitConfig(progress=False)
    params = dict(params or {})
    strategies = make_strategies(strategy, params)
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden, seed=seed)
    run = PlasticityRun(
        strategy="+".join(s.name for s in strategies),
        params={k: v for s in strategies for k, v in s.params().items()},
        seed=seed,
        settings={
            "stream": stream.name,
            "tasks": len(stream),
            "train_per_task": len(stream.tasks[0].train),
            "test_per_task": len(stream.tasks[0].test),
            "hidden": list(hidden),
            "probe": probe,
            "fit": {k: v for k, v in asdict(fit).items() if k not in ("progress", "device")},
        },
    )

    def measure(snapshot: Snapshot) -> None:
        i = snapshot.task
        task = stream.tasks[i]
        inputs = task.test.subset(torch.arange(min(probe, len(task.test))))
        acts = layer_activations(model, inputs)
        losses = [e["loss"] for e in snapshot.progress["losses"] if e["task"] == i]
        run.records.append(
            PlasticityRecord(
                task=i,
                accuracy=snapshot.progress["matrix"][-1][i],
                dormant=dormant_fraction(acts),
                effective_rank=[effective_rank(a) for a in acts.values()],
                weight_magnitude=mean_weight_magnitude(model),
                train_loss=losses[-1] if losses else math.nan,
            )
        )

    start = time.perf_counter()
    train(stream, model, strategies, fit=fit, seed=seed, on_task_end=measure)
    run.seconds = time.perf_counter() - start
    return run
