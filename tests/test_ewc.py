"""EWC and online EWC: every Fisher kind matches its definition computed the slow way, strength
zero is exactly fine-tuning, both hold on to old tasks where fine-tuning forgets, and online
EWC's memory does not grow with the number of tasks."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgetless import ConfigError, train
from forgetless.fisher import diagonal_fisher
from forgetless.learner import Learner
from forgetless.models import build_model
from forgetless.scenarios import make_stream
from forgetless.strategies.base import Strategy
from forgetless.strategies.ewc import EWC, OnlineEWC

# Task-IL split digits trained hard (Adam at 3e-3, 10 epochs per task): fine-tuning loses 10-20
# points on earlier tasks (BWT -0.10 to -0.20 over seeds 0-3); EWC and online EWC at lam = 1e3
# keep BWT above -0.025 and gain 5-12 points of ACC on each of those seeds.
HARD = dict(
    epochs=10, batch_size=32, optimizer="adam", lr=0.003, retain_raw_data=False, progress=False
)


def _train(strategy, tasks=5, **fit):
    stream = make_stream("split-digits", seed=0, protocol="task")[:tasks]
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[64, 64], seed=0)
    return train(stream, model, strategy, seed=0, **{**HARD, **fit})


# --- the Fisher information against slow references: one example, one class at a time -----


def _small_cnn() -> nn.Module:
    # Convolution (per-example gradients through vmap) and linear layers (the closed form).
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(72, 12),
        nn.Tanh(),
        nn.Linear(12, 10),
    ).double()


def _small_mlp() -> nn.Module:
    return build_model("mlp", (1, 8, 8), 10, hidden=[16, 12], seed=0).double()


@pytest.fixture(scope="module")
def digits():
    """40 digits of the third task of task-IL split digits, its learner (mask) and labels."""
    stream = make_stream("split-digits", seed=0, protocol="task")
    task = stream.tasks[2]
    return stream, task, task.train.inputs(slice(0, 40)).double(), task.train.y[:40]


def _learner(model, stream):
    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=0.1)  # noqa: E731
    learner = Learner(model, stream, sgd, torch.device("cpu"), torch.Generator().manual_seed(0))
    learner.task_index = 2
    return learner


def _per_class_loop(learner, x, weights_and_classes):
    """(1/N) sum_n sum_c w_nc (d log p(c|x_n)/d theta)^2, one autograd call per (n, c), with the
    learner's task-IL masking (-inf outside the task's units)."""
    params = [p for p in learner.model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for n in range(len(x)):
        log_p = torch.log_softmax(learner.logits(x[n : n + 1], learner.task_index)[0], -1)
        for weight, c in weights_and_classes(n, log_p.detach().exp()):
            grads = torch.autograd.grad(log_p[c], params, retain_graph=True)
            for t, g in zip(total, grads, strict=True):
                t += weight * g**2
    return [t / len(x) for t in total]


@pytest.mark.parametrize("make_model", [_small_mlp, _small_cnn], ids=["mlp", "cnn"])
@pytest.mark.parametrize("method", ["auto", "vmap"])
def test_exact_fisher_equals_the_per_example_per_class_loop(digits, make_model, method):
    stream, task, x, _ = digits
    learner = _learner(make_model(), stream)
    units = learner.output_mask[2]
    expected = _per_class_loop(learner, x, lambda n, p: [(p[c], c) for c in task.units])
    got = diagonal_fisher(learner.model, x, units=units, kind="exact", method=method, chunk_size=7)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-12)
    # The same with unit indices instead of a mask, and over all ten outputs (class-IL).
    again = diagonal_fisher(learner.model, x, units=task.units, method=method)
    torch.testing.assert_close(again, expected, rtol=1e-5, atol=1e-12)
    learner.output_mask = None
    everything = _per_class_loop(learner, x, lambda n, p: [(p[c], c) for c in range(10)])
    torch.testing.assert_close(
        diagonal_fisher(learner.model, x, method=method), everything, rtol=1e-5, atol=1e-12
    )


@pytest.mark.parametrize("make_model", [_small_mlp, _small_cnn], ids=["mlp", "cnn"])
def test_empirical_and_sampled_fisher_equal_their_loops(digits, make_model):
    stream, task, x, y = digits
    learner = _learner(make_model(), stream)
    units = learner.output_mask[2]
    empirical = _per_class_loop(learner, x, lambda n, p: [(1.0, y[n])])
    weighted = _per_class_loop(learner, x, lambda n, p: [(p[y[n]], y[n])])
    for method in ("auto", "vmap"):
        got = diagonal_fisher(learner.model, x, y, units, "empirical", method=method, chunk_size=9)
        torch.testing.assert_close(got, empirical, rtol=1e-5, atol=1e-12)
        got = diagonal_fisher(learner.model, x, y, units, "weighted-empirical", method=method)
        torch.testing.assert_close(got, weighted, rtol=1e-5, atol=1e-12)

    # The documented draws: 25 of the 40 examples (a permutation), then one uniform each; the
    # label is the first of the task's units whose cumulative probability reaches it.
    generator = torch.Generator().manual_seed(7)
    rows = torch.randperm(len(x), generator=generator)[:25]
    u = torch.rand(25, generator=generator)
    with torch.no_grad():
        p = learner.logits(x[rows], 2)[:, list(task.units)].softmax(-1)
    labels = [task.units[i] for i in (p.cumsum(-1) < u[:, None]).sum(-1).tolist()]
    assert len(set(labels)) == 2  # both classes drawn: the check is not vacuous
    sampled = _per_class_loop(learner, x[rows], lambda n, p: [(1.0, labels[n])])
    for method in ("auto", "vmap"):
        got = diagonal_fisher(
            learner.model, x, None, units, "sample", n_samples=25,
            generator=torch.Generator().manual_seed(7), method=method,
        )  # fmt: skip
        torch.testing.assert_close(got, sampled, rtol=1e-5, atol=1e-12)


def test_batched_fisher_is_the_mean_of_squared_mini_batch_gradients(digits):
    stream, task, x, y = digits
    learner = _learner(_small_cnn(), stream)
    params = list(learner.model.parameters())
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))[:30]
    expected = [torch.zeros_like(p) for p in params]
    batches = rows.split(8)  # 8, 8, 8, 6
    for batch in batches:
        loss = F.cross_entropy(learner.logits(x[batch], 2), y[batch])
        for e, g in zip(expected, torch.autograd.grad(loss, params), strict=True):
            e += g**2 / len(batches)
    got = diagonal_fisher(
        learner.model, x, y, task.units, "batched", n_samples=30, batch_size=8,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-12)


def test_fisher_leaves_the_model_as_it_was_and_falls_back_for_reused_layers():
    class Reused(nn.Module):  # one linear layer applied twice: the closed form does not apply
        def __init__(self):
            super().__init__()
            self.inner, self.out = nn.Linear(6, 6), nn.Linear(6, 3)
            self.dropout = nn.Dropout(0.5)

        def forward(self, x):
            return self.out(self.dropout(torch.tanh(self.inner(torch.tanh(self.inner(x))))))

    torch.manual_seed(0)
    model = Reused().double().train()
    x = torch.randn(12, 6, dtype=torch.double)
    auto = diagonal_fisher(model, x, chunk_size=5)
    vmapped = diagonal_fisher(model, x, method="vmap")
    assert model.training and all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(auto, vmapped, rtol=1e-10, atol=0)
    assert [f.shape for f in auto] == [p.shape for p in model.parameters()]
    model.inner.bias.requires_grad_(False)
    assert len(diagonal_fisher(model, x)) == 3


@pytest.fixture(scope="module")
def trained_mlp():
    """The float32 MLP as built (so the Fisher takes its hand-written forms), trained on
    class-IL split digits, and the second task's training set."""
    stream = make_stream("split-digits", seed=0)
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[32, 24], seed=0)
    train(stream[:2], model, "finetune", seed=0, epochs=2, batch_size=16, lr=0.1, progress=False)
    task = stream.tasks[1]
    return model, task, task.train.inputs(), task.train.y


def _with_hook(model, compute):
    """``compute()`` with a no-op forward hook on the model: it is then no longer the MLP as
    built, and the Fisher takes its autograd forms (the reference)."""
    handle = model[1].register_forward_hook(lambda *args: None)
    try:
        return compute()
    finally:
        handle.remove()


@pytest.mark.parametrize("units", ["all", "task"])
@pytest.mark.parametrize("kind", ["batched", "exact", "sample", "empirical", "weighted-empirical"])
def test_the_plain_mlps_fisher_without_autograd_gives_the_autograd_forms_bits(
    trained_mlp, kind, units
):
    model, task, x, y = trained_mlp
    chosen = None if units == "all" else task.units

    def fisher(method="auto"):
        return diagonal_fisher(
            model, x, y, chosen, kind, n_samples=300, batch_size=32, chunk_size=100,
            generator=torch.Generator().manual_seed(5), method=method,
        )  # fmt: skip

    hand = fisher()
    assert all(p.grad is None for p in model.parameters())
    reference = _with_hook(model, fisher)
    assert all(torch.equal(a, b) for a, b in zip(hand, reference, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(hand, fisher(), strict=True))  # same seed
    assert min(float(f.max()) for f in hand) > 0  # every layer reached: not vacuous
    if kind != "batched":  # per-example torch.func, a float rounding apart
        vmapped = fisher(method="vmap")
        torch.testing.assert_close(hand, vmapped, rtol=1e-4, atol=1e-4 * float(vmapped[0].max()))
    else:  # method="vmap" is autograd's mini-batch gradient
        assert all(torch.equal(a, b) for a, b in zip(hand, fisher("vmap"), strict=True))


def test_the_plain_mlps_mas_importance_without_autograd_gives_the_autograd_forms_bits(
    trained_mlp,
):
    from forgetless.fisher import output_sensitivity

    model, task, x, _ = trained_mlp
    for units in (None, task.units):
        hand = output_sensitivity(model, x, units=units, chunk_size=100)
        reference = _with_hook(
            model,
            lambda: output_sensitivity(model, x, units=units, chunk_size=100),  # noqa: B023
        )
        assert all(torch.equal(a, b) for a, b in zip(hand, reference, strict=True))
        vmapped = output_sensitivity(model, x[:200], units=units, method="vmap")
        torch.testing.assert_close(
            output_sensitivity(model, x[:200], units=units), vmapped, rtol=1e-4, atol=1e-6
        )


# --- EWC in training -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetune():
    return _train("finetune")


@pytest.mark.parametrize(
    "strategy", [EWC(lam=0.0), OnlineEWC(lam=0.0, fisher="sample", fisher_samples=50)], ids=repr
)
def test_strength_zero_is_finetuning(finetune, strategy):
    result = _train(strategy)
    assert result.accuracy_matrix == finetune.accuracy_matrix
    assert result.losses == finetune.losses


@pytest.mark.parametrize("strategy", [EWC(lam=1e3), OnlineEWC(lam=1e3, gamma=1.0)], ids=repr)
def test_ewc_reduces_forgetting(finetune, strategy):
    base = finetune.metrics
    assert base["bwt"] < -0.15, "the setting must make fine-tuning forget"
    m = _train(copy.deepcopy(strategy)).metrics  # retain_raw_data=False: EWC keeps no inputs
    assert m["bwt"] > base["bwt"] + 0.15 and m["bwt"] > -0.05, (m, base)
    assert m["acc"] > base["acc"] + 0.08, (m, base)


class _StateBytes(Strategy):
    name = "state-bytes"

    def __init__(self, watched):
        self.watched, self.sizes = watched, []

    def after_task(self, learner, task):
        self.sizes.append(self.watched.state_bytes())


@pytest.mark.filterwarnings("ignore:the model barely learned:RuntimeWarning")  # 2 steps: on purpose
def test_state_is_two_copies_of_the_weights_whatever_the_number_of_tasks():
    stream = make_stream("split-digits", seed=0, protocol="task")
    sizes = {}
    for strategy in (EWC(lam=1.0), OnlineEWC(lam=1.0, gamma=0.9)):
        model = build_model("mlp", stream.input_shape, 10, hidden=[16], seed=0)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        recorder = _StateBytes(strategy)
        train(stream, model, [strategy, recorder], iterations=2, progress=False)
        sizes[strategy.name] = [s / weights for s in recorder.sizes]
    # One importance and one centre: per-task terms are folded into the merged quadratic.
    assert sizes == {"ewc": [2] * 5, "online-ewc": [2] * 5}


class _RecordingEWC(EWC):
    """EWC that also keeps each task's (Fisher, anchor), for checking the merged penalty."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.terms = []

    def importance(self, learner, task):
        fisher = super().importance(learner, task)
        anchor = [p.detach().clone() for p in learner.model.parameters()]
        self.terms.append(([f.clone() for f in fisher], anchor))
        return fisher


def test_penalty_is_the_sum_of_the_per_task_penalties():
    stream = make_stream("split-digits", seed=0, protocol="task")[:3]
    model = build_model("mlp", stream.input_shape, 10, hidden=[16], seed=0)
    ewc, online = _RecordingEWC(lam=5.0), OnlineEWC(lam=5.0, gamma=0.5)
    train(stream, model, [ewc, online], iterations=3, lr=0.5, progress=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    params = list(model.parameters())
    learner = _learner(model, stream)
    (f0, _), (f1, _), (f2, last_anchor) = ewc.terms
    torch.testing.assert_close(online.center, last_anchor)
    running = [0.25 * x + 0.5 * y + z for x, y, z in zip(f0, f1, f2, strict=True)]
    torch.testing.assert_close(online.importance_sum, running)
    for strategy, terms in ((ewc, ewc.terms), (online, [(running, last_anchor)])):
        expected = 2.5 * sum(
            (f * (p - a) ** 2).sum()
            for fs, anchors in terms
            for p, f, a in zip(params, fs, anchors, strict=True)
        )
        got = strategy.penalty(learner, None, None, None, None)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(
            torch.autograd.grad(got, params), torch.autograd.grad(expected, params)
        )


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: EWC(lam=-1.0), r"lam must be in \[0, inf\), got -1"),
        (lambda: OnlineEWC(lam=float("nan")), r"lam must be in \[0, inf\)"),
        (lambda: EWC(lam="strong"), "lam must be a number, got 'strong'"),
        (lambda: OnlineEWC(gamma=0.0), r"gamma must be in \(0, 1\], got 0"),
        (lambda: OnlineEWC(gamma=1.5), r"gamma must be in \(0, 1\], got 1.5"),
        (
            lambda: EWC(fisher="diagonal"),
            "fisher must be one of auto, exact, sample, empirical, weighted-empirical, batched",
        ),
        (lambda: OnlineEWC(fisher_samples=0), r"fisher_samples must be None .* \[1, inf\), got 0"),
        (lambda: EWC(fisher_samples=-5), r"fisher_samples must be None .* \[1, inf\), got -5"),
        (lambda: EWC(fisher_samples=2.5), r"fisher_samples must be None .* \[1, inf\), got 2.5"),
        (lambda: EWC(fisher_samples=True), r"fisher_samples must be None .*, got True"),
    ],
)
def test_invalid_parameters_are_clear_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_parameters_as_given_and_from_the_command_line():
    assert EWC(lam=10.0, fisher="sample").params() == {
        "lam": 10.0,
        "fisher": "sample",
        "fisher_samples": None,
    }
    online = OnlineEWC(lam="1e5", fisher_samples="200", gamma="0.9")  # CLI values are strings
    assert online.params() == {
        "lam": 1e5,
        "fisher": "auto",
        "fisher_samples": 200,
        "gamma": 0.9,
    }
    assert repr(online).startswith("OnlineEWC(lam=100000.0")
    with pytest.raises(ConfigError, match="fisher kind must be one of"):
        diagonal_fisher(nn.Linear(2, 2), torch.zeros(1, 2), kind="fancy")


def test_fisher_reads_stored_images_a_chunk_at_a_time_with_the_same_result():
    stream = make_stream("split-digits", seed=0, protocol="task")
    task = stream.tasks[0]
    model = build_model("mlp", stream.input_shape, 10, hidden=[16], seed=0)
    view = task.train.lazy_inputs
    assert len(view) == len(task.train)
    torch.testing.assert_close(view[3:9], task.train.inputs(slice(3, 9)))
    for kind in ("exact", "empirical"):
        whole = diagonal_fisher(model, task.train.inputs(), task.train.y, task.units, kind=kind)
        lazy = diagonal_fisher(model, view, task.train.y, task.units, kind=kind, chunk_size=64)
        torch.testing.assert_close(lazy, whole)
