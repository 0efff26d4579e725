"""GSS and iCaRL: both keep old classes on class-incremental digits, and their parts (gradient
scores, replacement rule, herding, nearest mean of exemplars) match hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgetless import ConfigError, train
from forgetless.data.arrays import ArraySet
from forgetless.learner import Learner
from forgetless.models import build_model
from forgetless.scenarios import make_stream
from forgetless.scenarios.stream import Protocol, Stream, Task
from forgetless.strategies.gss import GSS, gradient_scores, replacements
from forgetless.strategies.icarl import ICaRL, exemplar_means, herding, nearest_mean_scores

# As in test_engine: each task learnt almost perfectly, then overwritten by fine-tuning.
FIT = dict(epochs=10, batch_size=32, lr=0.1, progress=False)


def _train(strategy, protocol="class", model=None):
    stream = make_stream("split-digits", protocol=protocol, seed=0)
    if model is None:
        model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[64, 64], seed=0)
    return train(stream, model, strategy, seed=0, **FIT)


@pytest.fixture(scope="module")
def finetune_acc():
    return _train("finetune").metrics["acc"]


@pytest.mark.slow
def test_gss_keeps_old_classes_in_class_incremental(finetune_acc):
    gss = GSS(buffer_size=200, replay_batch_size=32)
    acc = _train(gss).metrics["acc"]
    # Fine-tuning keeps only the last task (ACC 0.2); GSS reaches about 0.8 here (seeds 0, 1),
    # like reservoir replay with the same buffer.
    assert finetune_acc < 0.25
    assert acc > 0.65
    assert len(gss.buffer) == 200
    assert set(gss.buffer.t.tolist()) == set(range(5))


def test_icarl_keeps_old_classes_in_class_incremental(finetune_acc):
    icarl = ICaRL(buffer_size=200)
    acc = _train(icarl).metrics["acc"]
    # About 0.84 here (seeds 0, 1); with the model's own logits instead of the nearest mean of
    # exemplars, about 0.63.
    assert finetune_acc < 0.25
    assert acc > 0.75
    # K = 200 over 10 classes: 20 exemplars each, in class blocks.
    counts = icarl.exemplar_counts
    assert sorted(counts) == list(range(10)) and set(counts.values()) == {20}
    labels = icarl.memory.y[:200].view(10, 20)
    assert (labels == labels[:, :1]).all()


def _loop_scores(model, x, y, ref_x, ref_y, allowed=None, ref_allowed=None):
    """GSS scores one example at a time with autograd: the slow reference."""

    def flat_grad(xi, yi, mask):
        model.zero_grad()
        out = model(xi.unsqueeze(0))
        if mask is not None:
            out = out.masked_fill(~mask, float("-inf"))
        F.cross_entropy(out, yi.unsqueeze(0)).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    def masks(n, m):
        return [None] * n if m is None else list(m)

    refs = [flat_grad(*a) for a in zip(ref_x, ref_y, masks(len(ref_x), ref_allowed), strict=True)]
    scores = []
    for xi, yi, mask in zip(x, y, masks(len(x), allowed), strict=True):
        g = flat_grad(xi, yi, mask)
        scores.append(max(F.cosine_similarity(g, r, dim=0) for r in refs) + 1)
    return torch.stack(scores)


@pytest.mark.parametrize("masked", [False, True])
def test_gss_scores_match_a_loop_over_examples(masked):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4))
    x, ref_x = torch.randn(6, 3), torch.randn(4, 3)
    y, ref_y = torch.randint(0, 4, (6,)), torch.randint(0, 4, (4,))
    allowed = ref_allowed = None
    if masked:  # task-incremental: two heads of two units each
        heads = torch.tensor([[True, True, False, False], [False, False, True, True]])
        allowed, ref_allowed = heads[y // 2], heads[ref_y // 2]
    fast = gradient_scores(model, x, y, ref_x, ref_y, allowed, ref_allowed)
    slow = _loop_scores(model, x, y, ref_x, ref_y, allowed, ref_allowed)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert ((fast >= 0) & (fast <= 2)).all()
    empty = torch.zeros(0, 3)
    assert torch.equal(gradient_scores(model, x, y, empty, ref_y[:0]), torch.ones(6))


def test_gss_replacement_follows_algorithm_2():
    generator = torch.Generator().manual_seed(0)
    # c >= 1 (within 90 degrees of some reference) never enters a full buffer.
    slots, rows = replacements(torch.ones(5), torch.tensor([1.0, 1.5, 2.0]), generator)
    assert len(slots) == len(rows) == 0
    # A batch's candidates draw distinct slots.
    slots, rows = replacements(torch.ones(5), torch.full((5,), 1e-6), generator)
    assert sorted(slots.tolist()) == list(range(5)) and sorted(rows.tolist()) == list(range(5))
    # P(slot i) = C_i / sum C = 0.25 / 0.75, P(accept) = C_i / (C_i + c) with c = 0.5. The rule
    # "replace if C_i > c" would give 0 / 0.75, always accepting 0.25 / 0.75.
    scores, n = torch.tensor([0.5, 1.5]), 3000
    picks = [replacements(scores, torch.tensor([0.5]), generator)[0].tolist() for _ in range(n)]
    p_slot0 = sum(p == [0] for p in picks) / n
    p_slot1 = sum(p == [1] for p in picks) / n
    assert p_slot0 == pytest.approx(0.25 * 0.5, abs=0.03)
    assert p_slot1 == pytest.approx(0.75 * 0.75, abs=0.03)


def test_herding_picks_the_running_mean_closest_to_the_class_mean():
    # On a line, mean 0. k=1: |f| -> the row nearest the mean, 1. k=2: |(1 + f) / 2| -> -2.
    # k=3: |(-1 + f) / 3| -> 4 (|1| against |-4/3|), then -3. Sorting by distance to the mean
    # would give 1, -2, -3, 4 instead.
    features = torch.tensor([[4.0, 0.0], [1.0, 0.0], [-2.0, 0.0], [-3.0, 0.0]])
    assert herding(features, 4).tolist() == [1, 2, 0, 3]
    assert herding(features, 2).tolist() == [1, 2]
    assert herding(features, 0).tolist() == []


def test_nearest_mean_of_exemplars_matches_a_hand_computation():
    # Class 0 exemplars (3, 4), (0, 2) -> normalised mean (1, 3)/sqrt(10); class 1 exemplars
    # (1, 0), (4, -3) -> (3, -1)/sqrt(10). Unit 2 belongs to a later task.
    train_set = ArraySet(
        torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [4.0, -3.0]]), torch.tensor([0, 1, 0, 1])
    )
    later = ArraySet(torch.tensor([[1.0, 1.0]]), torch.tensor([2]))
    tasks = (
        Task("classes 0, 1", train_set, train_set, (0, 1), ("0", "1")),
        Task("class 2", later, later, (2,), ("2",)),
    )
    stream = Stream("hand-made", tasks, Protocol.CLASS, num_outputs=3, seed=0)
    model = nn.Linear(2, 3)
    learner = Learner(
        model,
        stream,
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        torch.device("cpu"),
        torch.Generator(),
    )
    seen = []

    def identity(model, x):
        seen.append(len(x))
        return x

    icarl = ICaRL(buffer_size=4, feature_extractor=identity)
    icarl.before_task(learner, tasks[0])
    icarl.after_task(learner, tasks[0])
    assert icarl.exemplar_counts == {0: 2, 1: 2}
    seen.clear()
    queries = torch.tensor([[1.0, 1.0], [2.0, -1.0]])
    scores = icarl.predict(learner, queries, 0)
    # Unit vectors: ||q - mu||^2 = 2 - 2 cos(q, mu).
    # (1, 1): cos 4/sqrt(20) with class 0, 2/sqrt(20) with class 1.
    # (2, -1): cos -1/sqrt(50) with class 0, 7/sqrt(50) with class 1.
    expected = -torch.tensor(
        [
            [math.sqrt(2 - 8 / math.sqrt(20)), math.sqrt(2 - 4 / math.sqrt(20))],
            [math.sqrt(2 + 2 / math.sqrt(50)), math.sqrt(2 - 14 / math.sqrt(50))],
        ]
    )
    assert torch.allclose(scores[:, :2], expected, atol=1e-5)
    assert torch.isinf(scores[:, 2]).all()
    assert scores.argmax(1).tolist() == [0, 1]
    # The class means were computed after the task: predicting featurises only the queries.
    assert seen == [2]
    # The module functions give the same.
    means = exemplar_means(torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0], [4.0, -3.0]]), [2, 2])
    assert torch.allclose(means * math.sqrt(10), torch.tensor([[1.0, 3.0], [3.0, -1.0]]))
    assert torch.allclose(nearest_mean_scores(F.normalize(queries, dim=1), means), expected)


def test_icarl_refuses_task_incremental_streams():
    with pytest.raises(ConfigError, match="'icarl' supports the class protocol"):
        _train(ICaRL(buffer_size=200), protocol="task")


class TwoPart(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x))


def test_icarl_needs_features_it_can_find():
    with pytest.raises(ConfigError, match="TwoPart is not one: pass feature_extractor"):
        _train(ICaRL(buffer_size=200), model=TwoPart())
    with pytest.raises(ConfigError, match=r"buffer_size must be >= the stream's number of classes"):
        _train(ICaRL(buffer_size=5))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: GSS(buffer_size=0), "buffer_size must be a positive integer"),
        (lambda: GSS(n_reference=-1), "n_reference must be a positive integer"),
        (lambda: GSS(replay_batch_size=1.5), "replay_batch_size must be a positive integer"),
        (lambda: ICaRL(buffer_size=0), "buffer_size must be a positive integer"),
        (lambda: ICaRL(buffer_size="many"), "buffer_size must be a positive integer"),
        (lambda: ICaRL(feature_extractor=3), "feature_extractor must be a callable"),
    ],
)
def test_invalid_parameters_are_named(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
