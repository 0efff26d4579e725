"""The commands of ``forgetless``, one module each, imported only when that command runs.

:data:`COMMANDS` is the registry: each command's name, the module that implements it and the
one line ``forgetless --help`` shows. A command module has ``add_arguments(parser)`` (its
options; it may set ``parser.description`` and ``parser.epilog``) and ``run(args) -> int``
(the exit code). ``args.extra`` holds the flags the parser did not know and ``args.argv`` the
command's arguments as given, for the commands that take strategy parameters (``--NAME
VALUE``, see :mod:`forgetless.options`); any other command refuses unknown flags, naming the
closest option. ``args.command_parser`` is the command's parser. Errors are :class:`~forgetless.errors.ForgetlessError`, printed as one
line. A new command is one module and one entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Command:
    """Where a command lives.

    Attributes:
        module: the module that implements it.
        help: its line in ``forgetless --help``.
        add: the module's function that declares its options.
        run: the module's function that runs it.
        strategy_parameters: whether it takes strategy parameters as ``--NAME VALUE``.
    """

    module: str
    help: str
    add: str = "add_arguments"
    run: str = "run"
    strategy_parameters: bool = False

    def load(self) -> ModuleType:
        """The command's module (imported now)."""
        return importlib.import_module(self.module)


_PRODUCTION = "forgetless.production.commands"

#: Every command, in the order ``forgetless --help`` lists them.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        "forgetless.commands.demo",
        "offline demo: the collapse, replay and EWC, and joint training as the bound",
    ),
    "article": Command(
        "forgetless.commands.article",
        "a seed article's experiment, our figures printed beside the article's",
    ),
    "scenarios": Command(
        "forgetless.commands.scenarios",
        "the scenarios: tasks, protocol, data and the loop settings that learn each",
    ),
    "strategies": Command(
        "forgetless.commands.strategies",
        "the strategies and their parameters, with their defaults and meanings",
    ),
    "run": Command(
        "forgetless.commands.run",
        "train one strategy on one scenario and measure forgetting",
        strategy_parameters=True,
    ),
    "sweep": Command(
        "forgetless.commands.sweep",
        "run a grid or random search over configs and seeds into a run store",
    ),
    "report": Command(
        "forgetless.commands.report",
        "one self-contained HTML page (and PNG/SVG figures) from stored runs",
    ),
    "frontier": Command(
        "forgetless.commands.frontier",
        "sweep strategies' strengths; plot stability against plasticity, Pareto fronts",
        strategy_parameters=True,
    ),
    "landscape": Command(
        "forgetless.commands.landscape",
        "loss landscape around the task-A solution: 1-D, 2-D, sharpness, A-to-B line",
        strategy_parameters=True,
    ),
    "trajectory": Command(
        "forgetless.commands.trajectory",
        "weight-space path of task A then task B on its PCA plane, per strategy",
        strategy_parameters=True,
    ),
    "plasticity": Command(
        "forgetless.commands.plasticity",
        "loss of plasticity on a long permuted stream: new-task accuracy, dormant units",
        strategy_parameters=True,
    ),
    "overlap": Command(
        "forgetless.commands.overlap",
        "representation overlap, CKA and forgetting for task pairs of graded similarity",
    ),
    "gate": Command(
        _PRODUCTION,
        "compare a candidate model with the deployed one on old-data slices (for CI)",
        add="add_gate",
        run="cmd_gate",
    ),
    "update": Command(
        _PRODUCTION,
        "fine-tune a trained model on new data with a mitigation; before/after per slice",
        add="add_update",
        run="cmd_update",
        strategy_parameters=True,
    ),
    "merge": Command(
        _PRODUCTION,
        "interpolate old and updated weights (WiSE-FT); old slices against new data",
        add="add_merge",
        run="cmd_merge",
    ),
    "drift": Command(
        _PRODUCTION,
        "test new batches for input drift against a reference sample (MMD and KS)",
        add="add_drift",
        run="cmd_drift",
    ),
    "monitor": Command(
        _PRODUCTION,
        "each slice's accuracy across recorded model versions; flag where one fell",
        add="add_monitor",
        run="cmd_monitor",
    ),
    "reproduce": Command(
        "forgetless.reproduce.command",
        "a published protocol run through the store, ours beside the published figure",
    ),
    "runs": Command("forgetless.commands.runs", "list, show, compare and summarise stored runs"),
    "data": Command("forgetless.commands.data", "list, fetch or locate data sets"),
}
