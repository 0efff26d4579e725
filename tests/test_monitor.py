"""The monitor: decisions recorded in a run store, read back as slices across versions, with
the versions flagged where a slice fell."""

import json

import pytest
import torch

from forgetless import ConfigError, DataError
from forgetless.production.gate import decide
from forgetless.production.monitor import monitor, record, records


def _comparison(before: dict[str, float], after: dict[str, float], n: int = 2000):
    """A gate result whose slices go from accuracy ``before`` to ``after`` (only losses)."""
    b, c = {}, {}
    for name in before:
        right_before, right_after = round(before[name] * n), round(after[name] * n)
        b[name] = torch.arange(n) < right_before
        c[name] = torch.arange(n) < right_after
    return decide(b, c, max_drop=1.0, resamples=500)


def test_versions_slices_and_flags(tmp_path):
    store = tmp_path / "store"
    record(store, "update", _comparison({"a": 0.9, "b": 0.8}, {"a": 0.9, "b": 0.8}), "v2", "v1",
           "2024-05")  # fmt: skip
    # v3 loses 5 points on b: the gate fails it.
    record(store, "gate", _comparison({"a": 0.9, "b": 0.8}, {"a": 0.9, "b": 0.75}), "v3", "v2",
           "2024-06")  # fmt: skip
    # v4 loses 1.5 points of a on a tiny slice: inconclusive, flagged by the points rule.
    record(store, "gate", _comparison({"a": 0.9}, {"a": 0.885}, n=200), "v4", "v3", "2024-07")
    state = monitor(store, max_drop=1.0)
    assert state.versions == ["v1", "v2", "v3", "v4"]
    assert state.windows == [None, "2024-05", "2024-06", "2024-07"]
    assert state.accuracy["b"] == [0.8, 0.8, 0.75, None]
    assert state.flags["b"] == [False, False, True, False]
    assert state.flags["a"] == [False, False, False, True]
    assert state.reasons["a"][3] == "-1.5 points" and state.reasons["b"][2] == "the gate failed it"
    assert [(v, s) for v, s, _ in state.flagged()] == [
        ("v3", "b"),
        ("v3", "overall"),
        ("v4", "a"),
        ("v4", "overall"),
    ]
    assert "v3: b (the gate failed it)" in state.table()
    assert json.loads(json.dumps(state.to_dict()))["versions"] == state.versions
    assert len(records(store)) == 3


def test_no_records_and_broken_records(tmp_path):
    with pytest.raises(ConfigError, match="no production records"):
        monitor(tmp_path)
    (tmp_path / "production").mkdir()
    (tmp_path / "production" / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        monitor(tmp_path)


def test_records_need_names(tmp_path):
    with pytest.raises(ConfigError, match="version"):
        record(tmp_path, "gate", _comparison({"a": 0.9}, {"a": 0.9}), " ", "v1")
    with pytest.raises(ConfigError, match="kind"):
        record(tmp_path, "deploy", _comparison({"a": 0.9}, {"a": 0.9}), "v2", "v1")
