"""Metrics against a matrix worked out by hand."""

import pytest

from forgetless import metrics
from forgetless.errors import ConfigError

# R[i][j]: accuracy on task j after training task i. Task 0 improves after task 1 (0.95 > 0.9),
# so average forgetting (best-ever minus final) differs from -BWT (just-learnt minus final).
R = [
    [0.90, 0.10, 0.20],
    [0.95, 0.80, 0.30],
    [0.40, 0.60, 0.70],
]
BASELINE = [0.10, 0.20, 0.25]


def test_average_accuracy():
    assert metrics.average_accuracy(R) == pytest.approx((0.40 + 0.60 + 0.70) / 3)


def test_backward_transfer():
    # ((0.40 - 0.90) + (0.60 - 0.80)) / 2
    assert metrics.backward_transfer(R) == pytest.approx(-0.35)


def test_forward_transfer():
    # ((R[0][1] - b1) + (R[1][2] - b2)) / 2 = ((0.10 - 0.20) + (0.30 - 0.25)) / 2
    assert metrics.forward_transfer(R, BASELINE) == pytest.approx(-0.025)


def test_forgetting_uses_best_previous_accuracy():
    # task 0: max(0.90, 0.95) - 0.40 = 0.55; task 1: max(0.10, 0.80) - 0.60 = 0.20
    assert metrics.forgetting(R) == pytest.approx((0.55 + 0.20) / 2)


def test_learning_accuracy_and_intransigence():
    assert metrics.learning_accuracy(R) == pytest.approx((0.90 + 0.80 + 0.70) / 3)
    assert metrics.intransigence(R, [1.0, 0.9, 0.9]) == pytest.approx((0.10 + 0.10 + 0.20) / 3)


def test_summary_hides_fwt_under_class_incremental():
    assert metrics.summary(R, BASELINE, "class")["fwt"] is None
    assert metrics.summary(R, BASELINE, "task")["fwt"] == pytest.approx(-0.025)


def test_single_task_metrics_are_undefined_not_zero():
    one = [[0.8]]
    assert metrics.average_accuracy(one) == pytest.approx(0.8)
    assert metrics.backward_transfer(one) is None
    assert metrics.forgetting(one) is None
    assert metrics.forward_transfer(one, [0.1]) is None


@pytest.mark.parametrize(
    "bad",
    [[[0.5, 0.5]], [[1.5]], [[float("nan")]], [], [[0.5, 0.2], [0.1]]],
)
def test_bad_matrices_are_rejected(bad):
    with pytest.raises((ConfigError, ValueError)):
        metrics.average_accuracy(bad)


def test_baseline_length_is_checked():
    with pytest.raises(ConfigError, match="one accuracy per task"):
        metrics.forward_transfer(R, [0.1, 0.2])


def test_forgetting_ignores_rows_before_a_task_was_learnt():
    # Task 1 scores 0.9 by chance before it is trained (row 0), is learnt to 0.8 and kept: the
    # drop counted is from 0.8, not from the chance score.
    R_chance = [[0.9, 0.9, 0.5], [0.9, 0.8, 0.5], [0.9, 0.8, 0.7]]
    assert metrics.forgetting(R_chance) == pytest.approx(0.0)
