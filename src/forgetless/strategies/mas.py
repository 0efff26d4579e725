"""Memory aware synapses: importance from how much each weight moves the network's output."""

from __future__ import annotations

import torch

from forgetless.learner import Learner
from forgetless.per_sample import iter_per_sample_grads
from forgetless.scenarios.stream import Protocol, Task
from forgetless.strategies.quadratic import QuadraticPenalty
from forgetless.validation import check_samples

# Per-sample gradients held at once (chunk x parameters floats): about 128 MiB in float32.
_GRADIENT_FLOATS = 2**25


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
        data = task.train
        n = len(data) if self.samples is None else min(self.samples, len(data))
        if n < len(data):
            # The run's batch order stays untouched, so lam = 0 is exactly fine-tuning.
            generator = learner.task_generator("mas")
            rows = torch.randperm(len(data), generator=generator)[:n]
        else:
            rows = torch.arange(n)
        units = None
        if learner.stream.protocol is Protocol.TASK:
            units = torch.tensor(task.units, device=learner.device)

        def squared_norm(out: torch.Tensor) -> torch.Tensor:
            if units is not None:
                out = out[units]
            return out.pow(2).sum()

        model = learner.model
        # Keyed by name, as the per-sample gradients are; in model.parameters() order.
        omega = {
            name: torch.zeros_like(p) for name, p in model.named_parameters() if p.requires_grad
        }
        size = max(1, min(256, _GRADIENT_FLOATS // max(1, sum(o.numel() for o in omega.values()))))
        was_training = model.training
        model.eval()
        try:
            # Inputs are made model-ready a chunk at a time: stored images stay compact (uint8).
            for chunk in rows.split(size):
                x = data.inputs(chunk).to(learner.device)
                for grads in iter_per_sample_grads(model, squared_norm, x, chunk_size=size):
                    for name, g in grads.items():
                        omega[name] += g.abs().sum(dim=0)
        finally:
            model.train(was_training)
        return [o / n for o in omega.values()]
