"""Representation overlap and forgetting over task pairs of graded similarity.

Task A is a data set, task B the same data set rotated by an angle; the larger the angle, the
less alike the tasks. For each angle the same initial network learns A then B (the study that
trains them is :mod:`forgetless.studies.overlap`), and per hidden layer we measure (Ramasesh, Dyer and Raghu 2021, "Anatomy of
catastrophic forgetting", ICLR):

- the overlap of the units A and B use (:func:`~forgetless.analysis.representation.overlap`),
  on the network trained on A, before B is learnt (so it could predict the forgetting), and
  again after B;
- the linear CKA between the layer's representation of A's test inputs before and after
  learning B (1: unchanged);
- the forgetting of A: its accuracy after A minus its accuracy after B.

:func:`overlap_claim` then tests the seed article's claim ("70% overlap forgets 45% more than
30% overlap") by a least-squares line through (overlap, forgetting).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from forgetless.analysis.representation import layer_activations, linear_cka, overlap
from forgetless.data.arrays import ArraySet
from forgetless.errors import ConfigError

MEASURES = ("overlap", "overlap_weighted", "overlap_after", "cka")


@dataclass
class OverlapRecord:
    """One task pair (A, then B = A rotated by ``angle``), one seed.

    Attributes:
        angle: rotation of task B in degrees.
        seed: weights and batch order.
        layers: the hidden layers' names, in forward order; the lists below follow it.
        overlap: per layer, the overlap of A's and B's active units on the network after A.
        overlap_after: the same on the network after B.
        overlap_weighted: per layer, on the network after A, the weighted overlap of the two
            tasks' firing rates (``over="weighted"``, no cut-off).
        cka: per layer, linear CKA of A's representation before and after learning B.
        acc_a: accuracy on A after learning A.
        acc_a_after: accuracy on A after learning B.
        acc_b_before: accuracy on B after learning A only (how alike the tasks are).
        acc_b: accuracy on B after learning B.
        forgetting: ``acc_a - acc_a_after``.
    """

    angle: float
    seed: int
    layers: list[str]
    overlap: list[float]
    overlap_after: list[float]
    overlap_weighted: list[float]
    cka: list[float]
    acc_a: float
    acc_a_after: float
    acc_b_before: float
    acc_b: float
    forgetting: float

    def mean_overlap(self, measure: str = "overlap") -> float:
        """``overlap`` (or another per-layer list: ``overlap_weighted``, ``cka``, ...)
        averaged over the hidden layers."""
        values = getattr(self, measure)
        return sum(values) / len(values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def overlap_record(
    angle: float,
    seed: int,
    after_a: nn.Module,
    after_b: nn.Module,
    a_inputs: ArraySet,
    b_inputs: ArraySet,
    matrix: Sequence[Sequence[float]],
    threshold: float = 0.0,
    rate: float = 0.5,
    over: str = "active",
) -> OverlapRecord:
    """The record of one task pair from the model after A and after B, the probe inputs of
    each task and the run's accuracy matrix ``R`` (2 x 2): per hidden layer the overlap of the
    units the two tasks use (after A, and after B; ``threshold``, ``rate`` and ``over`` define
    it, :func:`~forgetless.analysis.representation.overlap`), the weighted overlap after A, and
    the CKA of A's representation before and after B."""
    a_before, b_before = layer_activations(after_a, a_inputs), layer_activations(after_a, b_inputs)
    a_after, b_after = layer_activations(after_b, a_inputs), layer_activations(after_b, b_inputs)
    layers = list(a_before)
    r = matrix
    return OverlapRecord(
        angle=float(angle),
        seed=seed,
        layers=layers,
        overlap=[overlap(a_before[k], b_before[k], threshold, rate, over) for k in layers],
        overlap_after=[overlap(a_after[k], b_after[k], threshold, rate, over) for k in layers],
        overlap_weighted=[
            overlap(a_before[k], b_before[k], threshold, over="weighted") for k in layers
        ],
        cka=[linear_cka(a_before[k], a_after[k]) for k in layers],
        acc_a=r[0][0],
        acc_a_after=r[1][0],
        acc_b_before=r[0][1],
        acc_b=r[1][1],
        forgetting=r[0][0] - r[1][0],
    )


def overlap_claim(
    records: Sequence[OverlapRecord | Mapping[str, Any]],
    low: float = 0.3,
    high: float = 0.7,
    layer: int | None = None,
    measure: str = "overlap",
) -> dict[str, Any]:
    """Test "overlap ``high`` forgets 45% more than overlap ``low``" on measured records.

    Fits forgetting = a + b * overlap by least squares over the records (``measure``, the
    record's ``overlap`` or ``overlap_weighted``, of one hidden layer, or the mean over layers
    when ``layer`` is None) and reports the fitted forgetting at
    ``low`` and ``high``, their ratio minus one (the claim's "45% more" is 0.45), the Pearson
    correlation, and whether ``low`` and ``high`` lie inside the measured range of overlaps
    (outside it the line is an extrapolation and says little).
    """
    if measure not in MEASURES:
        raise ConfigError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    rows = [r if isinstance(r, OverlapRecord) else OverlapRecord(**r) for r in records]
    points = []
    for r in rows:
        value = r.mean_overlap(measure) if layer is None else getattr(r, measure)[layer]
        if not math.isnan(value):
            points.append((value, r.forgetting))
    if len(points) < 3:
        raise ConfigError(f"need at least 3 records with a defined overlap, got {len(points)}")
    x = torch.tensor([p[0] for p in points], dtype=torch.float64)
    y = torch.tensor([p[1] for p in points], dtype=torch.float64)
    xc, yc = x - x.mean(), y - y.mean()
    sxx = float((xc * xc).sum())
    if sxx == 0:
        raise ConfigError("every record has the same overlap: no line can be fitted")
    slope = float((xc * yc).sum()) / sxx
    intercept = float(y.mean()) - slope * float(x.mean())
    syy = float((yc * yc).sum())
    pearson = float((xc * yc).sum()) / math.sqrt(sxx * syy) if syy > 0 else math.nan
    at_low, at_high = intercept + slope * low, intercept + slope * high
    return {
        "points": len(points),
        "layer": "mean" if layer is None else layer,
        "measure": measure,
        "slope": slope,
        "intercept": intercept,
        "pearson": pearson,
        "overlap_range": [float(x.min()), float(x.max())],
        "forgetting_at_low": at_low,
        "forgetting_at_high": at_high,
        "relative_increase": at_high / at_low - 1 if at_low > 0 else math.nan,
        "difference": at_high - at_low,
        "interpolated": bool(x.min() <= low and high <= x.max()),
    }
