"""A-GEM: project the gradient so the loss on stored examples does not increase."""

from __future__ import annotations

import torch

from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.losses import cross_entropy
from forgetless.scenarios.stream import Task
from forgetless.strategies.replay import Rehearsal


class AGEM(Rehearsal):
    """Averaged gradient episodic memory (Chaudhry et al. 2019, "Efficient Lifelong Learning
    with A-GEM").

    With ``g`` the gradient of the current batch and ``g_ref`` the gradient of the loss on a
    sample of the episodic memory (all parameters flattened into one vector), the step uses

        g~ = g - (g . g_ref / g_ref . g_ref) g_ref   if g . g_ref < 0,   else g,

    the closest gradient to ``g`` that does not increase the memory loss to first order
    (``g~ . g_ref >= 0``). Each stored example's loss is masked to its own task under
    task-incremental learning.

    The memory is filled at the end of each task with ``buffer_size // number of tasks`` random
    examples of that task (an equal share per task, as in the paper and Mammoth), not by
    reservoir: during the first task it is empty and the gradient is left alone.

    Args:
        buffer_size: examples the memory holds (>= the number of tasks in the stream).
        replay_batch_size: memory examples per reference gradient; ``None``: as many as the
            incoming batch has.

    Attributes:
        projections: steps whose gradient was projected (a conflict with the memory).
    """

    name = "agem"

    def __init__(self, buffer_size: int = 200, replay_batch_size: int | None = None):
        super().__init__(buffer_size, replay_batch_size)
        self._projections = torch.zeros((), dtype=torch.int64)

    @property
    def projections(self) -> int:
        return int(self._projections)

    def before_task(self, learner: Learner, task: Task) -> None:
        if learner.task_index == 0:
            self._start(learner)
        super().before_task(learner, task)

    def _start(self, learner: Learner) -> None:
        tasks = len(learner.stream)
        if self.buffer_size < tasks:
            raise ConfigError(
                f"agem: buffer_size={self.buffer_size} gives no room per task; it must be at "
                f"least the number of tasks ({tasks})"
            )
        self._projections = torch.zeros((), dtype=torch.int64, device=learner.device)

    def reference_gradient(
        self, learner: Learner, params: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """``g_ref``: the gradient of the cross-entropy on a memory sample, one tensor per
        parameter in ``params``; the parameters' ``.grad`` (the batch's ``g``) is untouched."""
        past = self.buffer.get(self.sample(learner))
        loss = cross_entropy(learner.logits(past.x, past.t), past.y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]

    def after_backward(self, learner):
        if len(self.buffer) == 0:
            return
        params = [p for p in learner.model.parameters() if p.grad is not None]
        reference = self.reference_gradient(learner, params)
        dot = sum((p.grad * r).sum() for p, r in zip(params, reference, strict=True))
        norm2 = sum(r.pow(2).sum() for r in reference)
        # min(dot, 0) projects only on conflict, without a host sync; a zero g_ref leaves g alone.
        coefficient = dot.clamp(max=0.0) / norm2.clamp(min=torch.finfo(norm2.dtype).tiny)
        for p, r in zip(params, reference, strict=True):
            p.grad.sub_(coefficient * r)
        self._projections += dot < 0

    def after_task(self, learner: Learner, task: Task) -> None:
        # A trained start's first task (no before_task ran) fills its share as any task does.
        if getattr(learner, "task_learnt_before", False) and learner.task_index == 0:
            self._start(learner)
            self._buffer = self.new_buffer(learner)
        buf = self.buffer
        share = self.buffer_size // len(learner.stream)
        pick = torch.randperm(len(task.train), generator=learner.generator)[:share]
        slots = torch.arange(len(buf), len(buf) + len(pick))
        index = torch.full((len(pick),), learner.task_index, dtype=torch.int64)
        buf.write(slots, task.train.inputs(pick), task.train.y[pick], index)
        buf.seen += len(task.train)
