"""The strategy contract: hooks the engine calls, each a no-op by default.

A method overrides the two or three hooks it needs; the engine calls only overridden hooks, in
the order the strategies were given, so a hybrid is a list: ``[Replay(500), EWC(100)]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from forgetless.scenarios.stream import Protocol, Task
from forgetless.state import pack, unpack

if TYPE_CHECKING:
    from forgetless.learner import Learner, TrainingData

HOOKS = (
    "change_model",
    "training_data",
    "before_task",
    "batch",
    "loss",
    "penalty",
    "after_backward",
    "after_step",
    "after_task",
    "predict",
    "route",
)


class Strategy:
    """Base class of every strategy. Subclasses set ``name`` and override hooks.

    Class attributes:
        name: the registry and CLI name.
        protocols: the protocols the method supports; a stream of another protocol is a clear
            error before training starts.
        stores_raw_data: True if the method keeps past inputs (for data-retention policies).
        trained_start_refusal: why the method cannot start from a trained model
            (``train(trained_tasks=k)``), as a sentence that says what to use instead; empty if
            it can. A method that can builds its state for such a task in ``after_task``, which
            the engine calls with ``learner.task_learnt_before`` set and no step taken.
        needs_task_id: True if the method answers with the part of the model chosen by the task
            id (columns, masks, specialists): under class- or domain-incremental learning, where
            no task id is given at test time, it then needs a strategy that ``infers_task``.
        infers_task: True if the method infers each test input's task itself (a router, in its
            ``predict`` hook), so that task-id models and methods can run without the task given.
        supports_task_id_models: False if the method calls the model as ``model(x)`` itself
            (so it cannot run with a model that takes the task id, or a method that needs one).
        transient: attributes :meth:`state_dict` leaves out (references into the live model,
            rebuilt after a restore).
        revisits: False if the method assumes each task comes once (it builds a column, a
            share of the weights or its training data per task): a schedule that revisits
            tasks is then refused.
    """

    name: ClassVar[str] = "strategy"
    protocols: ClassVar[frozenset[Protocol]] = frozenset(Protocol)
    stores_raw_data: ClassVar[bool] = False
    trained_start_refusal: ClassVar[str] = ""
    needs_task_id: ClassVar[bool] = False
    infers_task: ClassVar[bool] = False
    supports_task_id_models: ClassVar[bool] = True
    revisits: ClassVar[bool] = True
    transient: ClassVar[tuple[str, ...]] = ()

    def change_model(self, learner: Learner, task: Task) -> None:
        """Called before any strategy's ``before_task``: the place to change the model's
        structure (add columns, heads or masks; wrap or replace ``learner.model``; freeze what
        earlier tasks own). Afterwards the engine rebuilds the optimiser if the trainable
        parameters changed. A strategy that changes the model here must rebuild the same
        structure in :meth:`rebuild` so that a stopped run can resume."""

    def rebuild(self, learner: Learner, state: Any) -> None:
        """On resume, before any weights load: give ``learner.model`` the structure (and the
        ``requires_grad`` flags) it had when ``state`` (this strategy's :meth:`state_dict`) was
        saved, after task ``learner.task_index``. The engine then loads the model's weights,
        then every strategy's :meth:`load_state_dict`, then the optimiser."""

    def training_data(self, learner: Learner, task: Task, data: TrainingData) -> TrainingData:
        """The examples to fit on for ``task``; ``data`` is the task's own (or the previous
        strategy's choice). Joint and cumulative training widen it."""
        return data

    def before_task(self, learner: Learner, task: Task) -> None:
        """Called before fitting a task: add heads or columns, reset weights, set masks."""

    def batch(
        self, learner: Learner, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Change a training batch (inputs, targets, task ids), e.g. mix in replayed examples."""
        return x, y, t

    def loss(
        self,
        learner: Learner,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        logits: torch.Tensor,
    ) -> torch.Tensor | None:
        """Replace the batch's cross-entropy with another criterion (iCaRL's sigmoid loss).

        The first strategy returning a tensor wins; ``None`` keeps ``cross_entropy(logits, y)``.
        """
        return None

    def penalty(
        self,
        learner: Learner,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        logits: torch.Tensor,
    ) -> torch.Tensor | None:
        """A loss term added to the cross-entropy of the batch (EWC, SI, LwF, ...)."""
        return None

    def after_backward(self, learner: Learner) -> None:
        """Called between ``backward()`` and the optimiser step: edit gradients (A-GEM)."""

    def after_step(
        self,
        learner: Learner,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        logits: torch.Tensor,
    ) -> None:
        """Called after the optimiser step: path integrals, buffer updates."""

    def after_task(self, learner: Learner, task: Task) -> None:
        """Called after fitting a task: Fisher information, consolidation, exemplars."""

    def predict(self, learner: Learner, x: torch.Tensor, t: int) -> torch.Tensor | None:
        """Scores for evaluation on task ``t`` (``None``: the model's masked logits)."""
        return None

    def task_weights(self, learner: Learner) -> dict[str, torch.Tensor] | None:
        """The part of ``learner.model.state_dict()`` a run store keeps as the weights of the
        task just completed, when that is less than the whole model (adapters: only theirs);
        ``None``: the whole model. The first strategy that returns tensors decides. The
        resume checkpoint always holds the whole model."""
        return None

    def route(self, learner: Learner, x: torch.Tensor) -> torch.Tensor | None:
        """A router's hook (``infers_task``): the task each evaluated input of ``x`` is inferred
        to belong to, ``[B]`` int64 among the tasks learnt so far (``0..task_index``), or
        ``None`` to leave evaluation as it is. The first strategy returning ids decides: the
        engine then answers each input through its inferred task's part of the model,
        restricted to that task's units (``predict`` hooks are not asked), counts how often the
        inferred task is the true one, and evaluates the inputs with the task given too."""
        return None

    def report(self, learner: Learner) -> dict[str, Any] | None:
        """Plain data (numbers, strings, lists, dicts) about what the method did, kept in the
        result's ``strategy_reports`` under its name when the run ends: capacity used, routing
        accuracy. Build it from the model and restored state only, so a resumed run reports the
        same."""
        return None

    def overrides(self, hook: str) -> bool:
        """Whether this strategy's class implements ``hook`` (the engine skips the rest)."""
        return getattr(type(self), hook) is not getattr(Strategy, hook)

    def state_bytes(self) -> int:
        """Bytes of tensor state the strategy holds (importances, anchors, buffers, old models).

        Counted from its attributes: tensors, modules (parameters and buffers), objects with an
        integer ``nbytes`` (:class:`~forgetless.buffer.MemoryBuffer`), and lists, tuples and
        dicts of these; each tensor storage once. Strategies with other containers override it.
        """
        return _tensor_bytes(vars(self), set())

    def state_dict(self) -> Any:
        """Everything the strategy holds, as plain nested data of tensors and scalars (see
        :mod:`forgetless.state`), so that a checkpoint can restore it without pickling.
        Called between tasks; per-step scratch may be included or not."""
        skip = {"_forgetless_used", *self.transient}
        return pack({k: v for k, v in vars(self).items() if k not in skip}, self.name)

    def load_state_dict(self, state: Any, learner: Learner) -> None:
        """Restore what :meth:`state_dict` saved; model copies are rebuilt from
        ``learner.model``."""
        vars(self).update(unpack(state, learner.model, learner.device))

    def params(self) -> dict[str, object]:
        """The constructor arguments, for configs and reports."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def _tensor_bytes(value: object, seen: set[int]) -> int:
    if isinstance(value, torch.Tensor):
        key = value.untyped_storage().data_ptr()
        if key in seen:
            return 0
        seen.add(key)
        return value.untyped_storage().nbytes()
    if isinstance(value, torch.nn.Module):
        return sum(_tensor_bytes(t, seen) for t in (*value.parameters(), *value.buffers()))
    if isinstance(value, dict):
        return sum(_tensor_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in value)
    nbytes = getattr(value, "nbytes", None)  # MemoryBuffer (a property)
    return nbytes if isinstance(nbytes, int) else 0
