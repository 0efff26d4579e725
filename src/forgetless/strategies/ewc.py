"""Elastic weight consolidation: importance from the Fisher information, per task or online."""

from __future__ import annotations

import torch

from forgetless.errors import ConfigError
from forgetless.fisher import FISHER_KINDS, SEQUENCE_KIND, diagonal_fisher
from forgetless.learner import Learner, bind_task
from forgetless.scenarios.stream import Task
from forgetless.strategies.quadratic import QuadraticPenalty
from forgetless.validation import check_range, check_samples

#: EWC's default Fisher: the exact one for a classifier, its sampled estimate for a sequence
#: model (where the exact one costs a backward pass per position and vocabulary entry).
AUTO = "auto"


class EWC(QuadraticPenalty):
    """Elastic weight consolidation (Kirkpatrick et al. 2017, "Overcoming catastrophic
    forgetting in neural networks", PNAS, Eq. 3).

    After each task ``t`` the diagonal Fisher information ``F_t`` and the weights ``theta*_t``
    are kept; task ``k`` is then trained on

        L_k(theta) + lam/2 * sum_{t<k} sum_i F_{t,i} (theta_i - theta*_{t,i})^2

    one penalty per past task. The terms are held merged into one quadratic (see
    ``quadratic.py``), so neither memory (two copies of the weights) nor the cost of a step grows
    with the number of tasks.

    ``F_t`` is the mean over the task's training examples (or ``fisher_samples`` of them) of
    :func:`forgetless.fisher.diagonal_fisher` of kind ``fisher``: ``auto`` (the default:
    ``exact`` for a classifier, ``sample`` for a sequence model), ``exact`` (every class,
    weighted by the model's probabilities), ``sample`` (one label drawn from them),
    ``empirical`` (the true label), ``weighted-empirical`` (the true label, weighted by its
    probability, as Mammoth's online EWC computes it) or ``batched`` (squared mini-batch
    gradients of 128 examples; biased low by about that factor), as compared by van de Ven 2025, "On the computation of
    the Fisher information in continual learning" (ICLR blog post). Under task-incremental
    learning the probabilities are over the task's own output units.

    On a language model (a stream of token sequences) a sequence is one example, its
    log-likelihood the sum over its positions (``forgetless.fisher``, "Sequence models"); the
    exact Fisher would need a backward pass per position and vocabulary entry, so ``auto``
    takes ``sample``, its unbiased estimate at one pass per sequence, and ``exact`` given
    explicitly is refused there. A sequence's Fisher sums over its positions, so ``lam`` must be
    far smaller than for images: 10 suited the 32-token sequences of the two-domain test corpus
    (1000 kept the first domain but barely learnt the second).

    The scale of ``lam``. It multiplies a Fisher that is a *mean* over examples, so it does not
    change with the size of a task, but it does with the protocol (task-IL probabilities over a
    task's 2 units are confident, so its Fisher is small), the network and the kind (``batched``
    is about ``batch_size`` times smaller). Implementations that sum the Fisher over examples,
    or over classes without the ``p(c|x)`` weights, need other values, which is why published
    defaults for Split-MNIST span 1e5 to 1e10. Sweep it on a log scale (1e0, 1e1, ..., 1e7),
    then by factors of 3 around the best, choosing on validation data, never on the test
    tasks. Found here (task-IL, Adam): 1e3 on split digits (MLP 64-64, lr 3e-3), 1e4 on
    Split-MNIST (MLP 400-400, lr 1e-3, 2000 iterations per task). With plain SGD, training
    diverges once ``lr * lam * max_i F_i`` exceeds ``2 (1 + momentum)``; a warning says so.

    Args:
        lam: the strength ``lambda`` (>= 0); 0 is exactly fine-tuning.
        fisher: the Fisher estimate, one of ``auto``, ``exact``, ``sample``, ``empirical``,
            ``weighted-empirical``, ``batched``.
        fisher_samples: examples per task the Fisher averages over: ``None`` for all of the
            task's training set, else a positive int (drawn without replacement).
    """

    name = "ewc"

    def __init__(self, lam: float = 1000.0, fisher: str = AUTO, fisher_samples: int | None = None):
        super().__init__(lam=lam, online=False)
        self.fisher = _check_kind(fisher)
        self.fisher_samples = check_samples("fisher_samples", fisher_samples)

    def fisher_kind(self, task: Task) -> str:
        """The kind computed on ``task``: ``fisher``, with ``auto`` resolved (``exact`` for
        labels, :data:`~forgetless.fisher.SEQUENCE_KIND` for sequence targets)."""
        if self.fisher != AUTO:
            return self.fisher
        return SEQUENCE_KIND if task.train.target_shape else "exact"

    def importance(self, learner: Learner, task: Task) -> list[torch.Tensor]:
        units = None
        if learner.output_mask is not None:
            units = learner.output_mask[learner.task_index]
        # Drawing Fisher samples leaves the run's batch order as it is: lam = 0 is fine-tuning.
        generator = learner.task_generator("fisher")
        return diagonal_fisher(
            bind_task(learner.model, learner.task_index),
            task.train.lazy_inputs,  # floats a chunk at a time: MNIST's 60,000 are 188 MB
            task.train.y,
            units,
            kind=self.fisher_kind(task),
            n_samples=self.fisher_samples,
            generator=generator,
        )


class OnlineEWC(EWC):
    """Online EWC (Schwarz et al. 2018, "Progress & compress: a scalable framework for
    continual learning", ICML; the running Fisher is also what Huszár 2018, "Note on the
    quadratic penalties in elastic weight consolidation", PNAS, argued for).

    One running Fisher and one anchor, whatever the number of tasks (memory: two copies of
    the weights). After task ``t``, with ``F_t`` its diagonal Fisher (as in :class:`EWC`),

        F <- gamma * F + F_t,    theta* <- theta (the weights at the end of task t)

    and the next task is trained on ``L(theta) + lam/2 * sum_i F_i (theta_i - theta*_i)^2``.
    ``gamma = 1`` keeps every task's Fisher at full weight; ``gamma < 1`` lets old tasks fade.
    The scale of ``lam`` is as for :class:`EWC`.

    Args:
        lam: the strength ``lambda`` (>= 0); 0 is exactly fine-tuning.
        fisher: the Fisher estimate, one of ``auto``, ``exact``, ``sample``, ``empirical``,
            ``weighted-empirical``, ``batched``.
        fisher_samples: examples per task the Fisher averages over (``None``: all).
        gamma: the decay of the running Fisher, in (0, 1].
    """

    name = "online-ewc"

    def __init__(
        self,
        lam: float = 1000.0,
        fisher: str = AUTO,
        fisher_samples: int | None = None,
        gamma: float = 1.0,
    ):
        super().__init__(lam=lam, fisher=fisher, fisher_samples=fisher_samples)
        self.online = True
        self.gamma = check_range("gamma", gamma, 0.0, 1.0, low_open=True)


def _check_kind(fisher: str) -> str:
    if fisher != AUTO and fisher not in FISHER_KINDS:
        raise ConfigError(
            f"fisher must be one of {', '.join((AUTO, *FISHER_KINDS))}, got {fisher!r}"
        )
    return fisher
