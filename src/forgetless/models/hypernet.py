"""A task-conditioned hypernetwork, and the semi-binary weight masks HyperMask makes with it.

:class:`HyperNetwork` maps a learned task embedding to one real number per target parameter
(von Oswald, Henning, Grewe and Sacramento 2020, "Continual learning with hypernetworks",
ICLR). :class:`HyperMasks` turns those numbers into masks over a target network's weights and
biases (Ksiazek and Spurek 2024, "HyperMask: adaptive hypernetwork-based masks for continual
learning"): ``|tanh(h)|`` with the smallest fraction of each tensor cut to 0. It is a mask
source for :class:`~forgetless.models.masked.MaskedNet`, so the masks multiply the target's
weights in the forward pass and the gradients reach the hypernetwork through them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from forgetless.models.masked import LayerMask


class HyperNetwork(nn.Module):
    """``h = f(e_t)``: task ``t``'s embedding ``e_t`` through a fully connected network with ELU
    activations (``width`` units, ``depth`` hidden layers) to ``outputs`` numbers.

    One embedding per task of the stream (``embeddings[t]``, drawn from N(0, 1)); layers
    initialised as ``nn.Linear`` is. Everything is drawn from ``seed``, so a rebuilt network
    starts the same.
    """

    def __init__(
        self, outputs: int, tasks: int, embedding_size: int, width: int, depth: int, seed: int
    ):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embeddings = nn.ParameterList(
                nn.Parameter(torch.randn(embedding_size)) for _ in range(tasks)
            )
            sizes = [embedding_size, *[width] * depth, outputs]
            layers: list[nn.Module] = []
            for fan_in, fan_out in itertools.pairwise(sizes):
                layers += [nn.Linear(fan_in, fan_out), nn.ELU()]
            self.net = nn.Sequential(*layers[:-1])

    def forward(self, tasks: int | Sequence[int]) -> torch.Tensor:
        """``[outputs]`` for one task, ``[len(tasks), outputs]`` for several."""
        if isinstance(tasks, int):
            return self.net(self.embeddings[tasks])
        return self.net(torch.stack([self.embeddings[t] for t in tasks]))


def semi_binary(h: torch.Tensor, cut: float) -> torch.Tensor:
    """``|tanh(h)|`` with its ``floor(cut * h.numel())`` smallest entries set to 0 (HyperMask's
    semi-binary mask of one tensor). The kept entries stay differentiable in ``h``; which ones
    are kept is not (the threshold carries no gradient)."""
    mask = torch.tanh(h).abs()
    k = int(cut * mask.numel())
    if k == 0:
        return mask
    threshold = mask.detach().flatten().kthvalue(k).values
    return torch.where(mask > threshold, mask, mask.new_zeros(()))


class HyperMasks(nn.Module):
    """A hypernetwork whose outputs mask the weights and biases of a target's masked layers.

    The hypernetwork gives one number per weight and bias of ``layers`` but the output layer's
    bias (which, as in the authors' code, stays unmasked); task ``t``'s mask of each tensor is
    :func:`semi_binary` of its numbers, cutting the fraction ``sparsity`` (``cut`` for the
    newest task while it trains: HyperMask raises it gradually during the first task).

    Attributes:
        hypernet: the :class:`HyperNetwork`.
        newest: the task being (or last) trained; later tasks are answered as this one.
    """

    def __init__(
        self,
        layers: dict[str, nn.Module],
        tasks: int,
        sparsity: float,
        embedding_size: int,
        width: int,
        depth: int,
        seed: int,
    ):
        super().__init__()
        self.names = list(layers)
        self.shapes: list[tuple[str, int, torch.Size]] = []  # (layer, 0 weight / 1 bias, shape)
        for name, layer in layers.items():
            self.shapes.append((name, 0, layer.weight.shape))
            if layer.bias is not None and name != self.names[-1]:
                self.shapes.append((name, 1, layer.bias.shape))
        self.sizes = [shape.numel() for _, _, shape in self.shapes]
        self.hypernet = HyperNetwork(sum(self.sizes), tasks, embedding_size, width, depth, seed)
        self.sparsity = sparsity
        self.cut = sparsity
        self.newest = 0
        self._cache: dict[int, dict[str, LayerMask]] = {}  # evaluation only

    def outputs(self, tasks: int | Sequence[int]) -> torch.Tensor:
        """The hypernetwork's raw outputs ``h`` for one task or several (see HyperNetwork)."""
        return self.hypernet(tasks)

    def masks_of(self, h: torch.Tensor, cut: float) -> dict[str, LayerMask]:
        """The masks that one task's outputs ``h`` give, by layer name."""
        parts: dict[str, list[torch.Tensor | None]] = {name: [None, None] for name in self.names}
        for (name, which, shape), values in zip(self.shapes, h.split(self.sizes), strict=True):
            parts[name][which] = semi_binary(values.view(shape), cut)
        return {name: LayerMask(weight=w, bias=b) for name, (w, b) in parts.items()}

    def forward(self, task: int) -> dict[str, LayerMask]:
        task = min(task, self.newest)  # a task not learnt yet is answered as the newest
        frozen = not self.training and not torch.is_grad_enabled()
        if frozen and task in self._cache:
            return self._cache[task]
        cut = self.cut if self.training and task == self.newest else self.sparsity
        masks = self.masks_of(self.outputs(task), cut)
        if frozen:  # evaluation asks for the same masks batch after batch
            self._cache[task] = masks
        return masks

    def train(self, mode: bool = True) -> HyperMasks:
        self._cache.clear()  # the weights may change in either mode's hands
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache.clear()
        super()._load_from_state_dict(*args, **kwargs)
