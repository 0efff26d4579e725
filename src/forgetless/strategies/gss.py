"""GSS: a replay buffer of the examples whose gradients point in the most diverse directions."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.buffer import MemoryBuffer
from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.per_sample import iter_per_sample_grads
from forgetless.scenarios.stream import Task
from forgetless.strategies.base import Strategy
from forgetless.validation import check_positive_int

#: The ways a full buffer decides whether a step's examples may compete for slots.
GATES = ("example", "batch")
#: How the examples that compete draw their slots: all at once, distinct slots (ours), or one
#: after another, each from the scores the previous one left (the DER authors' code).
DRAWS = ("distinct", "sequential")
#: The score the authors' code gives the first examples, stored with nothing to compare them to.
FIRST_BATCH_SCORE = 0.1


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

    ``gate="batch"`` is the rule of the DER authors' code instead (Mammoth's ``gss_buffer.py``,
    which gave the GSS figures of Buzzega et al. 2020; Aljundi et al.'s own ``GSS_Greedy.py``
    also gates on the batch's gradient): the gate is one score for the whole step's batch ``B``,

        c_B = max_j cos(grad_theta (1/|B|) sum_{k in B} l(x_k, y_k), G_j) + 1,

    the gradient of the batch's mean loss against the same ``n`` references. While the buffer
    fills, the batch's examples are stored with ``C = c_B`` (``C = 0.1`` for the first ones,
    stored with nothing to compare them to, as both codes do; these are rarely drawn and rarely
    lose, so the first batch tends to stay). Once it is full, if ``c_B < 1`` *every* example
    of the batch competes as above with its own score ``c_k`` (whether or not ``c_k < 1``); if
    ``c_B >= 1`` none does. The batch's mean gradient is the
    mean of the per-example gradients, so both gates cost the same.

    Choices the paper leaves open or that batch the per-example algorithm: gradients are taken
    after the optimiser step, in eval mode, by one vectorised call (``torch.func``) per step;
    one reference set is drawn per batch, as in the authors' code; with ``gate="example"``,
    examples compared with an empty buffer score 1 (as if orthogonal); the examples of a batch
    that compete for slots draw distinct slots, so none overwrites another and the batch is
    decided at once (the Mammoth code draws them one after another, each from the scores left
    by the previous one: ``draws="sequential"``).

    :attr:`selection_stats` counts, per task, the examples offered to the full buffer, those
    that competed for a slot and those that replaced one, and the buffer's classes at the end
    of the task.

    Args:
        buffer_size: stored examples (``M`` in the paper).
        n_reference: random stored examples each incoming gradient is compared with (``n``;
            the paper uses 10).
        replay_batch_size: stored examples replayed per step.
        gate: what decides whether incoming examples compete for the buffer: ``"example"`` (each example's own score decides whether it competes, and is
            stored with it: the paper's Algorithm 2) or ``"batch"`` (the batch's mean
            gradient decides for all, and fills the buffer with its score: the authors' code).
        draws: how the competing examples draw slots: ``"distinct"`` (all at once, distinct
            slots, so none overwrites another: :func:`replacements`) or ``"sequential"`` (one
            after another, each from the scores the previous one left, so a later one may take
            the slot an earlier one won: Mammoth's ``functional_reservoir`` loop,
            :func:`sequential_replacements`; a Python loop over the competing examples, in the
            steps where some compete).
    """

    name = "gss"
    stores_raw_data = True
    trained_start_refusal = (
        "GSS chooses its buffer from the gradients of the steps it trains, and a trained start "
        "takes none on the learnt tasks; use replay (a uniform sample) or der"
    )
    supports_task_id_models = False  # its gradient scores call model(x)

    def __init__(
        self,
        buffer_size: int = 200,
        n_reference: int = 10,
        replay_batch_size: int = 10,
        gate: str = "example",
        draws: str = "distinct",
    ):
        self.buffer_size = check_positive_int("buffer_size", buffer_size)
        self.n_reference = check_positive_int("n_reference", n_reference)
        self.replay_batch_size = check_positive_int("replay_batch_size", replay_batch_size)
        if gate not in GATES:
            raise ConfigError(
                f"gate must be one of {', '.join(GATES)}, got {gate!r}: 'example' for the "
                "paper's per-example rule, 'batch' for the authors' code"
            )
        self.gate = gate
        if draws not in DRAWS:
            raise ConfigError(
                f"draws must be one of {', '.join(DRAWS)}, got {draws!r}: 'distinct' for slots "
                "drawn at once, 'sequential' for one after another (the authors' code)"
            )
        self.draws = draws
        self._buffer: MemoryBuffer | None = None
        self._scores = torch.zeros(self.buffer_size)
        self._incoming: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._stats: list[dict[str, Any]] = []

    def before_task(self, learner: Learner, task: Task) -> None:
        if self._buffer is None:
            self._buffer = MemoryBuffer.for_stream(
                self.buffer_size, learner.stream, device=learner.device
            )
        self._stats.append(
            {"steps": 0, "stored": 0, "offered": 0, "gate_open": 0, "competed": 0, "replaced": 0}
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
        stats = self._stats[-1]
        stats["steps"] += 1
        refs = buffer.sample(self.n_reference, generator=generator)
        mask = learner.output_mask
        c, c_batch = gradient_scores(
            learner.model,
            x,
            y,
            buffer.x[refs],
            buffer.y[refs],
            None if mask is None else mask[t],
            None if mask is None else mask[buffer.t[refs]],
            with_batch=True,
        )
        # A zero score (exactly opposite gradients) could never be drawn for replacement again.
        c = c.cpu().clamp_min(1e-6)
        if self.gate == "batch":
            c_batch = FIRST_BATCH_SCORE if len(refs) == 0 else max(float(c_batch), 1e-6)
            fill_scores = torch.full_like(c, c_batch)
            compete = torch.full_like(c, c_batch < 1, dtype=torch.bool)
        else:
            fill_scores, compete = c, c < 1
        # Room left: store the first examples as they come.
        size = len(buffer)
        k = min(self.buffer_size - size, len(x))
        if k:
            buffer.write(torch.arange(size, size + k), x[:k], y[:k], t[:k])
            self._scores[size : size + k] = fill_scores[:k]
            stats["stored"] += k
        if k < len(x):
            stats["offered"] += len(x) - k
            stats["gate_open"] += int(bool(compete[k:].any()))
            stats["competed"] += min(int(compete[k:].sum()), self.buffer_size)
            draw = replacements if self.draws == "distinct" else sequential_replacements
            slots, rows = draw(self._scores, c[k:], generator, compete[k:])
            rows = (rows + k).to(x.device)
            buffer.write(slots, x[rows], y[rows], t[rows])
            self._scores[slots] = c[rows.cpu()]
            stats["replaced"] += len(slots)

    def after_task(self, learner: Learner, task: Task) -> None:
        buffer = self._buffer
        stored = buffer.y[: len(buffer)].cpu().flatten()  # sequences: every target token
        self._stats[-1]["classes"] = torch.bincount(
            stored, minlength=learner.stream.num_outputs
        ).tolist()

    def report(self, learner: Learner) -> dict[str, Any]:
        """``selection_stats``: how the buffer was filled, per task."""
        return {"selection_stats": self.selection_stats}

    @property
    def buffer(self) -> MemoryBuffer | None:
        """The stored examples (``None`` before the first task)."""
        return self._buffer

    @property
    def selection_stats(self) -> list[dict[str, Any]]:
        """Per task seen: ``steps``; ``stored`` (examples written while the buffer filled);
        ``offered`` (examples that met a full buffer); ``gate_open`` (steps in which some of
        them could compete); ``competed`` (examples that drew a slot); ``replaced`` (examples
        that took it); ``replacement_rate`` (``replaced / offered``); and, once the task is
        over, ``classes`` (stored examples per output unit; for sequences, stored target
        tokens per unit)."""
        return [
            {**s, "replacement_rate": s["replaced"] / s["offered"] if s["offered"] else None}
            for s in self._stats
        ]


def replacements(
    scores: torch.Tensor,
    c: torch.Tensor,
    generator: torch.Generator | None = None,
    compete: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which incoming examples replace which slots of a full GSS buffer (Aljundi et al. 2019,
    Algorithm 2, lines 9-15).

    An example that competes (by default: ``c_k < 1``) draws a slot ``i`` with
    ``P(i) = C_i / sum_j C_j`` and ``r ~ U(0, 1)``, and replaces it if
    ``r < C_i / (C_i + c_k)``. Examples of one batch draw distinct slots, so they never
    overwrite each other (at most ``len(scores)`` of them compete, the first ones).

    Args:
        scores: ``[M]`` positive scores ``C`` of the stored examples (on the CPU).
        c: ``[B]`` scores of the incoming examples (on the CPU).
        generator: the random generator.
        compete: ``[B]`` booleans, the examples that compete; ``None`` for ``c < 1``.

    Returns:
        ``(slots, rows)``: slot ``slots[k]`` receives incoming example ``rows[k]``.
    """
    if compete is None:
        compete = c < 1
    rows = compete.nonzero().squeeze(1)[: len(scores)]
    if len(rows) == 0:
        return rows, rows
    slots = torch.multinomial(scores, len(rows), generator=generator)
    r = torch.rand(len(rows), generator=generator)
    accept = r < scores[slots] / (scores[slots] + c[rows])
    return slots[accept], rows[accept]


def sequential_replacements(
    scores: torch.Tensor,
    c: torch.Tensor,
    generator: torch.Generator | None = None,
    compete: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`replacements` drawn as the DER authors' code does (Mammoth's
    ``functional_reservoir`` loop): the competing examples one after another, each drawing a
    slot ``i`` with ``P(i) = C_i / sum_j C_j`` from the scores the previous ones left (updated
    in place in ``scores``) and replacing it if ``r < C_i / (C_i + c_k)``; two may pick the same
    slot, the later one winning. Arguments and result as :func:`replacements`; every
    competing example draws (not only the first ``len(scores)``)."""
    if compete is None:
        compete = c < 1
    taken: dict[int, int] = {}
    for row in compete.nonzero().squeeze(1).tolist():
        slot = int(torch.multinomial(scores, 1, generator=generator))
        r = float(torch.rand((), generator=generator))
        if r < float(scores[slot] / (scores[slot] + c[row])):
            scores[slot] = c[row]
            taken[slot] = row
    slots = torch.tensor(list(taken), dtype=torch.int64)
    return slots, torch.tensor(list(taken.values()), dtype=torch.int64)


def gradient_scores(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ref_x: torch.Tensor,
    ref_y: torch.Tensor,
    allowed: torch.Tensor | None = None,
    ref_allowed: torch.Tensor | None = None,
    with_batch: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """GSS scores ``c_k = max_j cos(g_k, G_j) + 1`` of the examples ``(x, y)`` against the
    references ``(ref_x, ref_y)``, with ``g``, ``G`` per-example gradients of the cross-entropy
    (Aljundi et al. 2019, Algorithm 2, line 8). With no reference, every score is 1.

    Args:
        model: the network; evaluated in eval mode (restored afterwards).
        x, y: ``[B, ...]`` inputs and ``[B]`` targets.
        ref_x, ref_y: ``[n, ...]`` and ``[n]`` reference examples.
        allowed, ref_allowed: ``[B, C]`` and ``[n, C]`` output masks (task-incremental
            learning: the units each example may answer with), or ``None``.
        with_batch: also return the batch's score ``c_B = max_j cos(g_B, G_j) + 1``, with
            ``g_B = (1/B) sum_k g_k`` the gradient of the batch's mean loss (the authors' gate).

    Returns:
        ``[B]`` scores in ``[0, 2]``; with ``with_batch``, ``(scores, c_B)`` (``c_B`` a
        0-dimensional tensor, 1 with no reference).
    """
    if len(ref_x) == 0:
        ones = torch.ones(len(x), device=x.device)
        return (ones, torch.ones((), device=x.device)) if with_batch else ones
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
    refs = F.normalize(flat[len(x) :], dim=1)
    scores = (F.normalize(flat[: len(x)], dim=1) @ refs.T).amax(dim=1) + 1
    if not with_batch:
        return scores
    batch = F.normalize(flat[: len(x)].mean(0), dim=0)
    return scores, (refs @ batch).amax() + 1


def _example_loss(
    output: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    if allowed is not None:
        output = output.masked_fill(~allowed, float("-inf"))
    return F.cross_entropy(output, target)
