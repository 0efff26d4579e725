"""``forgetless scenarios``: each preset with its protocol, tasks and loop settings."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    from forgetless.scenarios import PRESETS

    print(f"{'scenario':<16} {'protocol':<9} {'tasks':>5}  loop settings (options override)")
    for name, preset in PRESETS.items():
        tasks = "?" if preset.default_tasks is None else str(preset.default_tasks)
        print(f"{name:<16} {preset.protocol.value:<9} {tasks:>5}  {preset.loop.describe()}")
        print(f"{'':<33}{preset.description}")
    return 0
