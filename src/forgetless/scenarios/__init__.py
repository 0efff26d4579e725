"""Scenarios: turn sources into a Stream of Tasks under a protocol."""

from forgetless.scenarios.builders import permuted, rotated, sequence, split
from forgetless.scenarios.presets import PRESETS, Preset, make_stream
from forgetless.scenarios.stream import Protocol, Stream, Task
from forgetless.scenarios.text import text

__all__ = [
    "PRESETS",
    "Preset",
    "Protocol",
    "Stream",
    "Task",
    "make_stream",
    "permuted",
    "rotated",
    "sequence",
    "split",
    "text",
]
