"""Joint and cumulative training: the upper bounds that see past data in full."""

from __future__ import annotations

from forgetless.learner import Learner, TrainingData
from forgetless.scenarios.stream import Task
from forgetless.strategies.base import Strategy


class Joint(Strategy):
    """All tasks at once (i.i.d. training on the union of the stream): the upper bound.

    At the first task the model fits the union of every task's training set, mixed in each
    batch; later tasks add no training, so every row of the accuracy matrix is the same and BWT
    is 0 by construction. With ``iterations`` set, the union gets ``iterations x tasks`` steps,
    the same number of examples the sequential methods see.
    """

    name = "joint"
    revisits = False  # one part (or one data set) per task
    stores_raw_data = True
    trained_start_refusal = (
        "joint training fits every task at once at the first one, so there is no trained "
        "start to continue; use cumulative (retrain on all data seen) instead"
    )

    def training_data(self, learner: Learner, task: Task, data: TrainingData) -> TrainingData:
        if learner.task_index > 0:
            return TrainingData.empty_like(data)
        return TrainingData.union(learner.stream.tasks, scale=len(learner.stream))


class Cumulative(Strategy):
    """At each task, retrain on all data seen so far (the "retrain every month" baseline).

    Args:
        from_scratch: re-initialise the weights before each task (True, as a team that retrains
            from scratch would), or keep training from the current weights (False).

    Its cost grows with the stream: task ``t`` fits ``t + 1`` tasks' data. From a trained
    start, the first new task retrains on the learnt tasks' data too, and ``from_scratch``
    goes back to the weights the model was given (the trained ones), not to a random draw.
    """

    name = "cumulative"
    revisits = False  # one part (or one data set) per task
    stores_raw_data = True

    def __init__(self, from_scratch: bool = True):
        self.from_scratch = bool(from_scratch)

    def before_task(self, learner: Learner, task: Task) -> None:
        if self.from_scratch:
            learner.reset_model()

    def training_data(self, learner: Learner, task: Task, data: TrainingData) -> TrainingData:
        seen = learner.stream.tasks[: learner.task_index + 1]
        return TrainingData.union(seen, scale=len(seen))
