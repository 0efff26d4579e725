"""The Result: lossless JSON, readable table, one plain sentence."""

import json
import re

import pytest

from forgetless.errors import ConfigError
from forgetless.result import Result, describe


def make_result(**overrides):
    fields = dict(
        accuracy_matrix=[[0.99, 0.0], [0.1 / 3, 0.97]],
        baseline=[0.5, 0.123456789012345],
        task_names=["classes 0, 1", "classes 2, 3"],
        scenario="split-digits",
        protocol="task",
        strategy="finetune",
        seed=7,
        config={"lr": 0.1, "hidden": [64, 64]},
        curves=[{"task": 0, "step": 10, "accuracy": [0.5, 0.25]}],
        losses=[{"task": 0, "epoch": 0, "step": 10, "loss": 0.6931471805599453}],
        timings={"train": 1.5, "eval": 0.1, "total": 1.7, "train_per_task": [0.7, 0.8]},
        peak_memory_mb=321.5,
        environment={"torch": "2.13.0"},
    )
    fields.update(overrides)
    return Result(**fields)


def test_json_round_trip_is_lossless(tmp_path):
    result = make_result()
    again = Result.from_json(result.to_json())
    assert again == result
    assert Result.load(result.save(tmp_path)) == result
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["accuracy_matrix"] == result.accuracy_matrix
    assert set(data["metrics"]) >= {"acc", "bwt", "fwt", "forgetting"}
    assert data["metrics"]["bwt"] == pytest.approx(0.1 / 3 - 0.99)


def test_loading_garbage_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid JSON"):
        Result.from_json("{oops")
    with pytest.raises(ConfigError, match="missing"):
        Result.from_json('{"seed": 1}')
    with pytest.raises(ConfigError, match="no result at"):
        Result.load(tmp_path / "nowhere")


def test_printing_shows_the_matrix_and_metrics():
    text = str(make_result())
    assert re.search(r"after task 1\s+99\.0\s+0\.0\n", text)
    assert "random init" in text and "50.0" in text
    assert "BWT -95.7" in text
    assert "fell from 99% to 3%" in text


def test_describe_names_the_task_that_fell_most():
    result = make_result(
        accuracy_matrix=[[0.9, 0, 0], [0.5, 0.95, 0], [0.6, 0.1, 0.9]],
        baseline=[0, 0, 0],
        task_names=["a", "b", "c"],
    )
    assert describe(result) == "After task 3, accuracy on task 2 (b) fell from 95% to 10%."
    small = make_result(accuracy_matrix=[[0.9, 0.0], [0.88, 0.9]])
    assert describe(small) == (
        "After task 2, no earlier task lost more than 5 points; the largest drop is on "
        "task 1 (classes 0, 1): 90.0% -> 88.0%."
    )
    kept = make_result(accuracy_matrix=[[0.9, 0.0], [0.9, 0.9]])
    assert (
        describe(kept)
        == "After task 2, every earlier task kept its accuracy (none lost half a point)."
    )
