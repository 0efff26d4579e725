"""TensorBoard and MLflow sinks carry the same events as events.jsonl."""

from __future__ import annotations

import json

import pytest

from forgetless import ConfigError
from forgetless.cli import main
from forgetless.experiment import RunConfig
from forgetless.runs import RunStore
from forgetless.runs.loggers import scalars


def _config() -> RunConfig:
    return RunConfig(scenario="split-digits", iterations=30, log_every=10, eval_every=15, threads=1)


def _events(store: RunStore) -> list[dict]:
    folder = store.folder(store.run_id(_config()))
    return [json.loads(line) for line in (folder / "events.jsonl").open()]


def test_scalars_of_each_event_kind():
    assert scalars({"event": "loss", "task": 0, "step": 10, "loss": 0.5}) == [
        ("train/loss", 0.5, 10)
    ]
    task = scalars({"event": "task", "task": 1, "step": 60, "accuracy": [0.2, 0.8, 0.0]})
    assert task == [
        ("accuracy/task_1", 0.2, 60),
        ("accuracy/task_2", 0.8, 60),
        ("accuracy/task_3", 0.0, 60),
        ("accuracy/mean_seen", 0.5, 60),  # tasks 1 and 2 are the ones seen
    ]
    end = scalars({"event": "end", "metrics": {"acc": 0.4, "fwt": None}})
    assert end == [("final/acc", 0.4, 0)]
    assert scalars({"event": "start", "baseline": [0.1]}) == []


def test_tensorboard_gets_every_scalar_of_the_events(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = RunStore(tmp_path)
    store.execute(_config(), loggers=["tensorboard"])
    expected = [s for e in _events(store) for s in scalars(e)]
    folder = store.folder(store.run_id(_config())) / "tensorboard"
    board = EventAccumulator(str(folder))
    board.Reload()
    got = [
        (tag, pytest.approx(e.value), e.step)
        for tag in board.Tags()["scalars"]
        for e in board.Scalars(tag)
    ]
    assert len(got) == len(expected) > 20
    assert sorted((t, s) for t, _, s in got) == sorted((t, s) for t, _, s in expected)
    losses = [v for t, v, _ in expected if t == "train/loss"]
    assert [e.value for e in board.Scalars("train/loss")] == pytest.approx(losses)


def test_mlflow_gets_the_metrics_and_the_config(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    store = RunStore(tmp_path)
    result = store.execute(_config(), loggers=["mlflow"])
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "forgetless"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["scenario"] == "split-digits"
    assert run.data.metrics["final.acc"] == pytest.approx(result.metrics["acc"])
    history = client.get_metric_history(run.info.run_id, "train.loss")
    expected = [e for e in _events(store) if e["event"] == "loss"]
    assert [m.step for m in history] == [e["step"] for e in expected]


def test_logger_errors_are_clear(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown logger 'wandb'"):
        RunStore(tmp_path).execute(_config(), loggers=["wandb"])
    assert main(["run", "--log", "tensorboard", "--iterations", "2"]) == 2
    assert "--log needs --store" in capsys.readouterr().err


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    def crash_after_task_2(record):
        if record["event"] == "task" and record["task"] == 2:
            raise KeyboardInterrupt

    store = RunStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        store.execute(_config(), loggers=["mlflow"], on_event=crash_after_task_2)
    result = store.execute(_config(), loggers=["mlflow"])  # resumes from the checkpoint
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "forgetless"]
    (run,) = client.search_runs([experiment.experiment_id])  # one MLflow run, not two
    assert run.data.tags["forgetless.run"] == store.run_id(_config())
    assert run.data.metrics["final.acc"] == pytest.approx(result.metrics["acc"])
    # Accuracy rows of all five tasks reached it: three before the crash, the rest after.
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "accuracy.task_1")}
    assert len(steps) >= 5
    # A run trained again from scratch (--rerun) gets a run of its own.
    store.execute(_config(), loggers=["mlflow"], rerun=True)
    assert len(client.search_runs([experiment.experiment_id])) == 2
