"""CURLoRA: a low-rank update built from the frozen weight's own columns and rows.

Fawi 2024, "CURLoRA: Stable LLM Continual Fine-Tuning and Catastrophic Forgetting Mitigation"
(arXiv:2408.14572). For a frozen weight ``W`` (``out x in``), the layer computes

    ``y = W x + b + alpha * C U R x``

where ``C = W[:, J]`` holds ``r`` columns and ``R = W[I, :]`` ``r`` rows of ``W`` (frozen
copies), and ``U`` (``r x r``) is zero-initialised and the only trained part: before training
the layer is exactly the base layer. Columns and rows are drawn *against* their share of the
weight's energy, which the paper argues keeps the update away from the directions the
pretrained model relies on (an implicit regulariser): with ``p_j = ||W[:, j]||^2 / ||W||_F^2``,
column ``j`` is drawn with probability ``q_j = (1 / (p_j + eps)) / sum_k 1 / (p_k + eps)``, and
rows likewise; ``r`` draws with replacement and ``eps = 1e-3``, as in the paper's code.

The drawn indices are buffers, so they are saved with the model's ``state_dict`` (the
reference code keeps them as plain attributes, which a checkpoint loses), and they are drawn
on the CPU from a seeded generator, so the same seed gives the same indices on any device.
"""

from __future__ import annotations

import torch
from torch import nn

#: The ``eps`` of the inverted probabilities, as in the paper's code.
EPS = 1e-3


def inverted_probabilities(energy: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``q = (1 / (p + eps)) / sum(1 / (p + eps))`` for ``p = energy / sum(energy)``: each
    column's (or row's) probability of being drawn, lower the more of the weight it carries."""
    p = energy.double() / energy.double().sum()
    q = 1.0 / (p + eps)
    return q / q.sum()


def draw_indices(
    weight: torch.Tensor, rank: int, generator: torch.Generator, eps: float = EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(rows, columns)`` CURLoRA draws from ``weight`` (``out x in``): ``rank`` each,
    with replacement, from :func:`inverted_probabilities` of the squared row and column norms.
    Drawn on the CPU in float64, so they do not depend on the weight's device."""
    squared = weight.detach().to("cpu", torch.float64) ** 2
    columns = torch.multinomial(
        inverted_probabilities(squared.sum(dim=0), eps), rank, replacement=True, generator=generator
    )
    rows = torch.multinomial(
        inverted_probabilities(squared.sum(dim=1), eps), rank, replacement=True, generator=generator
    )
    return rows, columns


class CURLinear(nn.Module):
    """A CURLoRA adapter around a linear layer: ``nn.Linear`` or GPT-2's ``Conv1D`` (whose
    weight is stored transposed, ``in x out``). The base layer is kept as ``base_layer``
    (peft's name) and frozen.

    Args:
        base_layer: the layer to adapt.
        rank: columns and rows drawn (``U`` is ``rank x rank``).
        alpha: scale of the update.
        dropout: dropout on the adapter's input (0: none).
        generator: draws the indices (a CPU generator).
        eps: see :func:`inverted_probabilities`.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        rank: int,
        alpha: float = 1.0,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
        eps: float = EPS,
    ):
        super().__init__()
        self.base_layer = base_layer
        self.transposed = not isinstance(base_layer, nn.Linear)  # Conv1D: x @ W + b
        self.rank = rank
        self.alpha = alpha
        self.merged = False
        for p in base_layer.parameters():
            p.requires_grad_(False)
        W = self._weight()
        rows, columns = draw_indices(W, rank, generator or torch.Generator(), eps)
        self.register_buffer("rows", rows.to(W.device))
        self.register_buffer("columns", columns.to(W.device))
        self.register_buffer("C", W[:, columns.to(W.device)].detach().clone())  # out x r
        self.register_buffer("R", W[rows.to(W.device), :].detach().clone())  # r x in
        self.U = nn.Parameter(torch.zeros(rank, rank, dtype=W.dtype, device=W.device))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _weight(self) -> torch.Tensor:
        """The base weight as ``out x in``."""
        W = self.base_layer.weight
        return W.t() if self.transposed else W

    def delta(self) -> torch.Tensor:
        """The update ``alpha * C U R`` (``out x in``)."""
        return self.alpha * (self.C @ self.U @ self.R)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged:
            return out
        # x (C U R)^T = ((x R^T) U^T) C^T: three thin products, never the full matrix
        z = self.dropout(x) @ self.R.t()
        return out + self.alpha * ((z @ self.U.t()) @ self.C.t())

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update to the base weight; the adapter is then skipped until unmerged."""
        if not self.merged:
            self._weight().add_(self.delta())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from the base weight again."""
        if self.merged:
            self._weight().sub_(self.delta())
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"
