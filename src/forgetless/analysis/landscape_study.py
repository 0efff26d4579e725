"""The usual set of landscape pictures in one call: 1-D curves, a plane, the sharpness and the
straight line from the task-A solution to the task-B solution."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from forgetless.analysis.landscape import (
    Data,
    LossLine,
    LossPlane,
    examples,
    flat_width,
    loss_line,
    loss_plane,
    random_direction,
)
from forgetless.analysis.sharpness import Eigen, sharpness
from forgetless.validation import check_positive_int, check_range


@dataclass
class LandscapeStudy:
    """The geometry around a task-A solution and on the way to the task-B solution.

    Attributes:
        lines: 1-D losses of task A along ``directions`` random filter-normalised directions
            (``loss`` is ``[directions, A]``).
        widths: for each direction, :func:`flat_width` of its curve.
        plane: the 2-D loss of task A on two more random directions (``None`` if skipped).
        sharpness: the top Hessian eigenvalue of task A's loss at the A solution (``None`` if
            skipped).
        interpolation: by data label (``"task A"``, ``"task B"``), the loss along
            ``(1 - alpha) theta_A + alpha theta_B``.
        settings: what was computed.
    """

    lines: LossLine
    widths: list[float]
    plane: LossPlane | None
    sharpness: Eigen | None
    interpolation: dict[str, LossLine]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        eigen = self.sharpness
        return {
            "settings": self.settings,
            "lines": self.lines.to_dict(),
            "widths": self.widths,
            "mean_width": sum(self.widths) / len(self.widths),
            "plane": None if self.plane is None else self.plane.to_dict(),
            "sharpness": None
            if eigen is None
            else {
                "value": eigen.value,
                "iterations": eigen.iterations,
                "converged": eigen.converged,
            },
            "interpolation": {k: v.to_dict() for k, v in self.interpolation.items()},
        }


def landscape_study(
    model_a: nn.Module,
    data_a: Data,
    model_b: nn.Module | None = None,
    data_b: Data | None = None,
    *,
    directions: int = 3,
    span: float = 1.0,
    resolution: int = 41,
    plane: bool = True,
    plane_resolution: int | None = None,
    hessian: bool = True,
    hessian_examples: int = 1000,
    rise: float = 0.1,
    units_a: Sequence[int] | None = None,
    units_b: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 2000,
    progress: bool = False,
) -> LandscapeStudy:
    """1-D curves, a 2-D plane and the sharpness around ``model_a`` on ``data_a`` (task A),
    and, given ``model_b``, the straight line from A's solution to B's on both tasks' data.

    Directions are :func:`random_direction` with seeds ``seed, seed + 1, ...`` (1-D) and
    ``seed + 1000, seed + 1001`` (the plane), so the same seed gives the same directions for
    any model of the same architecture. ``alpha`` runs over ``linspace(-span, span,
    resolution)`` (the plane: ``plane_resolution`` points a side, default ``resolution``);
    the interpolation over ``linspace(-0.25, 1.25, 31)``. ``progress``: a bar of the plane's
    grid points on stderr (on a terminal only).
    """
    check_positive_int("directions", directions)
    check_positive_int("resolution", resolution)
    check_range("span", span, 0.0, low_open=True)
    alphas = torch.linspace(-span, span, resolution, dtype=torch.float64)
    if resolution % 2 == 0:  # keep alpha = 0 on the grid (flat_width needs it)
        alphas = torch.linspace(-span, span, resolution + 1, dtype=torch.float64)
    alphas[len(alphas) // 2] = 0.0
    dirs = [random_direction(model_a, seed + k) for k in range(directions)]
    lines = loss_line(model_a, data_a, dirs, alphas, units=units_a, batch_size=batch_size)
    widths = [flat_width(alphas, row, rise) for row in lines.loss]
    surface = None
    if plane:
        side = plane_resolution or resolution
        grid = torch.linspace(-span, span, side, dtype=torch.float64)
        d1, d2 = random_direction(model_a, seed + 1000), random_direction(model_a, seed + 1001)
        surface = loss_plane(
            model_a,
            data_a,
            d1,
            d2,
            grid,
            grid,
            units=units_a,
            batch_size=batch_size,
            progress=progress,
        )
    eigen = None
    if hessian:
        eigen = sharpness(model_a, data_a, n_examples=hessian_examples, seed=seed, units=units_a)
    interpolation = {}
    if model_b is not None:
        steps = torch.linspace(-0.25, 1.25, 31, dtype=torch.float64)
        interpolation["task A"] = loss_line(
            model_a, data_a, model_b, steps, units=units_a, batch_size=batch_size
        )
        if data_b is not None:
            interpolation["task B"] = loss_line(
                model_a, data_b, model_b, steps, units=units_b, batch_size=batch_size
            )
    settings = {
        "directions": directions,
        "span": span,
        "resolution": len(alphas),
        "plane_resolution": None if surface is None else len(surface.alphas),
        "hessian_examples": hessian_examples if hessian else None,
        "rise": rise,
        "seed": seed,
        "examples_a": len(examples(data_a)[1]),
        "filter_normalisation": "per filter / neuron row; biases zero (Li et al. 2018)",
    }
    return LandscapeStudy(lines, widths, surface, eigen, interpolation, settings)
