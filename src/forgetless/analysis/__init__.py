"""Looking inside: what training does to weights and hidden units (see each module)."""

from forgetless.analysis.frontier import (
    Frontier,
    FrontierPoint,
    build_frontier,
    frontiers_in,
    hypervolume,
    pareto_front,
    run_frontiers,
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
from forgetless.analysis.overlap_study import OverlapRecord, overlap_claim, run_overlap
from forgetless.analysis.plasticity import (
    PlasticityRecord,
    PlasticityRun,
    permuted_subsets,
    run_plasticity,
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
from forgetless.analysis.trajectory import (
    ParameterRecorder,
    Trajectory,
    TrajectoryStudy,
    pca_plane,
    record_trajectory,
    trajectory_study,
)

__all__ = [
    "Direction",
    "Eigen",
    "Frontier",
    "FrontierPoint",
    "LandscapeStudy",
    "LossLine",
    "LossPlane",
    "OverlapRecord",
    "ParameterRecorder",
    "PlasticityRecord",
    "PlasticityRun",
    "Trajectory",
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
    "pareto_front",
    "pca_plane",
    "permuted_subsets",
    "random_direction",
    "record_trajectory",
    "run_frontiers",
    "run_overlap",
    "run_plasticity",
    "sharpness",
    "stability_plasticity",
    "top_hessian_eigenvalue",
    "trajectory_study",
]
