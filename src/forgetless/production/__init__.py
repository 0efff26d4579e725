"""The trained model's life in production: update it, gate the update, merge, watch for drift.

- :func:`update`: fine-tune a trained model on new data with a mitigation (a trained start:
  the old data is given to the strategy, not trained on) and compare every slice before and
  after.
- :func:`gate`: baseline against candidate on old-data slices, with paired intervals, flips
  and a verdict per slice (exit codes for CI).
- :func:`merge_sweep`: weight interpolation between the old and the updated weights (WiSE-FT).
- :func:`drift`: MMD and per-feature KS tests of a new batch against a reference sample.
- :func:`monitor` and :func:`record`: decisions kept in the run store, slices across versions.
- :func:`load_model`: the user's factory plus weights, never unpickled.
"""

from forgetless.production.drift import DriftResult, drift
from forgetless.production.gate import GateResult, SliceVerdict, decide, gate
from forgetless.production.loading import load_model, load_weights, save_weights
from forgetless.production.merge import MergeSweep, interpolate, merge_sweep, merged_model
from forgetless.production.monitor import Monitor, monitor, record, records
from forgetless.production.slices import load_slices
from forgetless.production.update import UpdateResult, update

__all__ = [
    "DriftResult",
    "GateResult",
    "MergeSweep",
    "Monitor",
    "SliceVerdict",
    "UpdateResult",
    "decide",
    "drift",
    "gate",
    "interpolate",
    "load_model",
    "load_slices",
    "load_weights",
    "merge_sweep",
    "merged_model",
    "monitor",
    "record",
    "records",
    "save_weights",
    "update",
]
