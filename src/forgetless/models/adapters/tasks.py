"""One adapter per task, selected by the task id: the task-incremental use of adapters.

:class:`TaskAdapters` wraps a model whose layers already carry adapters (see
:func:`forgetless.models.adapters.wrap`). The adapters in the model are the *live* ones, those
of the newest task; each earlier task's adapter values are kept as buffers (saved with the
model's ``state_dict``), and a task answers with its own values through
:func:`torch.func.functional_call`, without touching the live parameters. Tasks before the
adapters came (the whole model trained, or a trained start) answer with the adapters' initial
values, whose update is zero (LoRA's ``B = 0``, CURLoRA's ``U = 0``): the base model alone.
"""

from __future__ import annotations

import torch
from torch import nn

from forgetless.models.adapters import adapter_parameters


class TaskAdapters(nn.Module):
    """``model`` with one adapter per task, chosen by the task id.

    Args:
        body: the model, its layers already wrapped in adapters.
        first: the first task the adapters serve; tasks ``0..first-1`` answer with the base
            model (the adapters' initial values).

    Tasks ``first .. first + len(learnt) - 1`` answer with their kept values, task
    ``first + len(learnt)`` and any later id (tasks not learnt yet) with the live adapters.
    """

    takes_task_id = True

    def __init__(self, body: nn.Module, first: int):
        super().__init__()
        self.body = body
        self.first = int(first)
        ids = {id(p) for p in adapter_parameters(body)}
        #: the adapters' parameter names in ``body``, the order of every slot's buffers
        self.names = [n for n, p in body.named_parameters() if id(p) in ids]
        self.initial = self._slot()
        self.learnt = nn.ModuleList()

    def _slot(self) -> nn.Module:
        """The live adapters' current values, as the buffers ``a0, a1, ...`` of a module."""
        slot = nn.Module()
        params = dict(self.body.named_parameters())
        for i, name in enumerate(self.names):
            slot.register_buffer(f"a{i}", params[name].detach().clone())
        return slot

    @property
    def live_task(self) -> int:
        """The task the live adapters belong to."""
        return self.first + len(self.learnt)

    @torch.no_grad()
    def new_task(self) -> None:
        """Keep the live adapters' values as the current task's, and start the next task's
        adapters from the initial values (a zero update)."""
        self.learnt.append(self._slot())
        params = dict(self.body.named_parameters())
        for i, name in enumerate(self.names):
            params[name].copy_(getattr(self.initial, f"a{i}"))

    def _values(self, task: int) -> dict[str, torch.Tensor] | None:
        """The adapter values task ``task`` answers with (``None``: the live ones)."""
        if task >= self.live_task:
            return None
        slot = self.initial if task < self.first else self.learnt[task - self.first]
        return {name: getattr(slot, f"a{i}") for i, name in enumerate(self.names)}

    def _run(self, x: torch.Tensor, task: int) -> torch.Tensor:
        values = self._values(task)
        if values is None:
            return self.body(x)
        return torch.func.functional_call(self.body, values, (x,), strict=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        if isinstance(t, int):
            return self._run(x, t)
        # A batch that mixes tasks (replay) runs one task at a time; ids at or past the live
        # task all take the live adapters.
        t = t.clamp(max=self.live_task)
        tasks = torch.unique(t).tolist()
        if len(tasks) == 1:
            return self._run(x, tasks[0])
        out = None
        for task in tasks:
            rows = (t == task).nonzero().squeeze(1)
            part = self._run(x[rows], task)
            if out is None:
                out = part.new_empty((len(x), *part.shape[1:]))
            out = out.index_copy(0, rows, part)
        return out
