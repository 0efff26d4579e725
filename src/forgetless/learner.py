"""The learner (what strategies may touch) and the training data of one task."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from forgetless.data.arrays import ArraySet
from forgetless.scenarios.stream import Stream, Task


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


class Learner:
    """The state a strategy may read and change: nothing else is global.

    Attributes:
        model: the network (on ``device``).
        optimizer: the current task's optimiser (rebuilt per task unless configured otherwise).
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
    """

    def __init__(
        self,
        model: nn.Module,
        stream: Stream,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        device: torch.device,
        generator: torch.Generator,
    ):
        self.model = model.to(device)
        self.stream = stream
        self.device = device
        self.generator = generator
        self.task_index = 0
        # Set by the engine for each training step, before the strategies' hooks run:
        self.new_examples = 0  # rows of the batch that came from the task (before `batch` hooks)
        self.outputs: torch.Tensor | None = None  # the model's unmasked outputs for the batch
        self.task_learnt_before = False  # set by the engine for a trained start's tasks
        self._make_optimizer = make_optimizer
        self.optimizer = make_optimizer(self.model)
        self._initial_state = copy.deepcopy(self.model.state_dict())
        mask = stream.output_mask()
        self.output_mask = None if mask is None else mask.to(device)

    @property
    def seen_tasks(self) -> tuple[Task, ...]:
        return self.stream.tasks[: self.task_index + 1]

    def task_generator(self, purpose: str) -> torch.Generator:
        """A generator of its own for sampling done once per task (Fisher samples, MAS subsets).

        Seeded from the run's seed, the task index and ``purpose``, and independent of
        :attr:`generator`: such draws leave the run's batch order untouched, so runs that differ
        only in a strategy's strength see the same batches (strength 0 is exactly fine-tuning).
        """
        words = np.frombuffer(purpose.encode().ljust(8, b"\0")[:8], dtype=np.uint32).tolist()
        seed = np.random.SeedSequence([self.generator.initial_seed(), self.task_index, *words])
        return torch.Generator().manual_seed(int(seed.generate_state(1)[0]))

    def new_optimizer(self) -> torch.optim.Optimizer:
        """Replace the optimiser with a fresh one over the model's current parameters."""
        self.optimizer = self._make_optimizer(self.model)
        return self.optimizer

    def reset_model(self) -> None:
        """Restore the weights the model had before the first task (training from scratch)."""
        self.model.load_state_dict(self._initial_state)

    def logits(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The model's outputs for ``x``; under task-incremental learning the units outside each
        example's task are set to ``-inf`` (separate heads as masks over one output layer)."""
        return self.mask(self.model(x), t)

    def mask(self, out: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """``out`` with the units outside each example's task set to ``-inf`` (task-IL only)."""
        if self.output_mask is None:
            return out
        mask = self.output_mask[t]
        if mask.ndim == 1:
            mask = mask.expand_as(out)
        elif out.ndim > 2:  # scores per position, [B, ..., C]: each example has one task
            mask = mask.view(len(mask), *([1] * (out.ndim - 2)), mask.shape[-1])
        return out.masked_fill(~mask, float("-inf"))
