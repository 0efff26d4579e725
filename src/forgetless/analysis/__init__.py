"""Looking inside: what training does to weights and hidden units (see each module).

Pure measures of models, representations and Results: nothing here trains, stores or runs
sweeps. The studies that train the models these measures look at are in
:mod:`forgetless.studies`."""

from forgetless.analysis.frontier import (
    Frontier,
    FrontierPoint,
    build_frontier,
    frontiers_in,
    hypervolume,
    pareto_front,
    stability_plasticity,
)
from forgetless.analysis.landscape import (
    Direction,
    LossLine,
    LossPlane,
    filter_normalize,
    flat_width,
    loss_line,
    loss_plane,
    random_direction,
)
from forgetless.analysis.landscape_study import LandscapeStudy, landscape_study
from forgetless.analysis.overlap_study import OverlapRecord, overlap_claim, overlap_record
from forgetless.analysis.plasticity import (
    PlasticityRecord,
    PlasticityRun,
    permuted_subsets,
    plasticity_record,
)
from forgetless.analysis.representation import (
    active_fraction,
    active_units,
    dormant_fraction,
    effective_rank,
    layer_activations,
    linear_cka,
    mean_weight_magnitude,
    overlap,
)
from forgetless.analysis.sharpness import Eigen, sharpness, top_hessian_eigenvalue
from forgetless.analysis.trajectory import PCAPlane, TrajectoryStudy, pca_plane, task_subset

__all__ = [
    "Direction",
    "Eigen",
    "Frontier",
    "FrontierPoint",
    "LandscapeStudy",
    "LossLine",
    "LossPlane",
    "OverlapRecord",
    "PCAPlane",
    "PlasticityRecord",
    "PlasticityRun",
    "TrajectoryStudy",
    "active_fraction",
    "active_units",
    "build_frontier",
    "dormant_fraction",
    "effective_rank",
    "filter_normalize",
    "flat_width",
    "frontiers_in",
    "hypervolume",
    "landscape_study",
    "layer_activations",
    "linear_cka",
    "loss_line",
    "loss_plane",
    "mean_weight_magnitude",
    "overlap",
    "overlap_claim",
    "overlap_record",
    "pareto_front",
    "pca_plane",
    "permuted_subsets",
    "plasticity_record",
    "random_direction",
    "sharpness",
    "stability_plasticity",
    "task_subset",
    "top_hessian_eigenvalue",
]
