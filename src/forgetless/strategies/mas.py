"""Memory aware synapses: importance from how much each weight moves the network's output."""

from __future__ import annotations

import torch

from forgetless.fisher import output_sensitivity
from forgetless.learner import Learner, bind_task
from forgetless.scenarios.stream import Protocol, Task
from forgetless.strategies.quadratic import QuadraticPenalty
from forgetless.validation import check_samples


class MAS(QuadraticPenalty):
    """Memory aware synapses (Aljundi, Babiloni, Elhoseiny, Rohrbach and Tuytelaars 2018,
    "Memory Aware Synapses: Learning what (not) to forget", ECCV).

    After each task, the importance of weight ``i`` is the mean sensitivity of the squared L2
    norm of the output to it, over the task's training inputs ``x_1..x_N`` (Eq. 2 and 4):

        Omega_i += (1/N) * sum_k | d ||F(x_k; theta)||_2^2 / d theta_i |

    ``F`` being the logits (under task-incremental learning, the task's own output units: its
    head). No labels are needed. Importances add up over tasks and the anchor is the latest
    weights; later tasks are trained with

        L = L_task + lam/2 * sum_i Omega_i * (theta_i - theta*_i)^2

    The paper's Eq. 3 writes ``lambda * sum ...`` with no 1/2; here ``lam`` keeps the meaning it
    has for every quadratic penalty of the toolkit (L2, EWC), so the paper's ``lambda`` is
    ``lam / 2``.

    The per-example absolute gradients are never formed one example at a time: linear and
    convolutional layers have closed forms (:func:`forgetless.fisher.output_sensitivity`).

    Args:
        lam: the strength (>= 0); 0 is exactly fine-tuning.
        samples: inputs per task to average over: ``None`` for all of the task's training set,
            else a positive int (drawn without replacement, from the run's seed and the task).
    """

    name = "mas"

    def __init__(self, lam: float = 1.0, samples: int | None = None):
        super().__init__(lam=lam, online=True, gamma=1.0)
        self.samples = check_samples("samples", samples)

    def importance(self, learner: Learner, task: Task) -> list[torch.Tensor]:
        units = task.units if learner.stream.protocol is Protocol.TASK else None
        # Its own generator: the run's batch order stays untouched, so lam = 0 is fine-tuning.
        return output_sensitivity(
            bind_task(learner.model, learner.task_index),
            task.train.lazy_inputs,  # floats a chunk at a time, not all at once
            units=units,
            n_samples=self.samples,
            generator=learner.task_generator("mas"),
        )
