"""Specialists on the digits: a copy of the model per task keeps every task exactly with the
task given, grows linearly, and resumes; routers infer the task without it (class-IL)."""

from __future__ import annotations

import warnings

import pytest
import torch

from forgetless import ConfigError
from forgetless.experiment import RunConfig, run
from forgetless.models import SpecialistNet
from forgetless.runs import RunStore
from forgetless.strategies import Specialists, Strategy
from task_il import QUICK


class Starts(Strategy):
    """The newest specialist's weights before each task's training, and the final model."""

    name = "starts"

    def __init__(self):
        self._starts = []
        self._model = None

    def before_task(self, learner, task):
        newest = learner.model.experts[-1]
        self._starts.append({n: t.detach().clone() for n, t in newest.state_dict().items()})

    def after_task(self, learner, task):
        self._model = learner.model

    def state_dict(self):
        return {}

    def load_state_dict(self, state, learner):
        pass


def test_specialists_learn_every_task_keep_each_exactly_and_grow_linearly(task_il_finetune):
    result = run(strategy="specialists", **QUICK)
    m = result.metrics
    assert m["bwt"] == 0.0
    R = result.accuracy_matrix
    assert all(R[i][j] == R[j][j] for i in range(5) for j in range(i))
    assert m["acc"] > 0.95 and m["acc"] > task_il_finetune.metrics["acc"] + 0.15
    assert task_il_finetune.metrics["bwt"] < -0.1  # while fine-tuning forgets
    one = task_il_finetune.model_size[0]["parameters"]
    assert [s["parameters"] for s in result.model_size] == [one * (k + 1) for k in range(5)]
    assert [s["trainable"] for s in result.model_size] == [one] * 5  # only the newest trains
    report = result.strategy_reports["specialists"]
    assert report == {"specialists": 5, "start": "last", "parameters_per_specialist": [one] * 5}


@pytest.mark.parametrize("start", ["last", "initial"])
def test_each_specialist_starts_where_asked_and_stays_frozen_after_its_task(start):
    from forgetless import train
    from forgetless.models import build_model
    from forgetless.scenarios import make_stream

    stream = make_stream("split-digits", seed=0, protocol="task")[:3]
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [16], seed=0)
    initial = {n: t.detach().clone() for n, t in model.state_dict().items()}
    spy = Starts()
    result = train(
        stream, model, [Specialists(start=start), spy], iterations=30, lr=0.005,
        optimizer="adam", progress=False,
    )  # fmt: skip
    assert result.metrics["bwt"] == 0.0
    net = spy._model
    assert isinstance(net, SpecialistNet) and len(net.experts) == 3
    for k, weights in enumerate(spy._starts):
        # Specialist k starts from the initial weights, or from where specialist k-1 ended.
        origin = initial if start == "initial" or k == 0 else net.experts[k - 1].state_dict()
        assert all(torch.equal(weights[n], origin[n]) for n in weights)
    assert all(not p.requires_grad for e in net.experts[:-1] for p in e.parameters())
    assert not any(e.training for e in net.experts[:-1])
    # A batch of mixed task ids takes each row through its own specialist.
    x = stream[0].test.inputs(slice(0, 6))
    t = torch.tensor([0, 2, 1, 5, 0, 1])  # 5: a task beyond the newest, answered by it
    with torch.no_grad():
        mixed = net(x, t)
        for row, task in enumerate(t.tolist()):
            assert torch.allclose(mixed[row], net.experts[min(task, 2)](x[row : row + 1])[0])


def test_a_start_that_does_not_exist_is_a_clear_error():
    with pytest.raises(ConfigError, match="start must be one of last, initial"):
        run(strategy="specialists", strategy_params={"start": "middle"}, **QUICK)


def _crash_after(task: int):
    def on_event(record):
        if record["event"] == "task" and record["task"] == task:
            raise KeyboardInterrupt

    return on_event


@pytest.mark.parametrize(("start", "keep"), [("last", False), ("initial", True)])
def test_specialists_resumed_after_a_crash_end_as_if_never_stopped(tmp_path, start, keep):
    warnings.simplefilter("ignore", RuntimeWarning)
    config = RunConfig(
        **{**QUICK, "iterations": 25},
        strategy="specialists",
        strategy_params={"start": start},
        reset_optimizer=not keep,
        seed=2,
    )
    uninterrupted = run(config)
    store = RunStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        store.execute(config, on_event=_crash_after(2))
    (row,) = store.index.find()
    assert (row["status"], row["tasks_done"]) == ("interrupted", 2)
    resumed = store.resume(store.folder(row["id"]))
    assert resumed.accuracy_matrix == uninterrupted.accuracy_matrix
    assert resumed.losses == uninterrupted.losses
    assert resumed.model_size == uninterrupted.model_size
    assert resumed.strategy_reports == uninterrupted.strategy_reports
    assert resumed.strategy_state_bytes == uninterrupted.strategy_state_bytes
