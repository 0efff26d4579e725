"""Streams that revisit tasks: a row per training phase, metrics counted from the phases that
trained each task, and interleaving that reduces forgetting without removing it."""

import json

import pytest

from forgetless import metrics
from forgetless.cli import main
from forgetless.errors import ConfigError
from forgetless.experiment import RunConfig, config_hash, run
from forgetless.result import Result
from forgetless.runs import RunStore

# Phases A, B, A, B (tasks 0, 1, 0, 1) on two tasks.
R = [
    [0.9, 0.1],
    [0.4, 0.8],
    [0.95, 0.5],
    [0.6, 0.9],
]
SCHEDULE = [0, 1, 0, 1]
BASELINE = [0.1, 0.2]


def test_metrics_of_a_schedule_by_hand():
    # task 0: last trained in phase 2 (0.95), ends at 0.6; task 1 trained in the last phase
    assert metrics.backward_transfer(R, SCHEDULE) == pytest.approx(0.6 - 0.95)
    # forgetting: best of task 0 over phases 0..2 is 0.95
    assert metrics.forgetting(R, SCHEDULE) == pytest.approx(0.95 - 0.6)
    assert metrics.average_accuracy(R, SCHEDULE) == pytest.approx((0.6 + 0.9) / 2)
    # each phase's task right after it: 0.9, 0.8, 0.95, 0.9
    assert metrics.learning_accuracy(R, SCHEDULE) == pytest.approx((0.9 + 0.8 + 0.95 + 0.9) / 4)
    # FWT: task 1 first trained in phase 1, the row before gives 0.1 against 0.2
    assert metrics.forward_transfer(R, BASELINE, SCHEDULE) == pytest.approx(0.1 - 0.2)
    # with each task once, the usual definitions
    square = [[0.9, 0.1], [0.4, 0.8]]
    assert metrics.summary(square, BASELINE, "task", [0, 1]) == metrics.summary(
        square, BASELINE, "task"
    )
    # a schedule ending A, B, A: B's BWT from phase 1, A trained last is left out
    three = [[0.9, 0.1], [0.4, 0.8], [0.95, 0.5]]
    assert metrics.backward_transfer(three, [0, 1, 0]) == pytest.approx(0.5 - 0.8)


def test_bad_schedules_are_errors():
    with pytest.raises(ConfigError, match="never trains"):
        metrics.average_accuracy([[0.5, 0.5], [0.5, 0.5]], [0, 0])
    with pytest.raises(ConfigError, match="one task"):
        metrics.average_accuracy(R, [0, 1])
    with pytest.raises(ConfigError, match="give repeat or schedule"):
        RunConfig(repeat=2, schedule=[0, 1])
    with pytest.raises(ConfigError, match="cannot revisit"):
        run(RunConfig(strategy="pnn", protocol="task", n_tasks=2, repeat=2, iterations=1))
    with pytest.raises(ConfigError, match="never trains task"):
        run(RunConfig(n_tasks=3, schedule=[0, 1, 0], iterations=1))


def test_a_result_with_a_schedule_round_trips_and_is_checked():
    result = Result(R, BASELINE, ["A", "B"], "s", "domain", "finetune", 0, schedule=SCHEDULE)
    back = Result.from_json(result.to_json())
    assert back == result and back.metrics == result.metrics
    assert back.num_tasks == 2 and back.num_phases == 4
    assert "3: task 1" in str(result) and "from 95% when phase 3 last trained it" in str(result)
    data = result.to_dict()
    data["schedule"] = [0, 1, 0]
    with pytest.raises(ConfigError, match="schedule must be"):
        Result.from_dict(data)
    # a result without a schedule is written as before: no key
    assert "schedule" not in Result([[1.0]], [0.5], ["A"], "s", "task", "f", 0).to_dict()


def test_repeat_one_is_the_run_without_repeat():
    assert config_hash(RunConfig(repeat=1)) == config_hash(RunConfig())
    assert config_hash(RunConfig(repeat=2)) != config_hash(RunConfig())


@pytest.mark.slow
def test_interleaving_reduces_forgetting_without_removing_it(capsys):
    """Two permuted-digits tasks, the same 12 epochs of each: once each (A, B) or in three
    visits of 4 epochs (A, B, A, B, A, B)."""
    common = ["run", "--scenario", "permuted-digits", "--n-tasks", "2", "--no-progress",
              "--threads", "1", "--json"]  # fmt: skip
    assert main([*common, "--epochs", "12"]) == 0
    once = json.loads(capsys.readouterr().out)
    assert main([*common, "--epochs", "4", "--repeat", "3"]) == 0
    interleaved = json.loads(capsys.readouterr().out)
    assert interleaved["schedule"] == [0, 1, 0, 1, 0, 1]
    assert len(interleaved["accuracy_matrix"]) == 6
    a, b = once["metrics"], interleaved["metrics"]
    assert a["learning_accuracy"] > 0.9 and b["learning_accuracy"] > 0.9  # both learn
    assert a["forgetting"] > 0.2  # once each: task A is largely forgotten
    assert b["forgetting"] < a["forgetting"] / 2  # interleaving: much less...
    assert b["forgetting"] > 0.03  # ...but not none
    assert b["acc"] > a["acc"]
    # each revisit of task A starts from where B left it and brings it back
    rows = interleaved["accuracy_matrix"]
    assert rows[2][0] > rows[1][0] + 0.2 and rows[4][0] > rows[3][0]


def test_a_scheduled_run_resumes_mid_schedule_as_if_never_stopped(tmp_path):
    config = RunConfig(n_tasks=2, schedule=[0, 1, 0], iterations=10, progress=False, threads=1)
    uninterrupted = run(config)
    store = RunStore(tmp_path)

    def crash(record):
        if record["event"] == "task" and record.get("phase") == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.execute(config, on_event=crash)
    (row,) = store.index.find()
    assert row["tasks_done"] == 2  # phases done
    resumed = store.resume(store.folder(row["id"]))
    assert resumed.accuracy_matrix == uninterrupted.accuracy_matrix
    assert resumed.losses == uninterrupted.losses
    assert resumed.schedule == [0, 1, 0]
