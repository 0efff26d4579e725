"""The weight-space trajectory: where training goes when task B follows task A.

Parameters are recorded every ``k`` optimiser steps by :class:`ParameterRecorder`, a strategy
that only watches (its ``after_step`` hook copies the weights), so the one training loop of
:mod:`forgetless.engine` is used as is, with any strategy beside it. The path is then drawn on
the plane of its two principal directions (Li, Xu, Taylor, Studer and Goldstein 2018,
"Visualizing the loss landscape of neural nets", NeurIPS, Sec. 7), over contours of the loss of
task A and of task B on that plane (the study that trains the paths is
:mod:`forgetless.studies.trajectory`): fine-tuning leaves the A optimum for the B optimum; EWC
holds the path near A.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from forgetless.analysis.landscape import Data, LossPlane, evaluate_points
from forgetless.data.arrays import ArraySet
from forgetless.errors import ConfigError


@dataclass(frozen=True)
class PCAPlane:
    """A plane through ``origin`` spanned by the top principal directions of paths.

    Attributes:
        origin: ``[P]``; directions: ``[k, P]`` orthonormal rows.
        explained: ``[k]`` the share of the paths' variance along each direction.
    """

    origin: torch.Tensor
    directions: torch.Tensor
    explained: torch.Tensor

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """``[T, P]`` points as ``[T, k]`` coordinates ``(theta - origin) . u_k``."""
        return (points.double() - self.origin.double()) @ self.directions.double().T


def pca_plane(
    paths: Sequence[torch.Tensor], origin: torch.Tensor | None = None, k: int = 2
) -> PCAPlane:
    """The top ``k`` principal directions of one or several paths of weights.

    Li et al. 2018, Sec. 7: with ``M`` the matrix of rows ``theta_i - theta_origin`` over the
    path (their origin is the final point), the directions are the top right singular vectors
    of ``M`` with its column means removed (the PCA of ``M``, as their code does with
    scikit-learn). Coordinates are then ``(theta - theta_origin) . u`` (:meth:`PCAPlane.project`),
    so the origin sits at ``(0, 0)``. Several paths are stacked into one ``M``, giving one plane
    for all of them.

    Computed from the ``T x T`` Gram matrix of ``M`` in float64 (``T`` points, ``P`` weights,
    ``T << P``), never a ``P x P`` matrix.

    Args:
        paths: ``[T_i, P]`` tensors.
        origin: ``[P]``; default: the last point of the first path.
        k: how many directions.
    """
    if not paths:
        raise ConfigError("pca_plane needs at least one path")
    m = torch.cat([p.double() for p in paths])
    if k < 1 or k >= len(m):
        raise ConfigError(f"k must be in [1, {len(m) - 1}] for {len(m)} points, got {k}")
    origin = (paths[0][-1] if origin is None else origin).double()
    m = m - origin
    centred = m - m.mean(dim=0)
    gram = centred @ centred.T
    values, vectors = torch.linalg.eigh(gram)  # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    top = values[:k].clamp_min(1e-300)
    directions = (vectors[:, :k].T @ centred) / top.sqrt()[:, None]
    explained = top / values.clamp_min(0).sum()
    return PCAPlane(origin.float(), directions.float(), explained.float())


@dataclass
class TrajectoryStudy:
    """Paths of several strategies on one PCA plane, with the tasks' losses on that plane.

    Attributes:
        trajectories: by label (``"finetune"``, ``"ewc"``).
        plane: the PCA plane of all paths together, through the end of task A.
        coordinates: by label, ``[T, 2]`` the projected path.
        surfaces: by task label (``"task A"``, ``"task B"``), its test loss on the plane.
        distances: by label, ``||theta_end - theta_A*||`` (the weights' distance from the end
            of task A at the end of task B), in full weight space and (``plane_distances``) on
            the plane.
        fisher_distances: by label, ``sqrt(sum_i F_i (theta_i - theta_A*_i)^2)`` at the end of
            task B, ``F`` the exact diagonal Fisher of task A at ``theta_A*`` (over the task's
            test examples the surfaces use): the distance EWC's penalty measures, in which
            EWC can stay near A while moving far in plain weight space.
        task_a_loss: by label, the task-A test loss (on the surface's examples) at the end of
            task B: how far up the task-A valley the path ended.
        settings: what was run.
    """

    trajectories: dict[str, Any]  # label -> forgetless.studies.trajectory.Trajectory
    plane: PCAPlane
    coordinates: dict[str, torch.Tensor]
    surfaces: dict[str, LossPlane]
    distances: dict[str, float]
    plane_distances: dict[str, float]
    fisher_distances: dict[str, float]
    task_a_loss: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "explained_variance": self.plane.explained.tolist(),
            "distances_from_a_optimum": self.distances,
            "plane_distances_from_a_optimum": self.plane_distances,
            "fisher_distances_from_a_optimum": self.fisher_distances,
            "task_a_loss_at_end": self.task_a_loss,
            "accuracy_matrices": {
                k: t.result.accuracy_matrix for k, t in self.trajectories.items()
            },
            "paths": {
                k: {
                    "steps": self.trajectories[k].steps,
                    "tasks": self.trajectories[k].tasks,
                    "task_ends": self.trajectories[k].task_ends,
                    "coordinates": c.tolist(),
                }
                for k, c in self.coordinates.items()
            },
            "surfaces": {k: s.to_dict() for k, s in self.surfaces.items()},
        }


def loss_at(model: nn.Module, data: Data, units) -> float:
    return float(evaluate_points(model, data, [], torch.zeros(1, 0), units=units)[0][0])


def task_subset(data: ArraySet, n: int | None, seed: int) -> ArraySet:
    """``n`` examples of ``data`` drawn without replacement from ``seed`` (in their original
    order); all of them if ``n`` is ``None`` or not smaller than the set."""
    if n is None or n >= len(data):
        return data
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return data.subset(index.sort().values)
