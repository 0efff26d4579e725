"""The hand-written MLP step (``FitConfig.fast_path``, :mod:`forgetless.mlp_step`): where it
applies it gives autograd's numbers bit for bit (``"auto"``) or to float32 rounding
(``"fused"``), and everywhere else the engine falls back to autograd."""

import pytest
import torch

from forgetless import ConfigError, FitConfig, train
from forgetless.mlp_step import MLPStep, mlp_layers, refusal
from forgetless.models import build_model
from forgetless.scenarios import make_stream
from forgetless.strategies import make_strategies


def run(stream, strategy, hidden=(32, 24), **fit_options):
    model = build_model("mlp", stream.input_shape, stream.num_outputs, list(hidden), seed=0)
    fit = FitConfig(**{"epochs": 3, "batch_size": 16, "lr": 0.1, "progress": False, **fit_options})
    result = train(stream, model, strategy, fit=fit, seed=3)
    return model, result


def weight_gap(a, b) -> float:
    """The largest difference between two models' weights."""
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return max((x - y).abs().max().item() for x, y in pairs)


def final_gap(a, b) -> float:
    """The largest difference between two runs' final accuracies, task by task."""
    last = zip(a.accuracy_matrix[-1], b.accuracy_matrix[-1], strict=True)
    return max(abs(x - y) for x, y in last)


def grads_left(model) -> bool:
    """Autograd's path leaves the last step's gradients; the hand-written step none."""
    return all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("finetune", {}),
        ("finetune", {"momentum": 0.9}),
        ("finetune", {"momentum": 0.5, "optimizer_options": {"weight_decay": 1e-3}}),
        ("replay", {}),
    ],
)
def test_auto_gives_the_autograd_numbers_bit_for_bit(strategy, options):
    stream = make_stream("split-digits", seed=0)  # 16 divides no task: short batches
    slow, slow_result = run(stream, strategy, fast_path="off", **options)
    fast, fast_result = run(stream, strategy, **options)
    assert grads_left(slow) and not any(p.grad is not None for p in fast.parameters())
    for (key, a), b in zip(slow.state_dict().items(), fast.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    assert fast_result.accuracy_matrix == slow_result.accuracy_matrix
    assert fast_result.losses == slow_result.losses
    assert max(row[i] for i, row in enumerate(fast_result.accuracy_matrix)) > 0.9  # it learnt


def test_the_fused_update_drifts_only_at_float32_rounding():
    stream = make_stream("split-digits", seed=0)
    slow, slow_result = run(stream, "finetune", fast_path="off")
    fused, fused_result = run(stream, "finetune", fast_path="fused")
    assert not grads_left(fused)
    assert 0 < weight_gap(slow, fused) < 1e-4
    assert final_gap(slow_result, fused_result) <= 0.01


def test_the_replay_of_a_balanced_buffer_takes_the_fast_step_too():
    stream = make_stream("split-digits", seed=0)
    strategy = {"buffer_policy": "task-balanced", "buffer_update": "task", "replay_draw": "passes"}
    results = []
    for fast_path in ("off", "auto"):
        model, result = run(stream, make_strategies("replay", strategy), fast_path=fast_path)
        results.append((model.state_dict(), result.accuracy_matrix))
    (slow, slow_matrix), (fast, fast_matrix) = results
    assert all(torch.equal(slow[k], fast[k]) for k in slow)
    assert slow_matrix == fast_matrix


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("lwf", {}),  # a penalty
        ("finetune", {"optimizer": "adam", "lr": 0.003}),
        ("finetune", {"optimizer_options": {"nesterov": True}, "momentum": 0.9}),
        ("finetune", {"loss": torch.nn.CrossEntropyLoss(label_smoothing=0.1)}),
        ("finetune", {"fast_path": "fused", "momentum": 0.9}),
    ],
)
def test_the_engine_falls_back_to_autograd_where_the_step_does_not_apply(strategy, options):
    stream = make_stream("split-digits", seed=0)
    model, result = run(stream, strategy, **options)
    assert grads_left(model)
    assert max(row[i] for i, row in enumerate(result.accuracy_matrix)) > 0.9


# Domain-IL split digits (no task mask: the step applies), SGD at lr 0.05.
PENALTY_RUNS = [
    ("ewc", {"lam": 900.0, "fisher": "batched"}, {}),
    ("ewc", {"lam": 10.0}, {"momentum": 0.5}),
    ("online-ewc", {"lam": 10.0, "fisher": "empirical"}, {}),
    ("mas", {"lam": 0.5}, {}),
    ("l2", {"lam": 0.1}, {"momentum": 0.5, "optimizer_options": {"weight_decay": 1e-3}}),
    ("replay+ewc", {"lam": 10.0, "buffer_size": 50}, {}),
]


@pytest.mark.parametrize(("strategy", "params", "options"), PENALTY_RUNS)
def test_a_quadratic_penalty_takes_the_step_with_autograds_numbers_bit_for_bit(
    strategy, params, options
):
    stream = make_stream("split-digits", seed=0, protocol="domain")
    slow, slow_result = run(
        stream, make_strategies(strategy, params), lr=0.05, fast_path="off", **options
    )
    fast, fast_result = run(stream, make_strategies(strategy, params), lr=0.05, **options)
    assert grads_left(slow) and not any(p.grad is not None for p in fast.parameters())
    for (key, a), b in zip(slow.state_dict().items(), fast.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    assert fast_result.accuracy_matrix == slow_result.accuracy_matrix
    assert fast_result.losses == slow_result.losses  # the penalty's value included


def test_ewc_on_the_step_still_holds_on_to_old_tasks():
    stream = make_stream("split-digits", seed=0, protocol="domain")
    finetune = run(stream, "finetune", lr=0.05)[1].accuracy_matrix[-1]
    ewc = make_strategies("ewc", {"lam": 900.0, "fisher": "batched"})
    model, result = run(stream, ewc, lr=0.05)
    assert not grads_left(model)  # trained on the hand-written step
    final = result.accuracy_matrix[-1]
    old = lambda row: sum(row[:-1]) / (len(row) - 1)  # noqa: E731
    assert old(final) > old(finetune) + 0.03 and final[-1] > 0.9


def test_the_fused_update_with_a_penalty_drifts_only_at_float32_rounding():
    stream = make_stream("split-digits", seed=0, protocol="domain")
    ewc = {"lam": 10.0}
    slow, slow_result = run(stream, make_strategies("ewc", ewc), lr=0.05, fast_path="off")
    fused, fused_result = run(stream, make_strategies("ewc", ewc), lr=0.05, fast_path="fused")
    assert not grads_left(fused)
    assert 0 < weight_gap(slow, fused) < 1e-4
    assert final_gap(slow_result, fused_result) <= 0.02


def test_task_incremental_masks_fall_back():
    stream = make_stream("split-digits", seed=0, protocol="task")
    model, _ = run(stream, "finetune")
    assert grads_left(model)


def test_refusal_names_each_case():
    stream = make_stream("split-digits", seed=0)
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [16], seed=0)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    plain = dict(precision="float32", loss=None, scheduler=None, output_mask=None, target_shape=())
    finetune = make_strategies("finetune")
    assert refusal("auto", model, sgd, finetune, **plain) is None
    assert refusal("off", model, sgd, finetune, **plain) == "fast_path is off"
    assert "precision" in refusal(
        "auto", model, sgd, finetune, **{**plain, "precision": "bfloat16"}
    )
    assert "finetune, replay" in refusal("auto", model, sgd, make_strategies("der"), **plain)
    assert "finetune, replay" in refusal("auto", model, sgd, make_strategies("si"), **plain)
    for accepted in ("ewc", "online-ewc", "l2", "mas", "replay+ewc"):
        assert refusal("auto", model, sgd, make_strategies(accepted), **plain) is None
    two = make_strategies("ewc+l2")
    assert refusal("auto", model, sgd, two, **plain) == "more than one quadratic penalty"
    adam = torch.optim.Adam(model.parameters())
    assert "SGD" in refusal("auto", model, adam, finetune, **plain)
    handle = model[1].register_forward_hook(lambda *args: None)
    assert mlp_layers(model) is None and refusal("auto", model, sgd, finetune, **plain)
    handle.remove()
    model[-1].weight.requires_grad_(False)
    assert mlp_layers(model) is None
    model[-1].weight.requires_grad_(True)
    cnn = build_model("cnn", (1, 8, 8), 10, seed=0)
    assert mlp_layers(cnn) is None
    assert mlp_layers(model) == [model[1], model[3]]


def test_one_step_is_autograds_step():
    torch.manual_seed(0)
    stream = make_stream("split-digits", seed=0)
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [20, 20], seed=0)
    twin = build_model("mlp", stream.input_shape, stream.num_outputs, [20, 20], seed=0)
    x, y = stream.tasks[0].train.inputs()[:37], stream.tasks[0].train.y[:37]
    step = MLPStep(mlp_layers(model), torch.optim.SGD(model.parameters(), lr=0.1))
    loss, logits = step(x, y)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    expected_logits = twin(x)
    expected = torch.nn.functional.cross_entropy(expected_logits, y)
    expected.backward()
    optimizer.step()
    assert torch.equal(loss, expected.detach()) and torch.equal(logits, expected_logits.detach())
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters(), strict=True)
    )


def test_an_unknown_fast_path_is_refused():
    with pytest.raises(ConfigError, match="fast_path"):
        FitConfig(fast_path="turbo")


def test_only_the_fused_step_names_another_run():
    from forgetless.experiment import RunConfig, config_hash

    default = config_hash(RunConfig())
    assert config_hash(RunConfig(fast_path="auto")) == default  # the numbers are the same
    assert config_hash(RunConfig(fast_path="off")) == default
    assert config_hash(RunConfig(fast_path="fused")) != default  # other rounding
    assert RunConfig(fast_path="fused").fit_config().fast_path == "fused"
    assert RunConfig().fit_config().fast_path == "auto"
    with pytest.raises(ConfigError):
        RunConfig(fast_path="turbo")
