"""GSS's two gates: the paper's per-example rule and the authors' code's batch rule
(``GSS(gate="batch")``), on hand-built gradients whose angles are known exactly."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgetless import ConfigError
from forgetless.data.arrays import ArraySet
from forgetless.learner import Learner
from forgetless.scenarios.stream import Protocol, Stream, Task
from forgetless.strategies.gss import (
    FIRST_BATCH_SCORE,
    GSS,
    gradient_scores,
    replacements,
    sequential_replacements,
)


def _learner():
    """A 2-class linear model with zero weights: the cross-entropy gradient of ``(x, y)`` is
    ``(softmax - e_y) x^T = (+-0.5, -+0.5) x^T`` (and the same for the bias), so two examples
    at the same ``x`` with different classes have exactly opposite gradients (cos = -1) and
    two of the same class the same one (cos = 1)."""
    data = ArraySet(torch.tensor([[1.0, 2.0], [1.0, 2.0]]), torch.tensor([0, 1]))
    task = Task("classes 0, 1", data, data, (0, 1), ("0", "1"))
    stream = Stream("hand-made", (task,), Protocol.CLASS, num_outputs=2, seed=0)
    model = nn.Linear(2, 2)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    learner = Learner(
        model,
        stream,
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        torch.device("cpu"),
        torch.Generator().manual_seed(0),
    )
    return learner, task


def _offer(gss, learner, labels):
    """One step's incoming batch (all at x = (1, 2)) offered to the buffer, without training."""
    y = torch.tensor(labels)
    x, t = torch.tensor([[1.0, 2.0]]).expand(len(y), 2).clone(), torch.zeros(len(y), dtype=int)
    gss.batch(learner, x, y, t)
    gss.after_step(learner, x, y, t, None)


def test_batch_score_is_the_mean_loss_gradient_against_each_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4))
    x, ref_x = torch.randn(6, 3), torch.randn(4, 3)
    y, ref_y = torch.randint(0, 4, (6,)), torch.randint(0, 4, (4,))

    def flat_grad(inputs, targets):
        model.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()  # mean over the rows
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    g_batch = flat_grad(x, y)
    refs = [flat_grad(ref_x[j : j + 1], ref_y[j : j + 1]) for j in range(4)]
    expected = max(F.cosine_similarity(g_batch, r, dim=0) for r in refs) + 1
    scores, c_batch = gradient_scores(model, x, y, ref_x, ref_y, with_batch=True)
    assert c_batch.item() == pytest.approx(expected.item(), abs=1e-5)
    assert torch.allclose(scores, gradient_scores(model, x, y, ref_x, ref_y))
    _, empty = gradient_scores(model, x, y, ref_x[:0], ref_y[:0], with_batch=True)
    assert empty.item() == 1.0


def test_batch_gate_decides_for_the_whole_batch():
    learner, task = _learner()
    by_batch, by_example = GSS(4, n_reference=4, gate="batch"), GSS(4, n_reference=4)
    for gss in (by_batch, by_example):
        gss.before_task(learner, task)
        _offer(gss, learner, [0, 0, 0, 0])  # fills the buffer with class 0
    # The authors' code stores the first examples with score 0.1, ours with 1 (no reference).
    assert by_batch._scores.tolist() == pytest.approx([FIRST_BATCH_SCORE] * 4)
    assert by_example._scores.tolist() == [1.0] * 4

    # Three more of class 0 and one of class 1: the class-1 example is at 180 degrees from
    # every reference (c = 0 < 1), but the batch's mean gradient agrees with them (c_B = 2).
    for gss in (by_batch, by_example):
        _offer(gss, learner, [0, 0, 0, 1])
    assert by_example.buffer.y.tolist().count(1) == 1  # it competed, and won: C/(C + 1e-6)
    assert by_batch.buffer.y.tolist() == [0, 0, 0, 0]  # the batch kept it out
    assert by_batch.selection_stats[0]["competed"] == 0
    assert by_example.selection_stats[0]["competed"] == 1

    # A batch of class 1 only: c_B = 0, and every example competes with its own score.
    _offer(by_batch, learner, [1, 1, 1, 1])
    stats = by_batch.selection_stats[0]
    assert (stats["offered"], stats["competed"], stats["replaced"]) == (8, 4, 4)
    assert stats["replacement_rate"] == 0.5
    assert by_batch.buffer.y.tolist() == [1, 1, 1, 1]
    # The statistics and the gate travel with the checkpointed state.
    restored = GSS(4)
    restored.load_state_dict(by_batch.state_dict(), learner)
    assert restored.gate == "batch" and restored.selection_stats == by_batch.selection_stats


def test_batch_gate_lets_examples_with_high_own_scores_compete():
    # Under the batch gate an example competes whatever its own score: c_k = 1.5 may enter,
    # with probability C_i / (C_i + c_k), where the per-example rule would never let it.
    generator = torch.Generator().manual_seed(0)
    scores, c = torch.ones(4), torch.full((2,), 1.5)
    assert len(replacements(scores, c, generator)[0]) == 0
    n = 2000
    taken = sum(
        len(replacements(scores, c, generator, torch.ones(2, dtype=bool))[0]) for _ in range(n)
    )
    assert taken / (2 * n) == pytest.approx(1 / 2.5, abs=0.03)


def test_gate_is_validated():
    with pytest.raises(ConfigError, match="gate must be one of example, batch, got 'mean'"):
        GSS(gate="mean")


def test_sequential_draws_let_a_later_example_take_the_slot_an_earlier_one_won():
    # One slot can be drawn (the others score ~0). Both examples compete with c = 1e-6: the
    # first takes slot 0 (accepted with 1 / (1 + 1e-6)) and leaves it scored 1e-6, so the
    # second takes it from the first with probability 1e-6 / (1e-6 + 1e-6) = 1/2. Distinct
    # draws give the two examples two different slots instead.
    generator = torch.Generator().manual_seed(0)
    c, n, second = torch.full((2,), 1e-6), 1000, 0
    for _ in range(n):
        scores = torch.tensor([1.0, 1e-30, 1e-30])
        slots, rows = sequential_replacements(scores, c, generator)
        assert slots.tolist() == [0] and scores[0].item() == pytest.approx(1e-6)
        second += rows.tolist() == [1]
    assert second / n == pytest.approx(0.5, abs=0.05)
    slots, _ = replacements(torch.tensor([1.0, 1e-30, 1e-30]), c, generator)
    assert sorted(slots.tolist()) != [0, 0]


def test_draws_is_a_parameter_saved_with_the_state():
    learner, task = _learner()
    gss = GSS(4, n_reference=4, gate="batch", draws="sequential")
    gss.before_task(learner, task)
    _offer(gss, learner, [0, 0, 0, 0])
    _offer(gss, learner, [1, 1, 1, 1])  # c_B = 0: all four compete, one after another
    stats = gss.selection_stats[0]
    assert stats["competed"] == 4 and 1 <= stats["replaced"] <= 4
    restored = GSS(4)
    restored.load_state_dict(gss.state_dict(), learner)
    assert restored.draws == "sequential"
    with pytest.raises(ConfigError, match="draws must be one of distinct, sequential"):
        GSS(draws="one-by-one")
