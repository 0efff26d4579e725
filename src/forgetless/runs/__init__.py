"""Durable runs: a folder per run (config, events, checkpoints, result) and a SQLite index."""

from forgetless.runs.checkpoint import load_snapshot, save_snapshot, save_weights
from forgetless.runs.index import RunIndex
from forgetless.runs.store import RunStore, default_store

__all__ = [
    "RunIndex",
    "RunStore",
    "default_store",
    "load_snapshot",
    "save_snapshot",
    "save_weights",
]
