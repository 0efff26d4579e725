"""Experience replay: train on each batch together with a sample of stored past examples."""

from __future__ import annotations

import math

import torch

from forgetless.buffer import CLASS_BALANCE_NEEDS_LABELS, MemoryBuffer
from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.scenarios.stream import Task
from forgetless.strategies.base import Strategy
from forgetless.validation import check_positive_int

#: Examples of a learnt task offered to the buffer at once by :meth:`Rehearsal.remember`.
REMEMBER_CHUNK = 4096


class Rehearsal(Strategy):
    """Base of the methods that keep a :class:`~forgetless.buffer.MemoryBuffer` (replay, A-GEM,
    DER): validates the buffer settings, makes a fresh buffer at the first task of a run, and
    remembers how many examples of each batch are new (the first ones: strategies that enlarge
    a batch append to it, so in a hybrid list a rehearsal method before the others).

    Args:
        buffer_size: examples the buffer holds (>= 1).
        replay_batch_size: stored examples drawn per step; ``None``: as many as the incoming
            batch has.
    """

    name = "rehearsal"
    stores_raw_data = True

    def __init__(self, buffer_size: int = 200, replay_batch_size: int | None = None):
        self.buffer_size = check_positive_int("buffer_size", buffer_size)
        self.replay_batch_size = (
            None
            if replay_batch_size is None
            else check_positive_int("replay_batch_size", replay_batch_size)
        )
        self._buffer: MemoryBuffer | None = None
        self._incoming = 0

    @property
    def buffer(self) -> MemoryBuffer:
        """The memory of the current (or last) run."""
        if self._buffer is None:
            raise RuntimeError(f"{self.name}: the buffer is made when training starts")
        return self._buffer

    def new_buffer(self, learner: Learner) -> MemoryBuffer:
        """An empty buffer for ``learner``'s stream (subclasses add logits)."""
        return MemoryBuffer.for_stream(self.buffer_size, learner.stream, device=learner.device)

    def before_task(self, learner: Learner, task: Task) -> None:
        if learner.task_index == 0 or self._buffer is None:
            self._buffer = self.new_buffer(learner)

    def batch(self, learner, x, y, t):
        self._incoming = len(x)
        return x, y, t

    def after_task(self, learner: Learner, task: Task) -> None:
        if getattr(learner, "task_learnt_before", False):
            if self._buffer is None:
                self._buffer = self.new_buffer(learner)
            self.remember(learner, task)

    @torch.no_grad()
    def remember(self, learner: Learner, task: Task) -> None:
        """Store a task the model learnt before this run (a trained start), as if its training
        examples had been offered during its steps: all of them go through the reservoir, in
        chunks, so the buffer holds a uniform sample of them (all of them, if they fit)."""
        generator = learner.task_generator("remember")  # the batch order stays untouched
        # As many targets per chunk as 4096 labels: DER's logits of long sequences stay small.
        chunk = max(1, REMEMBER_CHUNK // math.prod(task.train.target_shape))
        index = torch.full((chunk,), learner.task_index, dtype=torch.int64)
        for start in range(0, len(task.train), chunk):
            rows = slice(start, start + chunk)
            x = task.train.inputs(rows).to(learner.device)
            y = task.train.y[rows].to(learner.device)
            t = index[: len(x)].to(learner.device)
            self.buffer.reservoir_add(x, y, t, self.logits_of(learner, x), generator, report=False)

    def logits_of(self, learner: Learner, x: torch.Tensor) -> torch.Tensor | None:
        """What the buffer stores with remembered inputs besides labels (DER: the logits)."""
        return None

    def sample(self, learner: Learner) -> torch.Tensor:
        """Slots of a uniform sample of the buffer, ``replay_batch_size`` of them (or as many
        as the incoming batch)."""
        n = self.replay_batch_size or self._incoming
        return self.buffer.sample(n, generator=learner.generator)


#: How a replay buffer chooses what it keeps: a uniform sample of everything offered, or equal
#: slots per task or per class.
BUFFER_POLICIES = ("reservoir", "task-balanced", "class-balanced")
#: When examples are offered to the buffer: after every step (the batch just trained on, so the
#: current task is replayed too), or at each task's end (all of its training examples, so the
#: buffer holds past tasks only while a task trains).
BUFFER_UPDATES = ("step", "task")
#: How the stored examples of a step are drawn: a fresh uniform sample every step, as many as
#: the incoming batch; or successive batches of shuffled passes over the buffer, a full batch
#: each (the last of a pass holding the rest), as Avalanche's replay data loader does.
REPLAY_DRAWS = ("uniform", "passes")


class Replay(Rehearsal):
    """Experience replay (Chaudhry et al. 2019, "On tiny episodic memories in continual
    learning"), with a choice of buffer policy, update timing and draw.

    Each step minimises the cross-entropy over the incoming batch ``B`` joined with a sample
    ``M`` of the buffer,

        L = CE(f(x), y) over (x, y) in B ∪ M,

    each stored example keeping its task id (so under task-incremental learning its logits are
    masked to its own task).

    The defaults are the paper's: after each step the incoming examples, and only they, are
    offered to the buffer by reservoir sampling, which keeps a uniform sample of the whole
    stream (current task included), and ``M`` is a fresh uniform sample of it. Avalanche's
    ``ReplayPlugin`` is ``buffer_policy="task-balanced", buffer_update="task",
    replay_draw="passes"``: at each task's end the task's training examples enter a buffer
    split equally over the tasks seen, so a task trains beside past tasks only, drawn in
    shuffled passes a full batch at a time.

    From a trained start (``train(trained_tasks=k)``) the learnt tasks' training examples are
    offered to the buffer, by its policy, when their ``after_task`` runs
    (:meth:`Rehearsal.remember`). Where those examples are a retained sample of old data,
    ``store_new=False`` replays that sample as it is: the reservoir would otherwise let the new
    examples displace it, keeping about ``len(sample) / (len(sample) + examples trained)`` of
    it by the end.

    Args:
        buffer_size: examples the buffer holds (>= 1).
        replay_batch_size: stored examples added to each batch; ``None``: as many as the
            incoming batch has (the paper's setting; with ``replay_draw="passes"``, as many as
            the largest incoming batch, the loop's batch size).
        store_new: offer the examples of the tasks trained in the run to the buffer (the
            paper); ``False`` keeps only what the learnt tasks of a trained start put there.
        buffer_policy: what the buffer keeps (:data:`BUFFER_POLICIES`): ``"reservoir"``, a
            uniform sample of every example offered; ``"task-balanced"``, equal slots per
            task; ``"class-balanced"``, equal slots per class (each evicting from the
            largest groups, :meth:`~forgetless.buffer.MemoryBuffer.balanced_add`; refused
            for sequence targets, which have no one class per example).
        buffer_update: when examples are offered (:data:`BUFFER_UPDATES`): ``"step"``, each
            step's incoming batch after the step; ``"task"``, the task's training examples at
            its end.
        replay_draw: how each step's stored examples are drawn (:data:`REPLAY_DRAWS`):
            ``"uniform"`` or ``"passes"``.
    """

    name = "replay"

    def __init__(
        self,
        buffer_size: int = 200,
        replay_batch_size: int | None = None,
        store_new: bool = True,
        buffer_policy: str = "reservoir",
        buffer_update: str = "step",
        replay_draw: str = "uniform",
    ):
        super().__init__(buffer_size, replay_batch_size)
        if not isinstance(store_new, bool):
            raise ConfigError(f"replay: store_new must be True or False, got {store_new!r}")
        self.store_new = store_new
        self.buffer_policy = _choice("buffer_policy", buffer_policy, BUFFER_POLICIES)
        self.buffer_update = _choice("buffer_update", buffer_update, BUFFER_UPDATES)
        self.replay_draw = _choice("replay_draw", replay_draw, REPLAY_DRAWS)
        # The shuffled pass of replay_draw="passes" (slots, and how many were drawn) and the
        # largest incoming batch: plain state, so that a resumed run draws the same batches.
        self._pass = torch.zeros(0, dtype=torch.int64)
        self._drawn = 0
        self._largest_batch = 0

    def batch(self, learner, x, y, t):
        self._incoming = len(x)
        if len(self.buffer) == 0:
            return x, y, t
        past = self.buffer.get(self.sample(learner))
        return torch.cat([x, past.x]), torch.cat([y, past.y]), torch.cat([t, past.t])

    def sample(self, learner: Learner) -> torch.Tensor:
        """The slots replayed this step, drawn as ``replay_draw`` says."""
        if self.replay_draw == "uniform":
            return super().sample(learner)
        self._largest_batch = max(self._largest_batch, self._incoming)
        size = len(self.buffer)
        if self._drawn >= len(self._pass) or len(self._pass) != size:
            # A pass ends, or the buffer changed size (it fills, or a task's end rewrote it): a
            # fresh shuffled pass over every filled slot.
            self._pass = torch.randperm(size, generator=learner.generator).to(self.buffer.device)
            self._drawn = 0
        n = self.replay_batch_size or self._largest_batch
        slots = self._pass[self._drawn : self._drawn + n]
        self._drawn += len(slots)
        return slots

    def new_buffer(self, learner: Learner) -> MemoryBuffer:
        if self.buffer_policy == "class-balanced" and learner.stream.target_shape:
            raise ConfigError(f"replay: {CLASS_BALANCE_NEEDS_LABELS}")
        return super().new_buffer(learner)

    def after_step(self, learner, x, y, t, logits):
        if not self.store_new or self.buffer_update != "step":
            return
        n = self._incoming
        if self.buffer_policy == "reservoir":
            self.buffer.reservoir_add(
                x[:n], y[:n], t[:n], generator=learner.generator, report=False
            )
        else:
            self.buffer.balanced_add(
                x[:n], y[:n], t[:n], _GROUP[self.buffer_policy], generator=learner.generator
            )

    def after_task(self, learner: Learner, task: Task) -> None:
        super().after_task(learner, task)
        if self.store_new and self.buffer_update == "task" and not learner.task_learnt_before:
            self.remember(learner, task)
            self._drawn = len(self._pass)  # the next step starts a pass over the new contents

    @torch.no_grad()
    def remember(self, learner: Learner, task: Task) -> None:
        """Offer every training example of ``task`` to the buffer by its policy: through the
        reservoir in chunks, or to the balanced memory all at once (reading only the inputs
        kept)."""
        if self.buffer_policy == "reservoir":
            super().remember(learner, task)
            return
        generator = learner.task_generator("remember")  # the batch order stays untouched
        n = len(task.train)
        self.buffer.balanced_add(
            task.train.lazy_inputs,
            task.train.y,
            torch.full((n,), learner.task_index, dtype=torch.int64),
            _GROUP[self.buffer_policy],
            generator=generator,
        )


_GROUP = {"task-balanced": "task", "class-balanced": "class"}


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"replay: {name} must be one of {', '.join(choices)}, got {value!r}")
    return value  # type: ignore[return-value]
