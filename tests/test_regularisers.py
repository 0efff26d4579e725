"""SI, MAS and LwF: each holds on to old tasks where fine-tuning forgets, strength 0 is exactly
fine-tuning, and each importance or distillation term matches its definition."""

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from forgetless import ConfigError, train
from forgetless.learner import Learner
from forgetless.models import build_model
from forgetless.scenarios import make_stream
from forgetless.strategies.lwf import LwF
from forgetless.strategies.mas import MAS
from forgetless.strategies.si import SI

# Task-IL split digits trained hard (Adam, 20 epochs per task): fine-tuning loses 14-23 points
# on earlier tasks (BWT -0.14 to -0.23 over seeds 0-3), enough room to see a defence work.
HARD = dict(
    epochs=20, batch_size=32, optimizer="adam", lr=0.003, retain_raw_data=False, progress=False
)


def _train(strategy, tasks=5, **fit):
    stream = make_stream("split-digits", seed=0, protocol="task")[:tasks]
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[64, 64], seed=0)
    return train(stream, model, strategy, seed=0, **{**HARD, **fit})


@pytest.fixture(scope="module")
def finetune():
    return _train("finetune")


@pytest.mark.parametrize(
    "strategy", [SI(c=1.0, xi=0.1), MAS(lam=1.0), LwF(alpha=1.0, temperature=2.0)], ids=repr
)
@pytest.mark.slow
def test_regulariser_reduces_forgetting(finetune, strategy):
    base = finetune.metrics
    assert base["bwt"] < -0.15, "the setting must make fine-tuning forget"
    m = _train(copy.deepcopy(strategy)).metrics
    assert m["bwt"] > base["bwt"] + 0.10, (m, base)
    assert m["acc"] > base["acc"] + 0.05, (m, base)


@pytest.fixture(scope="module")
def short_finetune():
    return _train("finetune", tasks=3, epochs=5)


@pytest.mark.parametrize(
    "strategy", [SI(c=0.0), MAS(lam=0.0), MAS(lam=0.0, samples=50), LwF(alpha=0.0)], ids=repr
)
def test_strength_zero_is_finetuning(short_finetune, strategy):
    result = _train(strategy, tasks=3, epochs=5)
    assert result.accuracy_matrix == short_finetune.accuracy_matrix
    assert result.losses == short_finetune.losses


def _tiny_learner(protocol="task", hidden=(8,)):
    stream = make_stream("split-digits", seed=0, protocol=protocol)[:3]
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=hidden, seed=0)
    return Learner(
        model,
        stream,
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        torch.device("cpu"),
        torch.Generator().manual_seed(0),
    )


def test_si_path_integral_on_a_quadratic_matches_the_hand_computation():
    # L = a/2 (theta - b)^2 per coordinate; SGD gives theta_s - b = r^s d0 with r = 1 - lr a,
    # so omega = sum_s -g_s delta_s = lr sum_s g_s^2 = lr a^2 d0^2 (1 - r^2S) / (1 - r^2).
    a, b = torch.tensor([0.5, 2.0, 4.0]), torch.tensor([1.0, -1.0, 0.5])
    theta0, lr, steps, c, xi = torch.tensor([0.0, 1.0, -2.0]), 0.1, 7, 0.5, 0.01
    model = torch.nn.Module()
    model.theta = torch.nn.Parameter(theta0.clone())
    learner = SimpleNamespace(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr))
    si = SI(c=c, xi=xi)
    si.before_task(learner, None)
    for _ in range(steps):
        learner.optimizer.zero_grad()
        (0.5 * a * (model.theta - b).pow(2)).sum().backward()
        si.after_backward(learner)
        learner.optimizer.step()
        si.after_step(learner, None, None, None, None)

    d0, r = theta0 - b, 1 - lr * a
    omega = lr * a**2 * d0**2 * (1 - r ** (2 * steps)) / (1 - r**2)
    torch.testing.assert_close(si.path_integral[0], omega)
    moved = d0 * (r**steps - 1)
    torch.testing.assert_close(model.theta.detach() - theta0, moved)

    si.after_task(learner, None)
    importance = omega / (moved**2 + xi)
    anchor = model.theta.detach().clone()
    with torch.no_grad():
        model.theta.add_(torch.tensor([0.3, -0.2, 0.1]))
    expected = c * (importance * (model.theta.detach() - anchor).pow(2)).sum()
    torch.testing.assert_close(si.penalty(learner, None, None, None, torch.zeros(1)), expected)


def test_si_path_integral_with_momentum_is_the_sum_of_minus_gradient_times_step():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    lr = 0.05
    learner = SimpleNamespace(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    )
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    si = SI()
    si.before_task(learner, None)
    reference = [torch.zeros_like(p) for p in model.parameters()]
    sgd_only = [torch.zeros_like(p) for p in model.parameters()]
    for _ in range(5):
        learner.optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        before = [p.detach().clone() for p in model.parameters()]
        si.after_backward(learner)
        learner.optimizer.step()
        si.after_step(learner, x, y, None, None)
        for ref, plain, p, old in zip(reference, sgd_only, model.parameters(), before, strict=True):
            ref -= p.grad * (p.detach() - old)
            plain += lr * p.grad.pow(2)
    for got, ref in zip(si.path_integral, reference, strict=True):
        torch.testing.assert_close(got, ref)
    # The steps, not the gradients alone, define omega: with momentum it is not lr * sum g^2.
    assert not torch.allclose(si.path_integral[0], sgd_only[0], rtol=0.1)


@pytest.mark.parametrize("protocol", ["task", "class"])
def test_mas_importance_matches_a_per_sample_loop(protocol):
    learner = _tiny_learner(protocol)
    task = learner.stream.tasks[1]
    got = MAS(lam=1.0).importance(learner, task)

    model = learner.model
    units = list(task.units) if protocol == "task" else list(range(learner.stream.num_outputs))
    x = task.train.inputs()
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for xi in x:
        out = model(xi.unsqueeze(0))[0, units]
        grads = torch.autograd.grad(out.pow(2).sum(), list(model.parameters()))
        for e, g in zip(expected, grads, strict=True):
            e += g.abs() / len(x)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    assert all(bool((g >= 0).all()) for g in got)


def test_mas_samples_averages_over_a_random_subset_drawn_apart_from_the_batch_order():
    learner = _tiny_learner("task")
    learner.task_index = 1
    task = learner.stream.tasks[1]
    state = learner.generator.get_state()
    sampled = MAS(samples=40).importance(learner, task)
    assert torch.equal(learner.generator.get_state(), state)
    rows = torch.randperm(len(task.train), generator=learner.task_generator("mas"))
    subset = SimpleNamespace(train=task.train.subset(rows[:40]), units=task.units)
    for s, e in zip(sampled, MAS().importance(learner, subset), strict=True):
        torch.testing.assert_close(s, e)
    everything = MAS(samples=10_000).importance(learner, task)
    for s, e in zip(everything, MAS().importance(learner, task), strict=True):
        torch.testing.assert_close(s, e)


@pytest.mark.parametrize("protocol", ["task", "class"])
def test_lwf_distillation_is_zero_for_the_same_model_and_positive_after_a_change(protocol):
    learner = _tiny_learner(protocol)
    lwf = LwF(alpha=0.7, temperature=3.0)
    stream = learner.stream
    for i in range(2):
        learner.task_index = i
        lwf.after_task(learner, stream.tasks[i])
    learner.task_index = 2
    x = stream.tasks[2].train.inputs(slice(0, 32))
    t = torch.full((32,), 2)

    learner.outputs = learner.model(x)  # as the engine sets it for each step
    same = lwf.penalty(learner, x, None, t, learner.mask(learner.outputs, t))
    assert same is not None and abs(same.item()) < 1e-7

    with torch.no_grad():
        for p in learner.model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    learner.outputs = learner.model(x)
    term = lwf.penalty(learner, x, None, t, learner.mask(learner.outputs, t))
    old, new = lwf._old(x), learner.model(x)
    groups = (
        [list(stream.tasks[0].units), list(stream.tasks[1].units)]
        if protocol == "task"
        else [list(stream.tasks[0].units) + list(stream.tasks[1].units)]
    )
    kls = []
    for units in groups:
        p_old = F.softmax(old[:, units] / 3.0, dim=1)
        p_new = F.softmax(new[:, units] / 3.0, dim=1)
        kls.append((p_old * (p_old.log() - p_new.log())).sum(dim=1).mean())
    expected = 0.7 * 3.0**2 * torch.stack(kls).mean()
    assert term.item() > 1e-3
    torch.testing.assert_close(term, expected)
    # Only the current model learns; the frozen copy is untouched by the backward pass.
    term.backward()
    assert all(p.grad is not None for p in learner.model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in lwf._old.parameters())
    assert not lwf._old.training


def test_lwf_adds_nothing_on_the_first_task():
    learner = _tiny_learner("class")
    x = learner.stream.tasks[0].train.inputs(slice(0, 8))
    assert LwF().penalty(learner, x, None, None, learner.model(x)) is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SI(c=-1.0), r"c must be in \[0, inf\), got -1"),
        (lambda: SI(xi=0.0), r"xi must be in \(0, inf\), got 0"),
        (lambda: SI(c=float("nan")), r"c must be in \[0, inf\)"),
        (lambda: MAS(lam=-0.5), r"lam must be in \[0, inf\), got -0.5"),
        (lambda: MAS(samples=0), r"samples must be None .* or an integer in \[1, inf\), got 0"),
        (lambda: MAS(samples=2.5), r"samples must be None .* or an integer in \[1, inf\)"),
        (lambda: MAS(samples=True), r"samples must be None .*, got True"),
        (lambda: SI(c="strong"), r"c must be a number, got 'strong'"),
        (lambda: LwF(alpha=-1.0), r"alpha must be in \[0, inf\), got -1"),
        (lambda: LwF(temperature=0.0), r"temperature must be in \(0, inf\), got 0"),
    ],
)
def test_invalid_hyperparameters_name_the_parameter_and_range(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_parameters_and_data_policy():
    assert SI(c=2.0, xi=0.5).params() == {"c": 2.0, "xi": 0.5}
    assert MAS(lam=3.0, samples=100).params() == {"lam": 3.0, "samples": 100}
    assert LwF(alpha=0.5, temperature=4.0).params() == {"alpha": 0.5, "temperature": 4.0}
    # What the strategy registry passes from the command line: strings.
    assert MAS(lam="0.5", samples="200").params() == {"lam": 0.5, "samples": 200}
    assert [s.name for s in (SI(), MAS(), LwF())] == ["si", "mas", "lwf"]
    assert not any(s.stores_raw_data for s in (SI(), MAS(), LwF()))


def test_mas_closed_forms_for_linear_and_conv_layers_equal_per_example_vmap():
    from torch import nn

    from forgetless.fisher import output_sensitivity

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(48, 10)
    ).double()
    x = torch.randn(37, 1, 8, 8, dtype=torch.float64)
    for units in (None, [2, 7]):
        fast = output_sensitivity(model, x, units=units, chunk_size=10)
        reference = output_sensitivity(model, x, units=units, method="vmap")
        torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-14)


def test_the_sgd_divergence_warning_fires_when_sgd_diverges_and_not_on_a_run_that_learned():
    import warnings

    from forgetless.errors import TrainingError
    from forgetless.experiment import RunConfig, run

    # EWC at lam 1000, lr 0.1: lam * importance passes SGD's limit on the old tasks' heads,
    # which get no gradient under task-IL and never move. The run learns well: no warning. (Batch
    # 128: at the preset's batch 32, four times the steps at lr 0.1 do diverge on task 5.)
    config = RunConfig(strategy="ewc", protocol="task", strategy_params={"lam": 1000.0},
                       lr=0.1, epochs=5, batch_size=128, threads=1, progress=False)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(config)
    assert result.metrics["acc"] > 0.95
    assert not [w for w in caught if "SGD" in str(w.message)]
    # Class-IL shares the head: the weights past the limit move, oscillate and blow up.
    config = RunConfig(strategy="ewc", protocol="class", strategy_params={"lam": 1e4},
                       lr=0.1, iterations=3, threads=1, progress=False)  # fmt: skip
    warned = pytest.warns(RuntimeWarning, match="SGD diverged on the penalty")
    with warned, pytest.raises(TrainingError, match="diverged"):
        run(config)
