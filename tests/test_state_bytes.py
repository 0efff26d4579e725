"""What a strategy holds in memory, as the Result reports it."""

from __future__ import annotations

import pytest

from forgetless.buffer import MemoryBuffer
from forgetless.experiment import run
from forgetless.models import build_model
from forgetless.scenarios import make_stream

# Memory is measured after 2 steps a task: that the model barely learns is the point, not news.
pytestmark = pytest.mark.filterwarnings("ignore:the model barely learned:RuntimeWarning")


def _weights_bytes() -> int:
    stream = make_stream("split-digits", seed=0)
    model = build_model("mlp", stream.input_shape, stream.num_outputs, None)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _state(strategy: str, n_tasks: int, **params) -> int:
    result = run(
        scenario="split-digits",
        protocol="task",
        n_tasks=n_tasks,
        strategy=strategy,
        strategy_params=params,
        iterations=2,
        threads=1,
    )
    return result.strategy_state_bytes


@pytest.mark.parametrize(
    ("strategy", "copies"),
    # importance + anchor (SI's path integral lives only while a task trains); LwF one old model.
    [("ewc", 2), ("online-ewc", 2), ("mas", 2), ("l2", 2), ("si", 2), ("lwf", 1), ("finetune", 0)],
)
def test_state_is_copies_of_the_weights_whatever_the_number_of_tasks(strategy, copies):
    weights = _weights_bytes()
    assert [_state(strategy, n) for n in (2, 4)] == [copies * weights] * 2


def test_replay_state_is_its_buffer_exactly():
    stream = make_stream("split-digits", seed=0)
    expected = MemoryBuffer(50, stream.input_shape).nbytes
    assert _state("replay", 3, buffer_size=50) == expected
