"""The memory layout of a convolutional model's weights and image inputs.

``channels_last`` stores a 4-D tensor ``[N, C, H, W]`` with the channels innermost (strides
``[HWC, 1, WC, C]``), the layout oneDNN's CPU convolutions and pooling run fastest in:
BENCHMARKS.md measures the CNN of seed article 2 train 1.3-1.4x faster a step on one core.
The shapes, the parameters' names and what the model computes stay the same; the arithmetic
does not, exactly (the convolutions sum in another order), so it is an option
(``FitConfig.memory_format``, ``--memory-format``), never the default.

What a run stores stays in the default layout: checkpoints and weight files are written as
contiguous tensors (:func:`forgetless.state.flatten`,
:func:`forgetless.runs.checkpoint.save_weights`), so a channels-last run's state loads into a
default model, and a default run's state into a channels-last one (``load_state_dict`` copies
into the parameters, which keep their layout).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from forgetless.errors import ConfigError
from forgetless.names import MEMORY_FORMATS

_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def check_memory_format(memory_format: str | None) -> str:
    """``memory_format`` as one of :data:`~forgetless.names.MEMORY_FORMATS` (``None`` is
    ``"contiguous"``, the default layout)."""
    if memory_format is None:
        return "contiguous"
    if memory_format not in MEMORY_FORMATS:
        raise ConfigError(
            f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}"
        )
    return memory_format


def use_memory_format(model: nn.Module, memory_format: str | None) -> nn.Module:
    """Lay out ``model``'s 4-D weights and every 4-D input of its forward pass in
    ``memory_format`` (in place; returns ``model``).

    ``"contiguous"`` (or ``None``) leaves the model untouched. ``"channels_last"`` converts
    the model's 4-D parameters and buffers (``model.to(memory_format=...)``) and registers a
    forward pre-hook that converts each 4-D tensor argument (a batch of images) as it comes;
    layers added later (a strategy's new column) take their inputs in that layout too.
    Applying it twice is applying it once.

    Raises:
        ConfigError: ``"channels_last"`` for a model with no 4-D parameter (an MLP, a
            language model): there is nothing to lay out, and a speed option that does
            nothing should say so rather than be silently ignored.
    """
    memory_format = check_memory_format(memory_format)
    if memory_format == "contiguous":
        return model
    if not any(p.dim() == 4 for p in model.parameters()):
        raise ConfigError(
            f"memory_format={memory_format!r} lays out the 4-D weights and image batches of "
            f"convolutional models (cnn, cnn-skip); this {type(model).__name__} has no 4-D "
            "parameter, so it would change nothing: leave memory_format unset"
        )
    fmt = _FORMATS[memory_format]
    model.to(memory_format=fmt)
    if getattr(model, "_forgetless_memory_format", None) != memory_format:
        model.register_forward_pre_hook(_InputsTo(fmt))
        model._forgetless_memory_format = memory_format
    return model


class _InputsTo:
    """A forward pre-hook: 4-D tensor arguments in one memory format (others as they are).
    A class rather than a closure, so that a model copy (``copy.deepcopy``) keeps it."""

    def __init__(self, memory_format: torch.memory_format):
        self.memory_format = memory_format

    def __call__(self, _module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            a.contiguous(memory_format=self.memory_format)
            if isinstance(a, torch.Tensor) and a.dim() == 4
            else a
            for a in args
        )
