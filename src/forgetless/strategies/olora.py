"""O-LoRA: a new LoRA per task, kept orthogonal to the subspaces of the earlier tasks' LoRAs."""

from __future__ import annotations

from typing import Any

import torch

from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.models import adapters
from forgetless.scenarios.stream import Task
from forgetless.strategies.lora import LoRA
from forgetless.validation import check_range


class OLoRA(LoRA):
    """Orthogonal subspace learning (Wang, Chen, Gui, Hu, Liu, Fan, Zhang, Zhu, Zhang and
    Huang 2023, "Orthogonal Subspace Learning for Language Model Continual Learning",
    arXiv:2310.14152).

    Each task after the first trains a new LoRA ``B_t A_t`` (as
    :class:`~forgetless.strategies.lora.LoRA` with ``policy=merge``: the earlier tasks'
    updates are frozen, here merged into the weights, which computes the same sum
    ``W + sum_i B_i A_i``), with the loss (Eq. 7 and 8)

        L_t + lambda_1 * sum_{i<t} sum_layers ||A_i A_t^T||_F^2 + lambda_2 * ||A_t, B_t||^2

    ``A_i`` (``r x in``) spans the input subspace task ``i``'s update reads: the first term
    pushes the new task's subspace to be orthogonal to every earlier one, so that the new
    update leaves what the earlier ones read unchanged. The earlier ``A_i`` are kept in the
    strategy's state (``r x in`` per layer and task). Defaults ``lambda_1 = 0.5`` and
    ``lambda_2 = 0``, those of the paper's released training scripts. Tasks trained before the
    adapters (the whole model) have no ``A``; the first adapter trains against none.

    Args:
        rank: each task's LoRA rank ``r``.
        adapter_alpha: the LoRA scale (default ``2 * rank``).
        adapter_dropout: dropout on the adapters' inputs.
        targets: the layers to adapt, comma-separated names or name suffixes (as LoRA's).
        orthogonal: ``lambda_1``, the weight of the orthogonality loss.
        l2: ``lambda_2``, the weight of the new adapter's squared norm.
    """

    name = "olora"

    def __init__(
        self,
        rank: int = 8,
        adapter_alpha: float | None = None,
        adapter_dropout: float = 0.0,
        targets: str | None = None,
        orthogonal: float = 0.5,
        l2: float = 0.0,
    ):
        super().__init__(rank, adapter_alpha, adapter_dropout, targets, policy="merge")
        self.orthogonal = check_range("orthogonal", orthogonal, 0.0)
        self.l2 = check_range("l2", l2, 0.0)
        #: per adapted layer, the earlier tasks' ``A`` stacked (``sum r x in``)
        self.earlier: dict[str, torch.Tensor] = {}

    def change_model(self, learner: Learner, task: Task) -> None:
        if self.adapted_from >= 0:  # the adapter about to be merged: keep its subspace
            for name, a in self._live_a(learner).items():
                a = a.detach().clone()
                old = self.earlier.get(name)
                self.earlier[name] = a if old is None else torch.cat([old, a])
        super().change_model(learner, task)
        if self.adapted_from >= 0 and not self._live_a(learner):
            raise ConfigError("olora needs LoRA layers from peft; none were found")

    def penalty(self, learner, x, y, t, logits) -> torch.Tensor | None:
        if self.adapted_from < 0:
            return None
        total = None
        live = self._live_a(learner)
        if self.orthogonal and self.earlier:
            for name, a in live.items():
                term = (self.earlier[name] @ a.t()).pow(2).sum()
                total = term if total is None else total + term
            total = self.orthogonal * total
        if self.l2:
            norm = sum(p.pow(2).sum() for p in adapters.adapter_parameters(learner.model))
            total = self.l2 * norm if total is None else total + self.l2 * norm
        return total

    @staticmethod
    def _live_a(learner: Learner) -> dict[str, torch.Tensor]:
        """Each adapted layer's live ``A`` (peft's ``lora_A``), by layer name."""
        out = {}
        for name, layer in adapters.adapter_layers(learner.model):
            lora_a = getattr(layer, "lora_A", None)
            if lora_a is not None and "default" in lora_a:
                out[name] = lora_a["default"].weight
        return out

    def report(self, learner: Learner) -> dict[str, Any] | None:
        report = super().report(learner)
        if report is None:
            return None
        live = self._live_a(learner)
        if self.earlier:  # how orthogonal the last subspace came out
            overlap = sum(
                float((self.earlier[n] @ a.detach().t()).pow(2).sum()) for n, a in live.items()
            )
            report["last_orthogonality_loss"] = overlap
        return report
