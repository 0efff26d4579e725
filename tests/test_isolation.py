"""Parameter isolation on the digits: progressive networks and PackNet learn every task and,
with the task given, keep each one exactly (BWT 0); grown models resume; wrong pairings fail."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from forgetless import ConfigError, train
from forgetless.cli import main
from forgetless.experiment import RunConfig, run
from forgetless.models import MaskedNet, ProgressiveNet, build_model
from forgetless.runs import RunIndex, RunStore
from forgetless.scenarios import make_stream
from forgetless.strategies import EWC, SI, PackNet, Strategy
from forgetless.strategies.packnet import FREE
from task_il import QUICK


class Snapshots(Strategy):
    """After each task, a copy of every parameter and buffer of the model, by name."""

    name = "snapshots"
    supports_task_id_models = True

    def __init__(self):
        self._copies = []

    def after_task(self, learner, task):
        self._copies.append({n: t.detach().clone() for n, t in learner.model.state_dict().items()})

    def state_dict(self):
        return {}

    def load_state_dict(self, state, learner):
        pass


def _stream(tasks=5):
    return make_stream("split-digits", seed=0, protocol="task")[:tasks]


def _train(strategies, model="mlp", tasks=5, **loop):
    stream = _stream(tasks)
    net = build_model(
        model,
        stream.input_shape,
        stream.num_outputs,
        QUICK["hidden"] if model == "mlp" else [16],
        seed=0,
    )
    options = {k: QUICK[k] for k in ("iterations", "optimizer", "lr", "progress")} | loop
    return train(stream, net, strategies, seed=0, **options)


# Progressive networks


def test_pnn_learns_every_task_and_keeps_each_exactly(task_il_finetune):
    result = run(strategy="pnn", **QUICK)
    m = result.metrics
    assert m["bwt"] == 0.0
    R = result.accuracy_matrix
    assert all(R[i][j] == R[j][j] for i in range(5) for j in range(i))
    assert m["acc"] > 0.95 and m["acc"] > task_il_finetune.metrics["acc"] + 0.08
    assert task_il_finetune.metrics["bwt"] < -0.05  # while fine-tuning forgets
    # The model grows by one column (and its adapters) per task, as reported.
    report = result.strategy_reports["pnn"]
    sizes = [s["parameters"] for s in result.model_size]
    assert report["columns"] == 5
    assert sizes == [sum(report["column_parameters"][: k + 1]) for k in range(5)]
    assert sizes[0] == task_il_finetune.model_size[0]["parameters"]  # column 0 is the model itself
    trainable = [s["trainable"] for s in result.model_size]
    assert trainable == report["column_parameters"]  # each task trains its own column only


def test_pnn_old_columns_are_bit_identical_after_later_tasks():
    spy = Snapshots()
    _train(["pnn", spy], tasks=4)
    final = spy._copies[-1]
    for k, after in enumerate(spy._copies):
        own = {n: t for n, t in after.items() if n.startswith((f"columns.{k}.", f"adapters.{k}."))}
        assert own
        for name, value in own.items():
            assert torch.equal(final[name], value), f"{name} changed after task {k + 1}"


class _Keep(Strategy):
    name = "keep"

    def __init__(self):
        self._models = []

    def after_task(self, learner, task):
        self._models.append(learner.model)

    def state_dict(self):
        return {}

    def load_state_dict(self, state, learner):
        pass


def test_pnn_laterals_are_trained_and_change_the_output():
    keep = _Keep()
    _train(["pnn", keep], tasks=3)
    net = keep._models[-1]
    assert isinstance(net, ProgressiveNet) and len(net.adapters[2]) == 2
    x = _stream()[2].test.inputs(slice(0, 64))
    net.eval()
    with torch.no_grad():
        before, earlier = net(x, 2), net(x, 1)
        for adapter in net.adapters[2]:
            assert adapter.lateral.weight.abs().sum() > 0
            adapter.lateral.weight.zero_()  # cut column 2 off from columns 0 and 1
        without = net(x, 2)
        assert (before - without).abs().max() > 0.1
        # The earlier columns' answers do not depend on column 2's adapters.
        assert torch.equal(net(x, 1), earlier)


@pytest.mark.parametrize("model", ["cnn", "cnn-skip"])
def test_pnn_builds_columns_from_convolutional_models(model):
    stream = _stream(3)
    plain = build_model(model, stream.input_shape, stream.num_outputs, [16], seed=0)
    x = stream[0].test.inputs(slice(0, 8))
    with torch.no_grad():
        expected = plain(x)
        assert torch.equal(ProgressiveNet(plain)(x, 0), expected)
    result = _train("pnn", model=model, tasks=3, iterations=30)
    assert result.metrics["bwt"] == 0.0
    sizes = [s["parameters"] for s in result.model_size]
    assert sizes[0] < sizes[1] < sizes[2]


def test_regularisers_run_on_a_grown_model_in_either_order():
    warnings.simplefilter("ignore", RuntimeWarning)
    ewc, si = EWC(lam=100.0), SI()
    result = _train([si, "pnn", ewc], tasks=3, iterations=30)
    assert result.metrics["bwt"] == 0.0
    # Each regulariser weighed the column trained in each task (SI listed before pnn too).
    for strategy in (ewc, si):
        names = strategy.importance_by_name
        assert any(n.startswith("columns.2.") for n in names)
        assert any(n.startswith("adapters.2.") for n in names)


# PackNet


@pytest.mark.parametrize(
    ("optimizer", "keep", "momentum"),
    [("adam", False, 0.0), ("adam", True, 0.0), ("sgd", True, 0.9)],
)
def test_packnet_keeps_every_task_exactly_whatever_the_optimiser(optimizer, keep, momentum):
    spy = Snapshots()
    lr = 0.005 if optimizer == "adam" else 0.05
    result = _train(
        [PackNet(), spy],
        optimizer=optimizer,
        reset_optimizer=not keep,
        momentum=momentum,
        lr=lr,
        tasks=4,
        iterations=40,
    )
    assert result.metrics["bwt"] == 0.0
    R = result.accuracy_matrix
    assert all(R[i][j] == R[j][j] for i in range(4) for j in range(i))
    # Every weight a task owns, and every shared bias, is the same to the bit after later tasks.
    final = spy._copies[-1]
    for k, after in enumerate(spy._copies):
        for layer in ("1", "3", "5"):
            owner = after[f"masks.owners.{['1', '3', '5'].index(layer)}.weight"]
            owned = owner == k
            assert owned.any()
            weight = f"body.{layer}.weight"
            assert torch.equal(final[weight][owned], after[weight][owned])
            if layer != "5" and k < 3:  # released weights are held at 0 until claimed
                free = owner == FREE
                assert free.any() and not after[weight][free].any()
    for layer in ("1", "3"):  # hidden biases: trained with the first task only
        assert torch.equal(final[f"body.{layer}.bias"], spy._copies[0][f"body.{layer}.bias"])


def test_packnet_learns_every_task(task_il_finetune):
    result = run(strategy="packnet", **QUICK)
    assert result.metrics["bwt"] == 0.0
    assert (
        result.metrics["acc"] > 0.9
        and result.metrics["acc"] > task_il_finetune.metrics["acc"] + 0.05
    )


def test_packnet_retrains_at_the_retraining_rate_and_restores_the_rate_after():
    class Rates(Strategy):
        name = "rates"

        def __init__(self):
            self._rates = []

        def after_step(self, learner, x, y, t, logits):
            self._rates.append((learner.task_index, learner.optimizer.param_groups[0]["lr"]))

        def state_dict(self):
            return {}

    rates = Rates()
    _train(
        [PackNet(retrain=0.25, retrain_lr=0.1), rates],
        tasks=3,
        iterations=8,
        lr=0.01,
        reset_optimizer=False,
    )
    per_task = [[lr for task, lr in rates._rates if task == k] for k in range(3)]
    # Pruned after 6 of 8 steps (in after_step: the rate drops for the 2 steps after it).
    assert per_task[0] == per_task[1] == [0.01] * 5 + [0.001] * 3
    assert per_task[2] == [0.01] * 8  # the last task is not pruned, nor retrained


def test_packnet_reports_the_capacity_each_task_holds_per_layer():
    prune = 0.5
    result = _train(PackNet(prune=prune), tasks=3, iterations=20)
    report = result.strategy_reports["packnet"]
    stream = _stream(3)
    for name, width in (("1", 64), ("3", 32)):
        layer = report["layers"][name]
        n = layer["weights"]
        assert n == width * 32
        expected, free = [], n
        for _ in range(2):  # each task claims the free weights and releases half of them
            released = round(prune * free)
            expected.append(free - released)
            free = released
        expected.append(free)  # but the last, which keeps them all
        free = 0
        assert layer["tasks"] == expected and layer["free"] == free
    heads = report["layers"]["5"]  # the output layer: each task owns its units' rows, unpruned
    assert heads["tasks"] == [len(stream[t].units) * 32 for t in range(3)]
    assert heads["free"] == heads["weights"] - 6 * 32
    total = sum(layer["weights"] for layer in report["layers"].values())
    owned = [sum(layer["tasks"][t] for layer in report["layers"].values()) for t in range(3)]
    assert report["per_task"] == [o / total for o in owned]


def test_packnet_freezes_normalisation_and_handles_layers_without_bias():
    stream = _stream(4)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(
            64, 32, bias=False
        ),  # a layer without bias (one implementation tested the weight)
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, stream.num_outputs),
    )
    keep = _Keep()
    result = train(
        stream,
        model,
        [PackNet(), keep],
        seed=0,
        **{k: QUICK[k] for k in ("optimizer", "lr", "progress")},
        iterations=40,
    )
    assert result.metrics["bwt"] == 0.0
    assert result.metrics["learning_accuracy"] > 0.8
    net = keep._models[-1]
    assert isinstance(net, MaskedNet)
    norm = net.body[2]
    assert not norm.training and not norm.weight.requires_grad  # fixed after the first task


# Protocol pairings and resuming


@pytest.mark.parametrize("strategy", ["pnn", "packnet", "hat", "hypermask", "specialists"])
def test_task_id_methods_without_the_task_or_a_router_are_clear_errors(strategy, capsys):
    stream = make_stream("split-digits", seed=0, protocol="class")
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [16], seed=0)
    with pytest.raises(ConfigError, match=f"{strategy} needs the task id at test time"):
        train(stream, model, strategy, iterations=2, progress=False)
    args = ["run", "--scenario", "split-digits", "--protocol", "domain", "--strategy", strategy]
    assert main([*args, "--iterations", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "needs the task id" in err and "Traceback" not in err
    assert (
        main(["run", "--strategy", f"{strategy}+gss", "--protocol", "task", "--iterations", "2"])
        == 2
    )
    assert "gss calls the model without task ids" in capsys.readouterr().err


def _crash_after(task: int):
    def on_event(record):
        if record["event"] == "task" and record["task"] == task:
            raise KeyboardInterrupt

    return on_event


@pytest.mark.parametrize(
    ("strategy", "params", "keep"),
    [
        ("pnn", {}, False),
        ("pnn+ewc", {"lam": 100.0}, True),
        ("packnet", {}, True),
        ("hat", {}, True),
        ("hat+ewc", {"lam": 100.0}, False),
        ("hypermask", {"lam_target": 0.03}, True),
        pytest.param("hypermask+ewc", {"lam": 100.0}, False, marks=pytest.mark.slow),
    ],
)
@pytest.mark.slow
def test_a_grown_model_resumed_after_a_crash_ends_as_if_never_stopped(
    tmp_path, strategy, params, keep
):
    warnings.simplefilter("ignore", RuntimeWarning)
    config = RunConfig(
        **{**QUICK, "iterations": 25},
        strategy=strategy,
        strategy_params=params,
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


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["pnn", "hat", "hypermask", "specialists"])
def test_kill_9_mid_run_of_a_growing_model_then_resume_from_the_command_line(
    tmp_path, strategy, traced, killed_command
):
    config = RunConfig(**{**QUICK, "iterations": 25}, strategy=strategy, seed=4)
    expected, points = traced(lambda: RunStore(tmp_path / "reference").execute(config))
    # Killed once the third task is trained, before any of it is on disk: as a kill -9 part
    # way through that task, with two tasks checkpointed (and the model grown twice).
    third = [i for i, name in enumerate(points, 1) if name == "event task: half written"][2]
    store = tmp_path / "store"
    args = [
        "run", "--scenario", "split-digits", "--protocol", "task", "--strategy", strategy,
        "--hidden", "32,32", "--iterations", "25", "--optimizer", "adam",
        "--lr", "0.005", "--threads", "1", "--no-progress", "--seed", "4", "--store", str(store),
    ]  # fmt: skip
    killed_command(args, third)
    (row,) = RunIndex(store / "index.sqlite").find()
    assert (row["status"], row["tasks_done"]) == ("interrupted", 2)
    folder = store / row["id"]
    assert main(["run", "--resume", str(folder), "--json"]) == 0
    resumed = json.loads((folder / "result.json").read_text())
    assert resumed["accuracy_matrix"] == expected.accuracy_matrix
    assert resumed["model_size"] == expected.model_size
