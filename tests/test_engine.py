"""The loop with real training on the digits: forgetting shows, upper bounds hold, seeds repeat."""

import sys
import warnings

import pytest
import torch

from forgetless import ConfigError, FitConfig, train
from forgetless.experiment import RunConfig, run
from forgetless.models import build_model
from forgetless.scenarios import make_stream
from forgetless.strategies import Strategy, make_strategies

# Enough training that each task is learnt almost perfectly, small enough for a quick suite.
QUICK = dict(
    scenario="split-digits", hidden=[64, 64], epochs=10, batch_size=32, lr=0.1, progress=False
)


@pytest.fixture(scope="module")
def finetune_result():
    return run(strategy="finetune", **QUICK)


def test_finetune_forgets_in_class_incremental(finetune_result):
    m = finetune_result.metrics
    assert m["learning_accuracy"] > 0.9  # each task is learnt...
    assert m["bwt"] < -0.5  # ...and then overwritten
    assert m["acc"] < 0.35
    assert m["fwt"] is None  # not meaningful in class-IL


def test_joint_is_the_upper_bound(finetune_result):
    joint = run(strategy="joint", **{**QUICK, "epochs": 20, "hidden": [100, 100]})
    assert joint.metrics["acc"] > 0.9
    assert joint.metrics["bwt"] == 0.0
    assert joint.metrics["acc"] > finetune_result.metrics["acc"] + 0.5


def test_cumulative_retraining_keeps_old_tasks(finetune_result):
    cumulative = run(strategy="cumulative", **QUICK)
    assert cumulative.metrics["acc"] > 0.85
    assert cumulative.metrics["bwt"] > -0.15


def test_same_seed_same_numbers_other_seed_other_numbers(finetune_result):
    again = run(strategy="finetune", **QUICK)
    assert again.accuracy_matrix == finetune_result.accuracy_matrix
    assert again.losses == finetune_result.losses
    other = run(strategy="finetune", seed=1, **QUICK)
    assert other.accuracy_matrix != finetune_result.accuracy_matrix


def test_task_incremental_masks_outputs_and_forgets_far_less():
    task_il = run(strategy="finetune", protocol="task", **QUICK)
    class_il = run(strategy="finetune", protocol="class", **QUICK)
    # With the task given, a binary choice among the task's own classes: never below chance.
    assert min(task_il.accuracy_matrix[-1]) > 0.5
    assert task_il.metrics["acc"] > class_il.metrics["acc"] + 0.3
    assert task_il.metrics["fwt"] is not None


def test_iterations_mode_and_curves():
    stream = make_stream("split-digits", seed=0)[:2]
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[32], seed=0)
    result = train(stream, model, "finetune", iterations=30, eval_every=10, lr=0.1, progress=False)
    assert [c["step"] for c in result.curves] == [10, 20, 30, 40, 50, 60]
    assert all(len(c["accuracy"]) == 2 for c in result.curves)
    # The first task's accuracy collapses during the second task's steps.
    first_task = [c["accuracy"][0] for c in result.curves]
    assert first_task[2] > 0.8 and first_task[-1] < 0.2
    assert result.timings["train"] > 0 and len(result.timings["eval_per_task"]) == 2


class Recorder(Strategy):
    """Counts hook calls, and checks the learner state the engine promises."""

    name = "recorder"

    def __init__(self):
        self.calls = []

    def before_task(self, learner, task):
        self.calls.append(("before_task", learner.task_index))

    def batch(self, learner, x, y, t):
        assert x.shape[0] == y.shape[0] == t.shape[0]
        self.calls.append("batch")
        return x, y, t

    def penalty(self, learner, x, y, t, logits):
        self.calls.append("penalty")
        return torch.zeros((), requires_grad=False)

    def after_backward(self, learner):
        assert all(p.grad is not None for p in learner.model.parameters())
        self.calls.append("after_backward")

    def after_step(self, learner, x, y, t, logits):
        self.calls.append("after_step")

    def after_task(self, learner, task):
        self.calls.append(("after_task", learner.task_index))


@pytest.mark.filterwarnings("ignore:the model barely learned:RuntimeWarning")  # 2 steps: on purpose
def test_hooks_are_called_in_order_and_composed():
    stream = make_stream("split-digits", seed=0)[:2]
    first, second = Recorder(), Recorder()
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[16], seed=0)
    train(stream, model, [first, second], iterations=2, progress=False)
    per_step = ["batch", "penalty", "after_backward", "after_step"]
    expected = [
        ("before_task", 0),
        *per_step * 2,
        ("after_task", 0),
        ("before_task", 1),
        *per_step * 2,
        ("after_task", 1),
    ]
    assert first.calls == expected and second.calls == expected


@pytest.mark.filterwarnings("ignore:the model barely learned:RuntimeWarning")  # 2 steps: on purpose
def test_penalty_changes_training():
    class PullToZero(Strategy):
        name = "pull"

        def penalty(self, learner, x, y, t, logits):
            return 10.0 * sum(p.pow(2).sum() for p in learner.model.parameters())

    stream = make_stream("split-digits", seed=0)[:1]
    norms = []
    for strategy in ("finetune", PullToZero()):
        model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[16], seed=0)
        train(stream, model, strategy, iterations=50, lr=0.05, progress=False)
        norms.append(sum(p.pow(2).sum() for p in model.parameters()).item())
    assert norms[1] < 0.5 * norms[0]


def test_incompatible_protocol_is_a_clear_error():
    class ClassOnly(Strategy):
        name = "class-only"
        protocols = frozenset({"class"})

    stream = make_stream("split-digits", protocol="task")
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[8])
    with pytest.raises(ConfigError, match="supports the class protocol"):
        train(stream, model, ClassOnly(), progress=False)


def test_model_that_does_not_fit_the_stream_is_a_clear_error():
    stream = make_stream("split-digits")
    with pytest.raises(ConfigError, match=r"must output \[batch, 10\]"):
        train(
            stream, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)), progress=False
        )
    with pytest.raises(ConfigError, match="cannot take this stream's inputs"):
        train(stream, torch.nn.Linear(5, 10), progress=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"lr": -1.0}, r"lr must be in \(0, inf\)"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"batch_size": 2.5}, "batch_size must be a positive integer"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ],
)
def test_bad_loop_settings_are_clear_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        FitConfig(**options)


def test_run_config_rejects_unknown_keys_with_a_hint():
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        RunConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        RunConfig(seed=-1)


def test_strategy_specs_and_parameters():
    assert [s.name for s in make_strategies("finetune+joint")] == ["finetune", "joint"]
    (cumulative,) = make_strategies("cumulative", {"from_scratch": "false"})
    assert cumulative.from_scratch is False
    with pytest.raises(ConfigError, match="did you mean 'finetune'"):
        make_strategies("finetun")
    with pytest.raises(ConfigError, match="not accepted by strategy finetune"):
        make_strategies("finetune", {"lam": 1})
    with pytest.raises(ConfigError, match="expects bool"):
        make_strategies("cumulative", {"from_scratch": "maybe"})
    (ewc,) = make_strategies("ewc", {"lam": "1e3", "fisher_samples": "200"})
    assert ewc.lam == 1000.0 and ewc.fisher_samples == 200
    (ewc,) = make_strategies("ewc", {"fisher_samples": "none"})
    assert ewc.fisher_samples is None
    with pytest.raises(ConfigError, match="'fisher_samples' expects int"):
        make_strategies("ewc", {"fisher_samples": "2.5"})


def test_retention_policy_refuses_strategies_that_keep_raw_inputs():
    with pytest.raises(ConfigError, match="data-retention policy"):
        run(strategy="joint", retain_raw_data=False, **QUICK)
    kept = run(strategy="finetune", retain_raw_data=False, **{**QUICK, "epochs": 1})
    assert kept.num_tasks == 5


def test_reusing_a_strategy_instance_warns():
    from forgetless.strategies import L2

    stream = make_stream("split-digits", seed=0)[:2]
    strategy = L2(lam=1.0)
    for expect_warning in (False, True):
        model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[8], seed=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(stream, model, strategy, iterations=1, progress=False)
        reused = [w for w in caught if "already used in a run" in str(w.message)]
        assert bool(reused) is expect_warning


@pytest.mark.filterwarnings("ignore:the model barely learned:RuntimeWarning")  # 2 steps: on purpose
def test_class_il_runs_also_report_task_aware_accuracy():
    stream = make_stream("split-digits", seed=0, protocol="class")
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [32], seed=0)
    result = train(stream, model, "finetune", iterations=60, lr=0.1, progress=False)
    # Restricting the argmax to a task's classes can only turn wrong answers right.
    for plain, aware in zip(result.accuracy_matrix, result.task_aware_matrix, strict=True):
        assert all(a >= p for p, a in zip(plain, aware, strict=True))
    # Fine-tuning under class-IL forgets old classes' outputs, not the features telling a
    # task's two classes apart: with the task given, old tasks stay far above chance (50%).
    assert result.metrics["acc"] < 0.3
    assert result.metrics["task_aware_acc"] > 0.7
    # By hand, for the last task: argmax over its two units of the final model's logits.
    task = stream.tasks[-1]
    with torch.no_grad():
        logits = model(task.test.inputs())[:, list(task.units)]
    by_hand = (torch.tensor(task.units)[logits.argmax(1)] == task.test.y).float().mean()
    assert result.task_aware_matrix[-1][-1] == pytest.approx(float(by_hand))
    task_il = make_stream("split-digits", seed=0, protocol="task")[:2]
    model = build_model("mlp", task_il.input_shape, task_il.num_outputs, [8], seed=0)
    assert train(task_il, model, "finetune", iterations=2, progress=False).task_aware_matrix is None


def test_a_barely_trained_run_warns_and_a_trained_one_does_not(finetune_result):
    # The old default budget (1 epoch of batch 128) is 2 steps per digits task: nothing is
    # learnt, and "no forgetting" would be read off an untrained model.
    with pytest.warns(RuntimeWarning, match="barely learned its tasks") as caught:
        run(strategy="finetune", scenario="split-digits", epochs=1, batch_size=128, lr=0.01,
            progress=False)  # fmt: skip
    assert "2 optimiser steps per task" in str(caught[0].message)
    # The scenario's own settings, which a config given nothing gets, learn every task.
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        trained = run(strategy="finetune", scenario="split-digits", seed=1, progress=False)
    assert trained.metrics["learning_accuracy"] > 0.9


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resets /proc/self peak")
def test_each_run_reports_its_own_peak_memory_in_a_reused_process():
    big = torch.ones(100 * 2**20)  # 400 MB touched, then released
    big.add_(1)
    del big
    result = run(strategy="finetune", **{**QUICK, "epochs": 1})
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 2**10
    # The 400 MB peak before the run is not the run's: its peak is near what the process holds.
    assert rss - 50 < result.peak_memory_mb < rss + 150
