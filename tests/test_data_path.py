"""Evaluation converts each test set to model inputs once per run (under a memory cap), with the
numbers of converting every batch; a set moved to another device keeps its standardisation."""

import pytest
import torch

import forgetless.engine as engine
from forgetless import FitConfig, train
from forgetless.data.arrays import ArraySet
from forgetless.models import build_model
from forgetless.scenarios import make_stream
from forgetless.strategies.base import Strategy


class ShiftsInputs(Strategy):
    """Answers on the inputs plus one, adding it to the evaluated batch in place: with test
    inputs converted once and reused, the second evaluation would see them shifted by two."""

    name = "shifts-inputs"

    def predict(self, learner, x, t):
        return learner.logits(x.add_(1.0), t)


def run(stream, strategy, **fit):
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [32], seed=0)
    options = dict(epochs=3, batch_size=32, lr=0.1, progress=False, eval_batch_size=100)
    result = train(stream, model, strategy, fit=FitConfig(**{**options, **fit}), seed=1)
    return result, model


def numbers(result):
    return result.baseline, result.accuracy_matrix, result.task_aware_matrix, result.losses


@pytest.mark.filterwarnings("ignore:the model barely learned")  # shifted inputs answer badly
@pytest.mark.parametrize(
    "strategy",
    ["finetune", "replay", lambda: [ShiftsInputs()]],
    ids=["finetune", "replay", "in-place"],
)
@pytest.mark.parametrize("standardize", [False, True])
def test_test_inputs_converted_once_give_the_numbers_of_converting_each_batch(
    monkeypatch, strategy, standardize
):
    stream = make_stream("split-digits", seed=0)
    if standardize:
        stream = make_stream("split-digits", seed=0, standardize="train")
    assert stream.tasks[0].test.x.dtype == torch.uint8  # stored compactly: a conversion to do
    make = strategy if callable(strategy) else lambda: strategy
    once, once_model = run(stream, make())
    monkeypatch.setattr(engine, "EVAL_INPUT_BYTES", 0)  # every batch converted, as before
    each, each_model = run(stream, make())
    assert numbers(once) == numbers(each)
    for a, b in zip(
        once_model.state_dict().values(), each_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_the_last_row_is_a_bare_evaluation_of_the_final_model():
    stream = make_stream("split-digits", seed=0)
    result, model = run(stream, "finetune")
    model.eval()
    with torch.no_grad():
        bare = [
            float((model(t.test[:][0]).argmax(-1) == t.test.y).double().mean())
            for t in stream.tasks
        ]
    assert result.accuracy_matrix[-1] == pytest.approx(bare, abs=1e-12)
    assert min(result.accuracy_matrix[i][i] for i in range(len(stream))) > 0.6  # it learnt


def test_the_cap_bounds_the_converted_test_inputs(monkeypatch):
    stream = make_stream("split-digits", seed=0)
    sizes = [t.test.x.numel() * 4 for t in stream.tasks]
    monkeypatch.setattr(engine, "EVAL_INPUT_BYTES", sizes[0] + sizes[1])
    kept = []
    original = engine._Loop.evaluate

    def spy(self):
        out = original(self)
        kept.append(({j: t.x.dtype for j, t in self._tests.items()}, self._test_bytes))
        return out

    monkeypatch.setattr(engine._Loop, "evaluate", spy)
    run(stream, "finetune")
    converted, used = kept[-1]
    assert [j for j, dtype in converted.items() if dtype == torch.float32] == [0, 1]
    assert all(converted[j] == torch.uint8 for j in range(2, len(stream)))
    assert used == sizes[0] + sizes[1]


def test_a_set_moved_to_another_device_keeps_its_standardisation():
    data = ArraySet(torch.arange(12, dtype=torch.uint8).reshape(3, 4), torch.zeros(3), 1 / 255)
    standard = data.standardized(0.1307, 0.3081)
    moved = standard.to("meta")  # another device: a new set, not the same one
    assert moved is not standard
    assert (moved.scale, moved.shift) == (standard.scale, standard.shift)
