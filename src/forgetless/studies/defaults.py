"""The defaults of the two-task studies (landscape, trajectory), declared once.

The run settings are :class:`~forgetless.experiment.RunConfig` fields (:data:`TWO_TASK_RUN`,
built into a config by :func:`two_task_config`); the measures' settings are the study
functions' keyword defaults (:data:`LANDSCAPE`, :data:`TRAJECTORY`). The commands
``forgetless landscape`` and ``forgetless trajectory`` take their option defaults from here
and the study functions their keyword defaults, so a study called from Python and the same
study on the command line run the same thing. Importing this module imports no torch (the
command line's ``--help`` reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forgetless.experiment import RunConfig

#: The RunConfig fields of a two-task study's runs unless given: one SGD epoch over the
#: bundled digits' first two tasks, so that a study takes seconds (the scenario's own loop,
#: 20 Adam epochs, would settle the solutions more but take minutes).
TWO_TASK_RUN: dict[str, Any] = {
    "scenario": "split-digits",
    "protocol": None,
    "data_dir": None,
    "model": "mlp",
    "hidden": None,
    "seed": 0,
    "epochs": 1,
    "iterations": None,
    "batch_size": 128,
    "optimizer": "sgd",
    "lr": 0.01,
}

#: The landscape's measures: test ``examples`` per task (None: all), 1-D ``directions`` over
#: ``[-span, span]`` at ``resolution`` points, the plane's points a side (the command's; a
#: study called without ``plane_resolution`` draws its plane at ``resolution``), the
#: sharpness's examples.
LANDSCAPE: dict[str, Any] = {
    "examples": 2000,
    "directions": 3,
    "span": 1.0,
    "resolution": 41,
    "plane_resolution": 21,
    "hessian_examples": 1000,
}

#: The trajectory's: the weights recorded ``every`` steps, the loss grid's ``resolution`` a
#: side, test ``examples`` per task (None: all).
TRAJECTORY: dict[str, Any] = {"every": 10, "resolution": 25, "examples": 2000}


def two_task_config(
    strategy: str = "finetune", params: Mapping[str, Any] | None = None, **given: Any
) -> RunConfig:
    """A two-task study's run: :data:`TWO_TASK_RUN`, then the fields ``given``."""
    from forgetless.experiment import RunConfig

    return RunConfig(
        **{**TWO_TASK_RUN, **given}, strategy=strategy, strategy_params=dict(params or {})
    )
