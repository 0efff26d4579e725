"""The Python API speaks PyTorch: optimiser classes and factories, a loss callable, a
learning-rate schedule, a torch.Generator as the seed, tasks as Datasets, a clear device error."""

import copy
import functools

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import forgetless
from forgetless import ConfigError
from forgetless.models import build_model
from forgetless.scenarios import make_stream

STREAM = make_stream("split-digits", seed=0, protocol="task")[:2]
FIT = dict(epochs=5, batch_size=32, progress=False, threads=1)
ADAM = dict(optimizer="adam", lr=1e-3, **FIT)


def _model():
    return build_model("mlp", STREAM.input_shape, STREAM.num_outputs, hidden=[32], seed=0)


def test_an_optimiser_by_class_factory_or_name_is_the_same_optimiser():
    by_name = forgetless.train(STREAM, _model(), optimizer="adamw", **FIT)
    by_class = forgetless.train(STREAM, _model(), optimizer=torch.optim.AdamW, **FIT)
    assert by_class.accuracy_matrix == by_name.accuracy_matrix
    assert by_class.metrics["learning_accuracy"] > 0.9  # it learns
    assert by_class.config["fit"]["optimizer"] == "torch.optim.adamw.AdamW"
    # keyword arguments go to the optimiser: weight decay changes the numbers
    decayed = forgetless.train(
        STREAM, _model(), optimizer=torch.optim.AdamW, optimizer_options={"weight_decay": 50.0},
        **FIT,
    )  # fmt: skip
    assert decayed.losses != by_class.losses
    # a factory with its own arguments
    sgd = functools.partial(torch.optim.SGD, momentum=0.9)
    result = forgetless.train(STREAM, _model(), optimizer=sgd, **{**FIT, "lr": 0.05})
    assert result.metrics["learning_accuracy"] > 0.9
    with pytest.raises(ConfigError, match="could not be built"):
        forgetless.train(STREAM, _model(), optimizer=lambda: None, **FIT)
    with pytest.raises(ConfigError, match="or an optimiser class"):
        forgetless.FitConfig(optimizer="lbfgs")


def test_a_loss_callable_replaces_cross_entropy():
    calls = []

    def shifted(logits, y):  # the same gradient as cross-entropy, one more in value
        calls.append(len(y))
        return torch.nn.functional.cross_entropy(logits, y) + 1.0

    plain = forgetless.train(STREAM, _model(), **ADAM)
    result = forgetless.train(STREAM, _model(), loss=shifted, **ADAM)
    assert sum(calls) == 5 * sum(len(t.train) for t in STREAM)  # every example, every epoch
    assert result.accuracy_matrix == plain.accuracy_matrix  # the same steps...
    for mine, theirs in zip(result.losses, plain.losses, strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"] + 1.0)  # ...under the given loss
    assert result.metrics["learning_accuracy"] > 0.9
    module = forgetless.train(STREAM, _model(), loss=torch.nn.CrossEntropyLoss(), **ADAM)
    assert module.accuracy_matrix == plain.accuracy_matrix  # a loss module works too


def test_a_learning_rate_schedule_runs_every_step():
    with pytest.warns(RuntimeWarning, match="barely learned"):
        frozen = forgetless.train(
            STREAM, _model(), scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.0),
            **ADAM,
        )  # fmt: skip
    # a zero rate from the first step: nothing is learnt, each row is the untrained model's
    assert frozen.accuracy_matrix[-1] == frozen.baseline
    cosine = forgetless.train(
        STREAM, _model(), scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, 40),
        **ADAM,
    )  # fmt: skip
    assert cosine.metrics["learning_accuracy"] > 0.9
    assert cosine.config["fit"]["scheduler"].endswith("<lambda>")


def test_a_generator_seeds_a_run():
    first = forgetless.train(STREAM, _model(), seed=torch.Generator().manual_seed(5), **ADAM)
    again = forgetless.train(STREAM, _model(), seed=torch.Generator().manual_seed(5), **ADAM)
    other = forgetless.train(STREAM, _model(), seed=torch.Generator().manual_seed(6), **ADAM)
    assert first.losses == again.losses and first.losses != other.losses
    assert isinstance(first.seed, int)


def test_tasks_are_datasets():
    train = STREAM[0].train
    assert isinstance(train, Dataset)
    x, y = train[0]
    assert x.dtype == torch.float32 and x.shape == STREAM.input_shape and 0 <= x.max() <= 1
    assert int(y) in STREAM[0].units
    batches = list(DataLoader(train, batch_size=64))
    assert sum(len(b[1]) for b in batches) == len(train)
    xb, yb = batches[0]
    assert torch.equal(xb, train.inputs(torch.arange(64))) and torch.equal(yb, train.y[:64])
    assert train[0][0].data_ptr() != train.x.data_ptr()  # never scaled in place


def test_data_moves_to_the_device_once():
    data = STREAM[0].train
    assert data.to("cpu") is data  # already there: no copy
    moved = data.to("meta")  # a device without a GPU: the whole set moves, as it would to one
    assert moved.x.device.type == "meta" and moved.y.device.type == "meta"
    assert moved.scale == data.scale


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_cpu_build_is_a_clear_error():
    model = copy.deepcopy(_model())
    with pytest.raises(ConfigError, match="not available: this torch was built without CUDA"):
        forgetless.train(STREAM, model, device="cuda", **FIT)
