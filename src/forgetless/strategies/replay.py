"""Experience replay: train on each batch together with a sample of stored past examples."""

from __future__ import annotations

import torch

from forgetless.buffer import MemoryBuffer
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
        return MemoryBuffer(self.buffer_size, learner.stream.input_shape, device=learner.device)

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
        index = torch.full((REMEMBER_CHUNK,), learner.task_index, dtype=torch.int64)
        for start in range(0, len(task.train), REMEMBER_CHUNK):
            rows = slice(start, start + REMEMBER_CHUNK)
            x = task.train.inputs(rows).to(learner.device)
            y = task.train.y[rows].to(learner.device)
            t = index[: len(x)].to(learner.device)
            self.buffer.reservoir_add(x, y, t, self.logits_of(learner, x), generator)

    def logits_of(self, learner: Learner, x: torch.Tensor) -> torch.Tensor | None:
        """What the buffer stores with remembered inputs besides labels (DER: the logits)."""
        return None

    def sample(self, learner: Learner) -> torch.Tensor:
        """Slots of a uniform sample of the buffer, ``replay_batch_size`` of them (or as many
        as the incoming batch)."""
        n = self.replay_batch_size or self._incoming
        return self.buffer.sample(n, generator=learner.generator)


class Replay(Rehearsal):
    """Experience replay with a reservoir buffer (Chaudhry et al. 2019, "On tiny episodic
    memories in continual learning").

    Each step minimises the cross-entropy over the incoming batch ``B`` joined with a uniform
    sample ``M`` of the buffer,

        L = CE(f(x), y) over (x, y) in B ∪ M,

    each stored example keeping its task id (so under task-incremental learning its logits are
    masked to its own task). After the step the incoming examples, and only they, are offered to
    the buffer by reservoir sampling, which keeps a uniform sample of the whole stream.

    From a trained start (``train(trained_tasks=k)``) the learnt tasks' training examples are
    offered to the buffer when their ``after_task`` runs (:meth:`Rehearsal.remember`). Where
    those examples are a retained sample of old data, ``store_new=False`` replays that sample
    as it is: the reservoir would otherwise let the new examples displace it, keeping about
    ``len(sample) / (len(sample) + examples trained)`` of it by the end.

    Args:
        buffer_size: examples the buffer holds (>= 1).
        replay_batch_size: stored examples added to each batch; ``None``: as many as the
            incoming batch has (the paper's setting).
        store_new: offer each step's incoming examples to the buffer (the paper); ``False``
            keeps only what the learnt tasks of a trained start put there.
    """

    name = "replay"

    def __init__(
        self,
        buffer_size: int = 200,
        replay_batch_size: int | None = None,
        store_new: bool = True,
    ):
        super().__init__(buffer_size, replay_batch_size)
        if not isinstance(store_new, bool):
            raise ConfigError(f"replay: store_new must be True or False, got {store_new!r}")
        self.store_new = store_new

    def batch(self, learner, x, y, t):
        self._incoming = len(x)
        if len(self.buffer) == 0:
            return x, y, t
        past = self.buffer.get(self.sample(learner))
        return torch.cat([x, past.x]), torch.cat([y, past.y]), torch.cat([t, past.t])

    def after_step(self, learner, x, y, t, logits):
        if not self.store_new:
            return
        n = self._incoming
        self.buffer.reservoir_add(x[:n], y[:n], t[:n], generator=learner.generator)
