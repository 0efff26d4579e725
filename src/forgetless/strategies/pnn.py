"""Progressive neural networks: a new column per task, fed by every earlier one."""

from __future__ import annotations

from typing import Any

from forgetless.learner import Learner
from forgetless.models.progressive import ProgressiveNet
from forgetless.scenarios.stream import Task
from forgetless.state import unpack
from forgetless.strategies.base import Strategy


class PNN(Strategy):
    """Progressive neural networks (Rusu, Rabinowitz, Desjardins, Soyer, Kirkpatrick,
    Kavukcuoglu, Pascanu and Hadsell 2016, "Progressive Neural Networks", arXiv:1606.04671).

    At the first task the model becomes column 0 of a
    :class:`~forgetless.models.ProgressiveNet` (its own layers and weights). At each later task
    ``k`` every existing column and adapter is frozen and column ``k`` is added, freshly
    initialised, with lateral adapters from columns ``0..k-1`` into each of its layers but the
    first (Eq. 1 with the adapters of Sec. 2):

        h_i^(k) = f(W_i^(k) h_{i-1}^(k) + U_i^(k) relu(V_i^(k) alpha_i^(k) [h_{i-1}^(<k)]))

    ``[h_{i-1}^(<k)]`` the earlier columns' activations, concatenated. Task ``t`` is answered by
    column ``t``, which nothing trained later can change: BWT is exactly 0 when the task is
    given. Builds columns from ``mlp``, ``cnn`` and ``cnn-skip`` (any ``nn.Sequential`` of
    linear and convolutional layers). The cost is memory and compute that grow with every
    task: ``Result.model_size`` records the parameters after each task, and the report the
    parameters of each column with its adapters.

    A new column's weights are drawn from a generator of the run's seed and the task, so a
    resumed run grows the very column an uninterrupted one does.
    """

    name = "pnn"
    revisits = False  # one part (or one data set) per task
    needs_task_id = True
    trained_start_refusal = (
        "a progressive net gives each task a column trained on it alone, and a trained start's "
        "model already mixes every learnt task in one; use ewc, lwf or replay to protect it"
    )

    def __init__(self):
        self.columns = 0

    def change_model(self, learner: Learner, task: Task) -> None:
        if isinstance(learner.model, ProgressiveNet):
            learner.model.add_column(_column_seed(learner, learner.task_index))
        else:
            learner.model = ProgressiveNet(learner.model)
        self.columns = len(learner.model.columns)

    def rebuild(self, learner: Learner, state: Any) -> None:
        columns = int(unpack(state)["columns"])
        net = ProgressiveNet(learner.model)
        for k in range(1, columns):
            net.add_column(_column_seed(learner, k))
        learner.model = net

    def report(self, learner: Learner) -> dict[str, Any] | None:
        if not isinstance(learner.model, ProgressiveNet):
            return None
        return {
            "columns": len(learner.model.columns),
            "column_parameters": learner.model.column_parameters(),
        }


def _column_seed(learner: Learner, task: int) -> int:
    return learner.task_generator("pnn", task).initial_seed()
