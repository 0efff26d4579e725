"""The training criterion, for labels and for sequences alike."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of ``[B, ..., C]`` logits against ``[B, ...]`` integer targets.

    Every position is one prediction: a classifier's ``[B, C]`` logits against ``[B]`` labels
    (then this is exactly ``F.cross_entropy(logits, targets)``), or a language model's
    ``[B, T, V]`` logits against ``[B, T]`` next tokens, where the mean is over all ``B * T``
    tokens (the per-token loss whose exponential is the perplexity).
    """
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction=reduction)
