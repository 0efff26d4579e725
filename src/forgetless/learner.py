"""The learner (what strategies may touch) and the training data of one task."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from forgetless.data.arrays import ArraySet
from forgetless.scenarios.stream import Protocol, Stream, Task


@dataclass(frozen=True)
class TrainingData:
    """The examples fitted for one task, each with the index of the task it belongs to.

    Attributes:
        examples: inputs and targets (output-unit indices).
        task_ids: ``[N]`` int64, the stream position of each example's task (selects its output
            mask under task-incremental learning).
        iterations_scale: in iterations mode, the step budget is multiplied by this (joint and
            cumulative training fit several tasks' data in one go).
    """

    examples: ArraySet
    task_ids: torch.Tensor
    iterations_scale: int = 1

    def __len__(self) -> int:
        return len(self.examples)

    def to(self, device: torch.device | str) -> TrainingData:
        """The same examples on ``device`` (itself where they are there already)."""
        examples = self.examples.to(device)
        task_ids = self.task_ids.to(device)
        if examples is self.examples and task_ids is self.task_ids:
            return self
        return TrainingData(examples, task_ids, self.iterations_scale)

    @staticmethod
    def of_task(task: Task, index: int) -> TrainingData:
        return TrainingData(task.train, torch.full((len(task.train),), index, dtype=torch.int64))

    @staticmethod
    def union(tasks: Sequence[Task], scale: int = 1) -> TrainingData:
        """All training examples of ``tasks`` (positions ``0..len-1`` of the stream)."""
        parts = [TrainingData.of_task(task, i) for i, task in enumerate(tasks)]
        return TrainingData(
            ArraySet.concat([p.examples for p in parts]),
            torch.cat([p.task_ids for p in parts]),
            scale,
        )

    @staticmethod
    def empty_like(data: TrainingData) -> TrainingData:
        none = torch.zeros(0, dtype=torch.int64)
        return TrainingData(data.examples.subset(none), none)


def takes_task_id(model: nn.Module) -> bool:
    """Whether ``model`` declares ``takes_task_id = True``: it is then called as ``model(x, t)``,
    ``t`` the task ids of the batch (a ``[batch]`` int64 tensor, or one ``int`` when every
    example belongs to the same task, as in evaluation)."""
    return bool(getattr(model, "takes_task_id", False))


def call_model(model: nn.Module, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """``model(x, t)`` for a model that takes the task id, else ``model(x)``."""
    if takes_task_id(model):
        return model(x, t)
    return model(x)


class TaskBound(nn.Module):
    """A model that takes the task id, with the id fixed: a model of ``x`` alone, for code that
    calls ``model(x)`` (Fisher information, MAS sensitivities). Its parameters are the
    model's, in the same order."""

    def __init__(self, model: nn.Module, task: int):
        super().__init__()
        self.model = model
        self.task = int(task)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.task)


def bind_task(model: nn.Module, task: int) -> nn.Module:
    """``model`` answering as for ``task``: a :class:`TaskBound` if it takes the task id, else
    the model itself."""
    return TaskBound(model, task) if takes_task_id(model) else model


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters with ``requires_grad``, by name, in ``model.named_parameters()`` order."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


class Learner:
    """The state a strategy may read and change: nothing else is global.

    Attributes:
        model: the network (on ``device``). A strategy may replace it (``learner.model =
            wrapped``, moved to ``device`` on assignment) or grow it in its ``change_model``
            hook; see ``docs/architecture.md``, "Models that change".
        optimizer: the current task's optimiser (rebuilt per task unless configured otherwise,
            and whenever the model's trainable parameters changed).
        device: where tensors live during training.
        stream: the whole stream; ``stream.tasks[: task_index + 1]`` are the tasks seen so far.
        task_index: position of the task being fitted (or last fitted).
        generator: the random generator of this run, for any sampling a strategy does.
        new_examples: during a step, how many leading rows of the batch are the task's own
            (hooks such as replay append stored examples after them).
        outputs: during a step, the model's raw outputs for the batch, before task masking
            (what DER stores and LwF distils), so no strategy needs a second forward pass.
        task_learnt_before: True while the ``after_task`` hooks run for a task the model had
            learnt before this run (a trained start, ``train(trained_tasks=k)``): no step was
            taken on it, so a hook that gathers what it needs during steps (a replay buffer,
            SI's path integral) must take it from the task's data now, or do without.
        task_steps: optimiser steps planned for the task being fitted (set before its first
            step; PackNet prunes part-way through them).
        task_units: ``[num_tasks, num_outputs]`` booleans, True on each task's own output
            units, whatever the protocol (a router restricts an answer to its inferred task's).
        output_mask: ``task_units`` under task-incremental learning (each task answers on its
            own units), else ``None``.
        epoch_steps: batches in one pass over the task's training data (the task's steps come
            in passes of this many, the last pass cut short where the steps run out; HAT anneals
            its gates within each pass).
    """

    def __init__(
        self,
        model: nn.Module,
        stream: Stream,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        device: torch.device,
        generator: torch.Generator,
    ):
        self.device = device
        self.model = model
        self.stream = stream
        self.generator = generator
        self.task_index = 0
        self.task_steps = 0
        self.epoch_steps = 0
        # Set by the engine for each training step, before the strategies' hooks run:
        self.new_examples = 0  # rows of the batch that came from the task (before `batch` hooks)
        self.outputs: torch.Tensor | None = None  # the model's unmasked outputs for the batch
        self.task_learnt_before = False  # set by the engine for a trained start's tasks
        self._make_optimizer = make_optimizer
        self.optimizer = make_optimizer(self.model)
        # (tensor, its value when first seen) for every parameter and buffer the model has
        # had: reset_model restores these, whatever the model grew since.
        self._initial: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._seen: set[int] = set()
        self.record_initial_values()
        units = torch.zeros(len(stream.tasks), stream.num_outputs, dtype=torch.bool)
        for i, task in enumerate(stream.tasks):
            units[i, list(task.units)] = True
        # [tasks, outputs]: True on each task's own units, whatever the protocol (a router
        # answers through the inferred task's units); the output mask is it under task-IL.
        self.task_units = units.to(device)
        self.output_mask = self.task_units if stream.protocol is Protocol.TASK else None

    @property
    def model(self) -> nn.Module:
        return self._model

    @model.setter
    def model(self, model: nn.Module) -> None:
        self._model = model.to(self.device)

    @property
    def seen_tasks(self) -> tuple[Task, ...]:
        return self.stream.tasks[: self.task_index + 1]

    def task_generator(self, purpose: str, task: int | None = None) -> torch.Generator:
        """A generator of its own for sampling done once per task (Fisher samples, MAS subsets,
        a new column's initial weights).

        Seeded from the run's seed, the task index (``task``, else the current one) and
        ``purpose``, and independent of :attr:`generator`: such draws leave the run's batch
        order untouched, so runs that differ only in a strategy's strength see the same batches
        (strength 0 is exactly fine-tuning), and a resumed run draws what an uninterrupted one
        does.
        """
        task = self.task_index if task is None else task
        words = np.frombuffer(purpose.encode().ljust(8, b"\0")[:8], dtype=np.uint32).tolist()
        seed = np.random.SeedSequence([self.generator.initial_seed(), task, *words])
        return torch.Generator().manual_seed(int(seed.generate_state(1)[0]))

    def new_optimizer(self, keep_state: bool = False) -> torch.optim.Optimizer:
        """Replace the optimiser with a fresh one over the model's current trainable parameters.

        With ``keep_state``, parameters the old optimiser updated keep their state (momentum,
        Adam's moments and step count); parameters new to it start fresh.
        """
        old = self.optimizer
        self.optimizer = self._make_optimizer(self.model)
        if keep_state:
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if p in old.state:
                        self.optimizer.state[p] = old.state[p]
        return self.optimizer

    def optimizer_is_stale(self) -> bool:
        """Whether the optimiser's parameters are not exactly the model's trainable ones (the
        model grew, was wrapped, or had parameters frozen or unfrozen)."""
        updated = [p for group in self.optimizer.param_groups for p in group["params"]]
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        return len(updated) != len(trainable) or any(
            a is not b for a, b in zip(updated, trainable, strict=True)
        )

    def record_initial_values(self) -> None:
        """Remember the current value of every parameter and buffer not seen before, as the value
        :meth:`reset_model` restores. The engine calls it when the run starts and after each
        task's ``change_model`` and ``before_task`` hooks, so parts added to the model are
        reset to the values they were created with."""
        for tensor in itertools.chain(self.model.parameters(), self.model.buffers()):
            if id(tensor) not in self._seen:
                self._seen.add(id(tensor))  # the reference kept below keeps the id unique
                self._initial.append((tensor, tensor.detach().clone()))

    @torch.no_grad()
    def reset_model(self) -> None:
        """Restore the weights the model had before the first task (training from scratch);
        parameters and buffers added later get the values they had when first seen."""
        present = {id(t) for t in itertools.chain(self.model.parameters(), self.model.buffers())}
        for tensor, value in self._initial:
            if id(tensor) in present:
                tensor.copy_(value)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The model's raw outputs for ``x`` (task ids ``t`` passed if it takes them)."""
        return call_model(self.model, x, t)

    def logits(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The model's outputs for ``x``; under task-incremental learning the units outside each
        example's task are set to ``-inf`` (separate heads as masks over one output layer)."""
        return self.mask(self.forward(x, t), t)

    def mask(self, out: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """``out`` with the units outside each example's task set to ``-inf`` (task-IL only)."""
        if self.output_mask is None:
            return out
        return _restrict(out, self.output_mask[t])

    def routed_logits(self, x: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
        """The model's outputs for ``x`` with each example answered as task ``routes[i]`` (its
        inferred task) and restricted to that task's units, whatever the protocol."""
        return _restrict(self.forward(x, routes), self.task_units[routes])


def _restrict(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``out`` with the units outside ``mask`` (``[C]``, or ``[B, C]``: one row per example)
    set to ``-inf``."""
    if mask.ndim == 1:
        mask = mask.expand_as(out)
    elif out.ndim > 2:  # scores per position, [B, ..., C]: each example has one task
        mask = mask.view(len(mask), *([1] * (out.ndim - 2)), mask.shape[-1])
    return out.masked_fill(~mask, float("-inf"))
