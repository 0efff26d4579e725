"""GSS: a replay buffer of the examples whose gradients point in the most diverse directions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.buffer import MemoryBuffer
from forgetless.learner import Learner
from forgetless.per_sample import iter_per_sample_grads
from forgetless.scenarios.stream import Task
from forgetless.strategies.base import Strategy
from forgetless.validation import check_positive_int


class GSS(Strategy):
    """Gradient-based sample selection, greedy variant (Aljundi et al. 2019, "Gradient based
    sample selection for online continual learning", NeurIPS, Algorithm 2, GSS-greedy).

    Each stored example ``i`` carries a score ``C_i``. For an incoming example with gradient
    ``g = grad_theta l(x, y)`` and ``G_1..G_n`` the gradients of ``n`` random stored examples:

        c = max_j <g, G_j> / (||g|| ||G_j||) + 1        (in [0, 2])

    - buffer not full: store the example with ``C = c``;
    - buffer full and ``c < 1`` (its gradient is at more than 90 degrees from every reference):
      draw a slot ``i`` with ``P(i) = C_i / sum_j C_j`` and ``r ~ U(0, 1)``; if
      ``r < C_i / (C_i + c)``, the example replaces slot ``i`` and ``C_i <- c``.

    So the buffer drifts towards examples whose gradients disagree, approximating the
    constraint set of the whole stream (maximal solid angle) without task boundaries. Each step,
    ``replay_batch_size`` random stored examples are appended to the batch (experience replay),
    and the step's incoming examples are then offered to the buffer.

    Choices the paper leaves open or that batch the per-example algorithm: gradients are taken
    after the optimiser step, in eval mode, by one vectorised call (``torch.func``) per step;
    one reference set is drawn per batch, as in the authors' code; examples compared with an
    empty buffer score 1 (as if orthogonal); the examples of a batch that compete for slots
    draw distinct slots, so none overwrites another and the batch is decided at once.

    Args:
        buffer_size: stored examples (``M`` in the paper).
        n_reference: random stored examples each incoming gradient is compared with (``n``;
            the paper uses 10).
        replay_batch_size: stored examples replayed per step.
    """

    name = "gss"
    stores_raw_data = True

    def __init__(self, buffer_size: int = 200, n_reference: int = 10, replay_batch_size: int = 10):
        self.buffer_size = check_positive_int("buffer_size", buffer_size)
        self.n_reference = check_positive_int("n_reference", n_reference)
        self.replay_batch_size = check_positive_int("replay_batch_size", replay_batch_size)
        self._buffer: MemoryBuffer | None = None
        self._scores = torch.zeros(self.buffer_size)
        self._incoming: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def before_task(self, learner: Learner, task: Task) -> None:
        if self._buffer is None:
            self._buffer = MemoryBuffer(
                self.buffer_size, learner.stream.input_shape, device=learner.device
            )

    def batch(
        self, learner: Learner, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._incoming = (x, y, t)
        buffer = self._buffer
        if len(buffer) == 0:
            return x, y, t
        rows = buffer.sample(self.replay_batch_size, generator=learner.generator)
        return (
            torch.cat([x, buffer.x[rows]]),
            torch.cat([y, buffer.y[rows]]),
            torch.cat([t, buffer.t[rows]]),
        )

    def after_step(
        self,
        learner: Learner,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        logits: torch.Tensor,
    ) -> None:
        x, y, t = self._incoming
        buffer, generator = self._buffer, learner.generator
        refs = buffer.sample(self.n_reference, generator=generator)
        mask = learner.output_mask
        c = gradient_scores(
            learner.model,
            x,
            y,
            buffer.x[refs],
            buffer.y[refs],
            None if mask is None else mask[t],
            None if mask is None else mask[buffer.t[refs]],
        ).cpu()
        # A zero score (exactly opposite gradients) could never be drawn for replacement again.
        c = c.clamp_min(1e-6)
        # Room left: store the first examples as they come.
        size = len(buffer)
        k = min(self.buffer_size - size, len(x))
        if k:
            buffer.write(torch.arange(size, size + k), x[:k], y[:k], t[:k])
            self._scores[size : size + k] = c[:k]
        if k < len(x):
            slots, rows = replacements(self._scores, c[k:], generator)
            rows = (rows + k).to(x.device)
            buffer.write(slots, x[rows], y[rows], t[rows])
            self._scores[slots] = c[rows.cpu()]

    @property
    def buffer(self) -> MemoryBuffer | None:
        """The stored examples (``None`` before the first task)."""
        return self._buffer


def replacements(
    scores: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which incoming examples replace which slots of a full GSS buffer (Aljundi et al. 2019,
    Algorithm 2, lines 9-15).

    An example with ``c_k < 1`` draws a slot ``i`` with ``P(i) = C_i / sum_j C_j`` and
    ``r ~ U(0, 1)``, and replaces it if ``r < C_i / (C_i + c_k)``. Examples of one batch draw
    distinct slots, so they never overwrite each other.

    Args:
        scores: ``[M]`` positive scores ``C`` of the stored examples (on the CPU).
        c: ``[B]`` scores of the incoming examples (on the CPU).
        generator: the random generator.

    Returns:
        ``(slots, rows)``: slot ``slots[k]`` receives incoming example ``rows[k]``.
    """
    rows = (c < 1).nonzero().squeeze(1)[: len(scores)]
    if len(rows) == 0:
        return rows, rows
    slots = torch.multinomial(scores, len(rows), generator=generator)
    r = torch.rand(len(rows), generator=generator)
    accept = r < scores[slots] / (scores[slots] + c[rows])
    return slots[accept], rows[accept]


def gradient_scores(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ref_x: torch.Tensor,
    ref_y: torch.Tensor,
    allowed: torch.Tensor | None = None,
    ref_allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """GSS scores ``c_k = max_j cos(g_k, G_j) + 1`` of the examples ``(x, y)`` against the
    references ``(ref_x, ref_y)``, with ``g``, ``G`` per-example gradients of the cross-entropy
    (Aljundi et al. 2019, Algorithm 2, line 8). With no reference, every score is 1.

    Args:
        model: the network; evaluated in eval mode (restored afterwards).
        x, y: ``[B, ...]`` inputs and ``[B]`` targets.
        ref_x, ref_y: ``[n, ...]`` and ``[n]`` reference examples.
        allowed, ref_allowed: ``[B, C]`` and ``[n, C]`` output masks (task-incremental
            learning: the units each example may answer with), or ``None``.

    Returns:
        ``[B]`` scores in ``[0, 2]``.
    """
    if len(ref_x) == 0:
        return torch.ones(len(x), device=x.device)
    inputs, targets = torch.cat([x, ref_x]), torch.cat([y, ref_y])
    args = (targets,) if allowed is None else (targets, torch.cat([allowed, ref_allowed]))
    was_training = model.training
    model.eval()
    try:
        flat = torch.cat(
            [
                torch.cat([g.flatten(1) for g in chunk.values()], dim=1)
                for chunk in iter_per_sample_grads(model, _example_loss, inputs, *args)
            ]
        )
    finally:
        model.train(was_training)
    unit = F.normalize(flat, dim=1)
    return (unit[: len(x)] @ unit[len(x) :].T).amax(dim=1) + 1


def _example_loss(
    output: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    if allowed is not None:
        output = output.masked_fill(~allowed, float("-inf"))
    return F.cross_entropy(output, target)
