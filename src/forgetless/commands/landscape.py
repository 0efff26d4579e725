"""``forgetless landscape``: the loss landscape around the task-A solution."""

from __future__ import annotations

import argparse

from forgetless.commands.common import add_store_options, runs_bar, store_of, write_outputs
from forgetless.studies.defaults import LANDSCAPE, TWO_TASK_RUN

#: The run options of the two-task studies (landscape, trajectory), with their defaults
#: (declared in :mod:`forgetless.studies.defaults`).
STUDY_OPTIONS = TWO_TASK_RUN


def add_measure_option(
    p: argparse.ArgumentParser, name: str, kind: type, defaults: dict, help: str
) -> None:
    """``--NAME`` (underscores as dashes) defaulting to ``defaults[name]``; ``help`` may name
    it as ``{default}``."""
    default = defaults[name]
    shown = f"{default:g}" if kind is float else default
    p.add_argument(
        "--" + name.replace("_", "-"), type=kind, default=default, help=help.format(default=shown)
    )


def add_study_options(p: argparse.ArgumentParser, measures: dict) -> None:
    """The run options the two-task studies take, with their defaults, the study's number of
    test examples (from ``measures``), and where they write."""
    from forgetless.options import add_run_options

    add_run_options(p, only=list(STUDY_OPTIONS), defaults=STUDY_OPTIONS)
    add_measure_option(
        p, "examples", int, measures,
        "test examples per task the losses are computed on (default: {default}; 0: all)",
    )  # fmt: skip
    p.add_argument(
        "-o",
        "--out",
        metavar="DIR",
        default=p.prog.split()[-1],
        help="where the JSON and the PNG/SVG figures go (default: ./landscape, ./trajectory)",
    )


def study_config(args: argparse.Namespace, strategy: str, params: dict):
    """The RunConfig of a two-task study: its defaults, then the options given."""
    from forgetless.options import given_settings
    from forgetless.studies.defaults import two_task_config

    given = {k: v for k, v in given_settings(args).items() if k in STUDY_OPTIONS}
    # progress: the engine draws a bar on a terminal only
    return two_task_config(strategy, params, **given, progress=True)


def add_arguments(landscape: argparse.ArgumentParser) -> None:
    landscape.description = (
        "Train the first two tasks of a scenario, then draw the loss of task A "
        "along filter-normalised random directions around the task-A solution (1-D curves "
        "and a 2-D plane, Li et al. 2018), its sharpness (top Hessian eigenvalue), and the "
        "losses of both tasks on the straight line from the A solution to the B solution. "
        "Any other --NAME VALUE goes to the strategy (--lam 1000)."
    )
    add_study_options(landscape, LANDSCAPE)
    landscape.add_argument("--strategy", default="finetune", help="(default: finetune)")
    add_store_options(landscape)
    for name, kind, text in (
        ("directions", int, "1-D curves (default: {default})"),
        ("span", float, "alpha in [-span, span] (default: {default})"),
        ("resolution", int, "points per 1-D curve (default: {default})"),
        ("plane_resolution", int, "points a side of the plane (default: {default}; 0: none)"),
        ("hessian_examples", int, "for the sharpness (default: {default}; 0: skip it)"),
    ):
        add_measure_option(landscape, name, kind, LANDSCAPE, text)


def run(args: argparse.Namespace) -> int:
    from forgetless.options import check_strategy_params, strategy_params
    from forgetless.report import analysis_figures as figs
    from forgetless.studies.landscape import format_landscape, landscape_run

    params = strategy_params(args.argv, args.extra)
    check_strategy_params(args.strategy, params)
    config = study_config(args, args.strategy, params)
    with runs_bar() as progress:
        study, solved = landscape_run(
            config,
            store_of(args),
            args.examples or None,
            args.workers,
            progress=progress,
            directions=args.directions,
            span=args.span,
            resolution=args.resolution,
            plane=args.plane_resolution > 0,
            plane_resolution=args.plane_resolution or None,
            hessian=args.hessian_examples > 0,
            hessian_examples=args.hessian_examples,
            plane_progress=True,
        )
    report = study.to_dict()
    report["accuracy_matrix"] = solved.result.accuracy_matrix
    print(format_landscape(study, solved), end="")
    figures = {"landscape_1d": figs.loss_curves({"task A": study.lines})}
    if study.plane is not None:
        contour = figs.loss_contour(study.plane, "task A loss around its solution")
        figures["landscape_2d"] = contour
    if study.interpolation:
        figures["interpolation"] = figs.interpolation_plot(study.interpolation)
    write_outputs(args.out, "landscape", report, figures)
    return 0
