"""Masked layers: one linear and one convolution whose weights, biases and output units are
multiplied by masks a strategy gives, shared by PackNet, HAT and HyperMask.

A masked layer computes

    y = (x (W * M_w)^T + b * M_b) * g

(``*`` elementwise; for a convolution, ``conv(x, W * M_w) + b * M_b``, with ``g`` per output
channel). Each mask is optional and broadcast against what it masks:

- ``M_w``, per weight: PackNet's binary ownership masks (Mallya and Lazebnik 2018), or
  HyperMask's semi-binary masks from a hypernetwork (Ksiazek and Spurek 2024), through which
  gradients flow to the hypernetwork;
- ``M_b``, per bias entry (PackNet freezes and hides biases per task);
- ``g``, per output unit: HAT's gates ``sigmoid(s e_t)`` from a task embedding (Serra et al.
  2018, Eq. 1), which multiply the unit's activation before the non-linearity.

The layers hold no masks of their own: :class:`MaskedNet` asks its mask source for the masks
of the task being computed and sets them for the duration of one forward pass, so one network
answers every task and a batch may mix tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.errors import ConfigError

#: Normalisation layers: their statistics and affine parameters are part of every task's
#: function, so methods that isolate parameters per task must freeze them (see MaskedNet).
NORMALISATION: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
)


class LayerMask(NamedTuple):
    """Masks for one layer, each optional (``None``: ones). Shapes broadcast against the
    weight (``[out, in]`` or ``[out, in, kh, kw]``), the bias (``[out]``) and the output
    units (``[out]``)."""

    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    units: torch.Tensor | None = None


class MaskedLinear(nn.Linear):
    """``nn.Linear`` with an optional :class:`LayerMask` (attribute ``mask``, set per forward
    pass by :class:`MaskedNet`): ``y = (x (W * M_w)^T + b * M_b) * g``."""

    mask: LayerMask | None = None

    @classmethod
    def from_layer(cls, layer: nn.Linear) -> MaskedLinear:
        """A masked layer using ``layer``'s own parameters (the same tensors, not copies)."""
        masked = cls(
            layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta"
        )
        masked.weight, masked.bias = layer.weight, layer.bias
        masked.train(layer.training)
        return masked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = _masked(self.weight, self.bias, self.mask)
        out = F.linear(x, weight, bias)
        units = None if self.mask is None else self.mask.units
        return out if units is None else out * units


class MaskedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with an optional :class:`LayerMask`: ``conv(x, W * M_w) + b * M_b``, each
    output channel times ``g``."""

    mask: LayerMask | None = None

    @classmethod
    def from_layer(cls, layer: nn.Conv2d) -> MaskedConv2d:
        """A masked layer using ``layer``'s own parameters (the same tensors, not copies)."""
        masked = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
            device="meta",
        )
        masked.weight, masked.bias = layer.weight, layer.bias
        masked.train(layer.training)
        return masked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = _masked(self.weight, self.bias, self.mask)
        out = self._conv_forward(x, weight, bias)
        units = None if self.mask is None else self.mask.units
        return out if units is None else out * units.view(-1, 1, 1)


MASKED = (MaskedLinear, MaskedConv2d)


def _masked(
    weight: torch.Tensor, bias: torch.Tensor | None, mask: LayerMask | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if mask is None:
        return weight, bias
    if mask.weight is not None:
        weight = weight * mask.weight
    if bias is not None and mask.bias is not None:
        bias = bias * mask.bias
    return weight, bias


def to_masked(model: nn.Module) -> nn.Module:
    """``model`` with every ``nn.Linear`` and ``nn.Conv2d`` replaced, in place, by its masked
    form over the same parameter tensors (weights kept, names unchanged). Works for any model
    built of these layers: forgetless' ``mlp``, ``cnn`` and ``cnn-skip`` among them. Returns
    ``model`` (or the masked layer, if ``model`` is itself a layer)."""
    if isinstance(model, MASKED):
        return model
    if type(model) is nn.Linear:
        return MaskedLinear.from_layer(model)
    if type(model) is nn.Conv2d:
        return MaskedConv2d.from_layer(model)
    for name, child in list(model.named_children()):
        converted = to_masked(child)
        if converted is not child:
            setattr(model, name, converted)
    return model


def masked_layers(model: nn.Module) -> dict[str, MaskedLinear | MaskedConv2d]:
    """The masked layers of ``model`` by name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MASKED)}


#: A mask source: ``masks(task)`` gives the masks of each masked layer (by its name in the
#: body) for that task; layers it leaves out run unmasked. It is a module of the network, so its
#: parameters (HAT's embeddings, HyperMask's hypernetwork) and buffers (PackNet's ownership)
#: are trained and saved with the weights.
MaskSource = Callable[[int], dict[str, LayerMask]]


class MaskedNet(nn.Module):
    """A network that answers each task through masks: ``net(x, t)`` runs ``body`` with the
    masks ``masks(task)`` set on its masked layers.

    ``t`` is an int (every example of one task, as in evaluation) or an int64 tensor of task
    ids; a batch that mixes tasks is run one task at a time (its rows regathered in order), as
    each task has its own masks. The body's linear and convolutional layers are converted in
    place by :func:`to_masked`, keeping their weights and names (``body.<name>``).

    Args:
        body: the network (e.g. from :func:`forgetless.models.build_model`).
        masks: the mask source, an ``nn.Module`` mapping a task index to ``{layer name:
            LayerMask}`` (names as in :func:`masked_layers` of the body).

    Attributes:
        frozen_norms: once True, normalisation layers stay in evaluation mode (their running
            statistics fixed) whatever ``train()`` is asked: set by methods that freeze them
            after the first task (PackNet), so that later tasks cannot change earlier ones.
    """

    takes_task_id = True

    def __init__(self, body: nn.Module, masks: nn.Module):
        super().__init__()
        self.body = to_masked(body)
        self.masks = masks
        self.frozen_norms = False
        self._layers = masked_layers(self.body)  # a plain dict: not registered twice
        if not self._layers:
            raise ConfigError(f"{type(body).__name__} has no linear or convolutional layer to mask")

    @property
    def layers(self) -> dict[str, MaskedLinear | MaskedConv2d]:
        """The masked layers of the body, by name, in module order."""
        return self._layers

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        if isinstance(t, int):
            return self._run(x, t)
        tasks = t.unique().tolist()  # sorted; one host sync per call
        if len(tasks) == 1:
            return self._run(x, tasks[0])
        out = None
        for task in tasks:
            rows = (t == task).nonzero().squeeze(1)
            part = self._run(x.index_select(0, rows), task)
            if out is None:
                out = part.new_zeros((len(x), *part.shape[1:]))
            out = out.index_copy(0, rows, part)
        return out

    def _run(self, x: torch.Tensor, task: int) -> torch.Tensor:
        masks = self.masks(task)
        for name, layer in self._layers.items():
            layer.mask = masks.get(name)
        try:
            return self.body(x)
        finally:
            for layer in self._layers.values():
                layer.mask = None

    def train(self, mode: bool = True) -> MaskedNet:
        super().train(mode)
        if self.frozen_norms:
            for module in self.body.modules():
                if isinstance(module, nn.modules.batchnorm._NormBase):
                    module.eval()
        return self
