"""Tasks and streams: the values every scenario builds and the engine consumes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import torch

from forgetless.data.arrays import ArraySet
from forgetless.errors import ConfigError


class Protocol(str, Enum):
    """How a stream is evaluated (van de Ven, Tuytelaars and Tolias 2022, "Three types of
    incremental learning").

    - ``task``: the task identity is given at test time; the model answers among the task's own
      classes only (separate heads, realised as logit masking over one output layer).
    - ``domain``: no task identity; every task shares one output space of the same classes.
    - ``class``: no task identity; the model must tell apart all classes seen so far.
    """

    TASK = "task"
    DOMAIN = "domain"
    CLASS = "class"

    @classmethod
    def parse(cls, value: str | Protocol) -> Protocol:
        """``value`` as a Protocol; accepts ``"task"``, ``"task-il"``, ``"task-incremental"`` etc."""
        if isinstance(value, Protocol):
            return value
        key = str(value).lower().removesuffix("-incremental").removesuffix("-il")
        try:
            return cls(key)
        except ValueError:
            raise ConfigError(
                f"unknown protocol {value!r}: expected one of 'task', 'domain', 'class'"
            ) from None

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, eq=False)
class Task:
    """One step of a stream.

    Attributes:
        name: a short human-readable description (``"classes 3, 7"``, ``"rotation 36°"``).
        train, test: the task's examples; labels are *output-unit indices* of the model.
        units: the output units this task answers with; used for task-incremental masking.
        class_names: one name per unit in ``units``, for reports.
    """

    name: str
    train: ArraySet
    test: ArraySet
    units: tuple[int, ...]
    class_names: tuple[str, ...]

    def __repr__(self) -> str:
        return f"Task({self.name!r}, train={len(self.train)}, test={len(self.test)})"


@dataclass(frozen=True, eq=False)
class Stream:
    """An ordered sequence of tasks with one evaluation protocol.

    A stream is a value: built from a seed, sliceable (``stream[:3]`` is a stream of the first
    three tasks), iterable, and printable.
    """

    name: str
    tasks: tuple[Task, ...]
    protocol: Protocol
    num_outputs: int
    seed: int

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError(f"stream {self.name!r} has no tasks")
        shapes = {t.train.shape for t in self.tasks} | {t.test.shape for t in self.tasks}
        if len(shapes) != 1:
            raise ConfigError(f"stream {self.name!r} mixes input shapes {sorted(shapes)}")
        for task in self.tasks:
            if max(task.units) >= self.num_outputs:
                raise ConfigError(
                    f"task {task.name!r} uses unit {max(task.units)} >= {self.num_outputs}"
                )

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __getitem__(self, key: int | slice) -> Task | Stream:
        if isinstance(key, slice):
            return Stream(self.name, self.tasks[key], self.protocol, self.num_outputs, self.seed)
        return self.tasks[key]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example."""
        return self.tasks[0].train.shape

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype of the model's inputs: float32 for images, int64 for token ids."""
        return self.tasks[0].train.input_dtype

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Shape of one example's targets: ``()`` for labels, ``(T,)`` for token sequences."""
        return self.tasks[0].train.target_shape

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def output_mask(self) -> torch.Tensor | None:
        """``[num_tasks, num_outputs]`` booleans, True where task ``t`` may answer.

        Only task-incremental streams restrict the outputs; the others return ``None``.
        """
        if self.protocol is not Protocol.TASK:
            return None
        mask = torch.zeros(len(self.tasks), self.num_outputs, dtype=torch.bool)
        for i, task in enumerate(self.tasks):
            mask[i, list(task.units)] = True
        return mask

    def __repr__(self) -> str:
        head = (
            f"Stream({self.name!r}, protocol={self.protocol.value}, tasks={len(self)}, "
            f"outputs={self.num_outputs}, input={self.input_shape}, seed={self.seed})"
        )
        rows = [
            f"  {i}: {t.name:<28} train {len(t.train):>6}  test {len(t.test):>6}"
            for i, t in enumerate(self.tasks)
        ]
        return "\n".join([head, *rows])
