"""The stability-plasticity frontier's measures, pure functions of Results: kept importable
from here; they live in :mod:`forgetless.summaries`, and the study that runs a frontier in
:mod:`forgetless.studies.frontier`."""

from forgetless.summaries import (
    Frontier,
    FrontierPoint,
    build_frontier,
    format_frontiers,
    frontiers_in,
    hypervolume,
    pareto_front,
    stability_plasticity,
)

__all__ = [
    "Frontier",
    "FrontierPoint",
    "build_frontier",
    "format_frontiers",
    "frontiers_in",
    "hypervolume",
    "pareto_front",
    "stability_plasticity",
]
