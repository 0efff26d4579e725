"""Experience replay: train on each batch together with a sample of stored past examples."""

from __future__ import annotations

import torch

from forgetless.buffer import MemoryBuffer
from forgetless.learner import Learner
from forgetless.scenarios.stream import Task
from forgetless.strategies.base import Strategy
from forgetless.validation import check_positive_int


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

    Args:
        buffer_size: examples the buffer holds (>= 1).
        replay_batch_size: stored examples added to each batch; ``None``: as many as the
            incoming batch has (the paper's setting).
    """

    name = "replay"

    def batch(self, learner, x, y, t):
        self._incoming = len(x)
        if len(self.buffer) == 0:
            return x, y, t
        past = self.buffer.get(self.sample(learner))
        return torch.cat([x, past.x]), torch.cat([y, past.y]), torch.cat([t, past.t])

    def after_step(self, learner, x, y, t, logits):
        n = self._incoming
        self.buffer.reservoir_add(x[:n], y[:n], t[:n], generator=learner.generator)
