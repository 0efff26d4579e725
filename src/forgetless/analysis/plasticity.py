"""Loss of plasticity along a long stream: does the network still learn the hundredth task?

Dohare et al. (2024, "Loss of plasticity in deep continual learning", Nature 632) train one
network on hundreds of permuted-MNIST tasks and watch, task after task, the accuracy reached on
the new task fall while dormant (dead) units pile up, the effective rank of the hidden
representation shrinks and the weights grow. Here are the records and the measures of one
model (:func:`plasticity_record`); the study that trains the runs and reads their stored
models is :mod:`forgetless.studies.plasticity`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from forgetless.analysis.representation import (
    dormant_fraction,
    effective_rank,
    layer_activations,
    mean_weight_magnitude,
)
from forgetless.data.arrays import ArraySet
from forgetless.errors import ConfigError
from forgetless.scenarios.builders import permuted_subsets

__all__ = ["PlasticityRecord", "PlasticityRun", "permuted_subsets", "plasticity_record"]


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


def plasticity_record(
    task: int, model: nn.Module, probe: ArraySet, accuracy: float, train_loss: float
) -> PlasticityRecord:
    """The record of ``task`` from the model after it: the dormant fraction over all hidden
    units and each hidden layer's effective rank on the ``probe`` inputs, the mean weight
    magnitude, with the task's accuracy right after training it and its last training loss."""
    acts = layer_activations(model, probe)
    return PlasticityRecord(
        task=task,
        accuracy=accuracy,
        dormant=dormant_fraction(acts),
        effective_rank=[effective_rank(a) for a in acts.values()],
        weight_magnitude=mean_weight_magnitude(model),
        train_loss=train_loss,
    )
