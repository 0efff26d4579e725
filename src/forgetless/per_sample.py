"""Per-sample gradients, vectorised with ``torch.func`` (never a Python loop over samples).

Shared by every method that needs gradients of single examples: the exact and sampled Fisher
information (EWC), MAS importance, GSS gradient diversity.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel


def vmap_attention() -> contextlib.AbstractContextManager:
    """Attention computed so that ``vmap`` batches it: ``scaled_dot_product_attention``'s
    fused CPU kernel has no batching rule (torch falls back to a loop over examples, with a
    warning), its plain-math form is matrix products and a softmax, which have."""
    return sdpa_kernel(SDPBackend.MATH)


def trainable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's trainable parameters by name, detached (the point to differentiate at)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def iter_per_sample_grads(
    model: nn.Module,
    loss_of_output: Callable[..., torch.Tensor],
    x: torch.Tensor,
    *per_sample_args: torch.Tensor,
    chunk_size: int = 256,
) -> Iterator[dict[str, torch.Tensor]]:
    """Gradients of a per-example scalar, one chunk of examples at a time.

    Args:
        model: the network; called on one example at a time through ``functional_call``
            (put it in eval mode first if it has batch-norm or dropout).
        loss_of_output: ``f(output, *args) -> scalar`` for ONE example: ``output`` is the model's
            output for that example (no batch dimension), ``args`` the example's entries of
            ``per_sample_args``. It may itself use ``torch.func`` transforms (e.g. vmap over
            classes for the exact Fisher).
        x: inputs ``[N, ...]``.
        per_sample_args: tensors with a leading dimension ``N`` (labels, targets, ...).
        chunk_size: examples per vectorised call; bounds memory at about
            ``chunk_size x number of parameters`` floats.

    Yields:
        For each chunk, ``{name: [chunk, *param.shape]}`` gradients of the trainable parameters.
    """
    params = trainable_parameters(model)
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def example_loss(p: dict[str, torch.Tensor], xi: torch.Tensor, *args: torch.Tensor):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),)).squeeze(0)
        return loss_of_output(out, *args)

    in_dims = (None, 0, *([0] * len(per_sample_args)))
    per_example = vmap(grad(example_loss), in_dims=in_dims)
    for start in range(0, len(x), chunk_size):
        stop = start + chunk_size
        with vmap_attention():
            grads = per_example(params, x[start:stop], *(a[start:stop] for a in per_sample_args))
        yield grads
