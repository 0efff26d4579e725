"""Durable runs: a folder per run (config, events, checkpoints, result) and a SQLite index."""

from forgetless.runs.checkpoint import load_snapshot, load_weights, save_snapshot, save_weights
from forgetless.runs.index import IndexCorrupt, RunIndex
from forgetless.runs.lock import RunBusy, RunLock
from forgetless.runs.store import (
    RunStore,
    check_runnable,
    default_store,
    is_store,
    open_run_folder,
    read_config,
)

__all__ = [
    "IndexCorrupt",
    "RunBusy",
    "RunIndex",
    "RunLock",
    "RunStore",
    "check_runnable",
    "default_store",
    "is_store",
    "load_snapshot",
    "load_weights",
    "open_run_folder",
    "read_config",
    "save_snapshot",
    "save_weights",
]
