"""iCaRL's options for the DER authors' implementation (Mammoth): the loss averaged over the
seen classes, and raw (not L2-normalised) features for herding and the nearest mean."""

import math

import pytest
import torch
from torch import nn

from forgetless import ConfigError, train
from forgetless.data.arrays import ArraySet
from forgetless.learner import Learner
from forgetless.models import build_model
from forgetless.scenarios import make_stream
from forgetless.scenarios.stream import Protocol, Stream, Task
from forgetless.strategies import make_strategies
from forgetless.strategies.icarl import ICaRL, exemplar_means


def _learner(stream, model):
    return Learner(
        model,
        stream,
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        torch.device("cpu"),
        torch.Generator(),
    )


def _hand_stream():
    # Class 0 exemplars (3, 4), (0, 2); class 1 exemplars (1, 0), (4, -3); class 2 comes later.
    first = ArraySet(
        torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [4.0, -3.0]]), torch.tensor([0, 1, 0, 1])
    )
    later = ArraySet(torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([2, 2]))
    tasks = (
        Task("classes 0, 1", first, first, (0, 1), ("0", "1")),
        Task("class 2", later, later, (2,), ("2",)),
    )
    return Stream("hand-made", tasks, Protocol.CLASS, num_outputs=3, seed=0)


def test_mean_reduction_is_the_sum_over_seen_classes_divided_by_their_number():
    stream = _hand_stream()
    torch.manual_seed(0)
    model = nn.Linear(2, 3)
    learner = _learner(stream, model)
    x, y = stream.tasks[0].train.x, stream.tasks[0].train.y
    losses = {}
    for reduction in ("sum", "mean"):
        icarl = ICaRL(buffer_size=4, feature_extractor=lambda m, x: x, loss_reduction=reduction)
        icarl.before_task(learner, stream.tasks[0])
        # Zero logits: every binary term is log 2; two seen classes.
        zero = icarl.loss(learner, x, y, torch.zeros(4), torch.zeros(4, 3))
        assert zero.item() == pytest.approx((2 if reduction == "sum" else 1) * math.log(2))
        losses[reduction] = icarl.loss(learner, x, y, torch.zeros(4), model(x))
    assert losses["mean"].item() == pytest.approx(losses["sum"].item() / 2, rel=1e-6)

    # Second task: three seen units (two distilled from the old model, one new), so the
    # gradient of the mean is exactly a third of the gradient of the sum.
    learner.task_index = 1
    grads = {}
    for reduction in ("sum", "mean"):
        icarl = ICaRL(buffer_size=4, feature_extractor=lambda m, x: x, loss_reduction=reduction)
        icarl.before_task(learner, stream.tasks[1])
        model.zero_grad()
        icarl.loss(learner, x, y, torch.ones(4), model(x)).backward()
        grads[reduction] = model.weight.grad.clone()
    assert grads["sum"].abs().sum() > 0
    assert torch.allclose(grads["mean"] * 3, grads["sum"], atol=1e-6)


def test_raw_features_give_plain_class_means_and_euclidean_nearest_mean():
    stream = _hand_stream()
    learner = _learner(stream, nn.Linear(2, 3))
    icarl = ICaRL(buffer_size=4, feature_extractor=lambda m, x: x, normalize=False)
    icarl.before_task(learner, stream.tasks[0])
    icarl.after_task(learner, stream.tasks[0])
    # Plain means: class 0 (1.5, 3), class 1 (2.5, -1.5).
    assert torch.allclose(icarl._means, torch.tensor([[1.5, 3.0], [2.5, -1.5]]))
    scores = icarl.predict(learner, torch.tensor([[1.0, 1.0], [2.0, -1.0]]), 0)
    expected = -torch.tensor(
        [[math.sqrt(0.25 + 4), math.sqrt(2.25 + 6.25)], [math.sqrt(0.25 + 16), math.sqrt(0.5)]]
    )
    assert torch.allclose(scores[:, :2], expected, atol=1e-5)
    assert torch.isinf(scores[:, 2]).all()
    # The normalised means (the default) are unit vectors, unlike these.
    means = exemplar_means(torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0], [4.0, -3.0]]), [2, 2])
    assert torch.allclose(means.norm(dim=1), torch.ones(2))


def test_authors_variant_learns_digits_and_is_reachable_by_name():
    stream = make_stream("split-digits", protocol="class", seed=0)
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[64, 64], seed=0)
    (icarl,) = make_strategies(
        "icarl", {"buffer_size": "200", "loss_reduction": "mean", "normalize": "false"}
    )
    assert (icarl.loss_reduction, icarl.normalize) == ("mean", False)
    result = train(stream, model, icarl, seed=0, epochs=10, batch_size=32, lr=0.1, progress=False)
    # Fine-tuning keeps only the last task here (ACC 0.2); this variant keeps most of the rest.
    assert result.metrics["acc"] > 0.6
    assert sorted(icarl.exemplar_counts) == list(range(10))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss_reduction": "avg"}, "loss_reduction must be one of sum, mean"),
        ({"normalize": "yes"}, "normalize must be True"),
    ],
)
def test_invalid_options_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ICaRL(buffer_size=10, **kwargs)
