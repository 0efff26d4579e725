"""A module of specialists: one copy of a network per task, ``net(x, t)`` answering with copy
``t`` (the "archive copy" of each task)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class SpecialistNet(nn.Module):
    """One network per task: ``net(x, t)`` answers task ``t`` with specialist ``t``.

    Specialist 0 is the given model itself (its modules, its weights). :meth:`add` freezes
    every specialist and appends a copy (of the newest one, or of given weights), trainable. A
    task id beyond the newest specialist (a task not learnt yet) is answered by the newest. With
    an int ``t`` only specialist ``t`` runs; with a tensor of ids each specialist runs on its
    own rows. Frozen specialists stay in evaluation mode, so their normalisation statistics and
    dropout never change what they answer.
    """

    takes_task_id = True

    def __init__(self, model: nn.Module):
        super().__init__()
        self.experts = nn.ModuleList([model])

    def add(self, weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """Freeze every specialist and append a trainable copy of the newest one, loaded with
        ``weights`` if given (a ``state_dict`` of the same network); returns the new one."""
        newest = self.experts[-1]
        expert = copy.deepcopy(newest)
        if weights is not None:
            expert.load_state_dict(weights)
        self.requires_grad_(False)
        expert.requires_grad_(True).train(self.training)
        self.experts.append(expert)
        self.train(self.training)
        return expert

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        newest = len(self.experts) - 1
        if isinstance(t, int):
            return self.experts[min(t, newest)](x)
        t = t.clamp(max=newest)
        tasks = t.unique().tolist()  # sorted; one host sync per call
        if len(tasks) == 1:
            return self.experts[tasks[0]](x)
        out = None
        for task in tasks:
            rows = (t == task).nonzero().squeeze(1)
            part = self.experts[task](x.index_select(0, rows))
            if out is None:
                out = part.new_zeros((len(x), *part.shape[1:]))
            out = out.index_copy(0, rows, part)
        return out

    def train(self, mode: bool = True) -> SpecialistNet:
        super().train(mode)
        for frozen in self.experts[:-1]:
            frozen.eval()
        return self

    def expert_parameters(self) -> list[int]:
        """Parameters of each specialist."""
        return [sum(p.numel() for p in expert.parameters()) for expert in self.experts]
