"""Dark experience replay: store the network's logits with the inputs and match them later."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from forgetless.buffer import MemoryBuffer
from forgetless.learner import Learner
from forgetless.losses import cross_entropy
from forgetless.strategies.replay import Rehearsal
from forgetless.validation import check_range


class DER(Rehearsal):
    """Dark experience replay (Buzzega et al. 2020, "Dark Experience for General Continual
    Learning: a Strong, Simple Baseline").

    The buffer holds inputs with the logits ``z = h_theta(x)`` the network gave them when they
    were trained on (reservoir sampling, so a uniform sample of the stream). Each step adds

        alpha * E_{(x', z') ~ M} || h_theta(x') - z' ||^2

    (a mean squared error over a buffer sample, averaged over the units too, as in the authors'
    code, so the weights below carry over), distilling the network's past responses, not just
    its past answers. ``h_theta`` is the raw output layer: under task-incremental learning the
    logits are stored and matched before the task mask is applied.

    Args:
        buffer_size: examples the buffer holds (>= 1).
        alpha: weight of the logit-matching term (>= 0). The default 0.3 is the value the
            authors' code (Mammoth, ``utils/best_args.py``) gives for Seq-CIFAR-10 with 200
            examples; for Seq-MNIST it gives 0.2 (200 examples), 1.0 (500) and 0.5 (5120).
        replay_batch_size: stored examples per step; ``None``: as many as the incoming batch.
    """

    name = "der"

    def __init__(
        self, buffer_size: int = 200, alpha: float = 0.3, replay_batch_size: int | None = None
    ):
        super().__init__(buffer_size, replay_batch_size)
        self.alpha = check_range("alpha", alpha, 0.0)
        self._outputs: torch.Tensor | None = None

    def new_buffer(self, learner: Learner) -> MemoryBuffer:
        # Logits per target: a classifier's per example, a language model's at every position.
        stream = learner.stream
        return MemoryBuffer.for_stream(
            self.buffer_size, stream, stream.num_outputs, device=learner.device
        )

    def logits_of(self, learner: Learner, x: torch.Tensor) -> torch.Tensor:
        # A trained start's task: the given model's responses, the "dark knowledge" DER keeps.
        was_training = learner.model.training
        learner.model.eval()
        try:
            return learner.model(x)
        finally:
            learner.model.train(was_training)

    def penalty(self, learner, x, y, t, logits):
        n = self._incoming
        # The raw outputs: under task-IL the logits passed in are masked with -inf.
        self._outputs = learner.outputs[:n].detach()
        if len(self.buffer) == 0:
            return None
        return self.replay_loss(learner)

    def replay_loss(self, learner: Learner) -> torch.Tensor:
        """``alpha * MSE(h(x'), z')`` on a buffer sample."""
        past = self.buffer.get(self.sample(learner))
        return self.alpha * F.mse_loss(learner.forward(past.x, past.t), past.logits)

    def after_step(self, learner, x, y, t, logits):
        n = self._incoming
        self.buffer.reservoir_add(
            x[:n], y[:n], t[:n], self._outputs, learner.generator, report=False
        )
        self._outputs = None


class DERPP(DER):
    """DER++ (Buzzega et al. 2020): DER plus replayed labels on a second sample,

        alpha * E_{(x', z') ~ M} || h_theta(x') - z' ||^2
        + beta * E_{(x'', y'') ~ M} CE(f_theta(x''), y''),

    the two samples drawn independently; ``f_theta`` is masked to each stored example's task
    under task-incremental learning. The labels correct logits stored while a task was still
    being learnt.

    Args:
        buffer_size: examples the buffer holds (>= 1).
        alpha: weight of the logit-matching term (>= 0).
        beta: weight of the replayed cross-entropy (>= 0).
        replay_batch_size: stored examples per sample; ``None``: as many as the incoming batch.

    The defaults (alpha 0.1, beta 0.5) are the values the authors' code gives for Seq-CIFAR-10
    with 200 examples; for Seq-MNIST it gives alpha 0.2, beta 1.0 (200 examples), alpha 1.0,
    beta 0.5 (500) and alpha 0.2, beta 0.5 (5120).
    """

    name = "derpp"

    def __init__(
        self,
        buffer_size: int = 200,
        alpha: float = 0.1,
        beta: float = 0.5,
        replay_batch_size: int | None = None,
    ):
        super().__init__(buffer_size, alpha, replay_batch_size)
        self.beta = check_range("beta", beta, 0.0)

    def replay_loss(self, learner: Learner) -> torch.Tensor:
        past = self.buffer.get(self.sample(learner))
        # Over every target: a label per example, or a language model's token at every position.
        replayed = cross_entropy(learner.logits(past.x, past.t), past.y)
        return super().replay_loss(learner) + self.beta * replayed
