"""Looking at hidden units: activations, CKA, overlap between tasks, dormant units, effective rank.

Pure functions of tensors (and one of a model, :func:`layer_activations`, which reads a model
without changing it). An activation matrix is ``[N, units]``: one row per input, one column per
hidden unit. Papers followed:

- Kornblith, Norouzi, Lee and Hinton 2019, "Similarity of neural network representations
  revisited" (ICML): linear CKA.
- Ramasesh, Dyer and Raghu 2021, "Anatomy of catastrophic forgetting: hidden representations and
  task semantics" (ICLR): CKA of a layer before and after training on a second task, and the
  overlap of the units two tasks use.
- Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood and Sutton 2024, "Loss of plasticity in deep
  continual learning" (Nature 632): dormant units, effective rank, weight magnitude.
- Roy and Vetterli 2007, "The effective rank: a measure of effective dimensionality" (EUSIPCO).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from forgetless.data.arrays import ArraySet
from forgetless.errors import ConfigError
from forgetless.models import ACTIVATIONS
from forgetless.validation import check_range

Activations = Mapping[str, torch.Tensor]


def activation_layers(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_modules()``) of the activation modules of ``model``, in
    registration order: the layers :func:`layer_activations` records by default."""
    return [name for name, m in model.named_modules() if isinstance(m, ACTIVATIONS)]


@torch.no_grad()
def layer_activations(
    model: nn.Module,
    x: torch.Tensor | ArraySet,
    layers: Sequence[str] | None = None,
    batch_size: int = 1024,
) -> dict[str, torch.Tensor]:
    """The outputs of chosen modules for every input: ``{name: [N, units]}``.

    A forward hook on each module keeps its output while ``x`` goes through the model in
    batches of ``batch_size``, in eval mode and without gradients; the model's mode is restored
    afterwards and the hooks removed. Outputs with more than two dimensions (convolutional maps
    ``[N, C, H, W]``) are **averaged over the spatial positions**, giving one unit per channel
    (``[N, C]``): a channel is then dormant exactly when its map is zero everywhere, for ReLU.
    A module called several times in one forward pass (one ``nn.ReLU`` reused) gives one entry
    per call: ``name``, ``name#1``, ``name#2``, ...

    Args:
        model: any ``nn.Module``.
        x: model-ready inputs ``[N, ...]``, or an :class:`~forgetless.data.arrays.ArraySet`
            (its inputs are scaled a batch at a time).
        layers: module names from ``model.named_modules()``; default: every activation module
            (:data:`forgetless.models.ACTIVATIONS`), i.e. the hidden units after their non-linearity.
        batch_size: inputs per forward pass.

    Returns:
        A dict from layer name to a float32 ``[N, units]`` tensor on the CPU, in forward order.
    """
    modules = dict(model.named_modules())
    names = activation_layers(model) if layers is None else list(layers)
    missing = [n for n in names if n not in modules]
    if missing:
        raise ConfigError(
            f"layers {missing} are not modules of the model; known: {', '.join(n for n in modules if n)}"
        )
    if not names:
        raise ConfigError(
            "the model has no activation modules (nn.ReLU, nn.Tanh, ...) to record; "
            "pass layers=[...] with module names from model.named_modules()"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = len(x)
    chunks: dict[str, list[torch.Tensor]] = {}
    calls: dict[str, int] = {}

    def hook_for(name: str):
        def hook(module, inputs, output):
            k = calls.get(name, 0)
            calls[name] = k + 1
            key = name if k == 0 else f"{name}#{k}"
            out = output.detach().float()
            if out.ndim > 2:
                out = out.flatten(2).mean(dim=2)
            elif out.ndim == 1:
                out = out[:, None]
            chunks.setdefault(key, []).append(out.cpu())

        return hook

    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
    model.eval()
    try:
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            batch = x.inputs(rows) if isinstance(x, ArraySet) else x[rows]
            calls.clear()
            model(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {key: torch.cat(parts) for key, parts in chunks.items()}


def _matrix(name: str, a: torch.Tensor) -> torch.Tensor:
    if not isinstance(a, torch.Tensor) or a.ndim != 2:
        shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise ConfigError(f"{name} must be a 2-D tensor [N, units], got {shape}")
    return a


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment of two representations of the same ``N`` inputs
    (Kornblith et al. 2019, Eq. 5 with a linear kernel)::

        CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F * ||Yc^T Yc||_F)

    where ``Xc`` is ``X`` with each column's mean removed (the centred-Gram HSIC, written with
    features). It is 1 for identical representations, lies in [0, 1], and is invariant to
    orthogonal transforms and isotropic scaling of either side, but not to arbitrary invertible
    linear maps. The ``[p, q]`` feature products are used when they are smaller than the
    ``[N, N]`` Gram matrices, the Gram form otherwise (same value); computed in float64.

    Args:
        x: ``[N, p]`` activations.
        y: ``[N, q]`` activations of the same inputs, in the same order.

    Returns:
        The CKA as a float; ``nan`` when either representation is constant over the inputs
        (a fully dormant layer), where CKA is undefined.
    """
    x, y = _matrix("x", x), _matrix("y", y)
    if len(x) != len(y):
        raise ConfigError(f"x and y must describe the same inputs: {len(x)} rows vs {len(y)}")
    if len(x) < 2:
        raise ConfigError(f"CKA needs at least 2 inputs, got {len(x)}")
    x = x.double() - x.double().mean(dim=0)
    y = y.double() - y.double().mean(dim=0)
    n, p, q = x.shape[0], x.shape[1], y.shape[1]
    if p * q + p * p + q * q <= 3 * n * n:
        cross = (y.T @ x).pow(2).sum()
        norm_x = torch.linalg.matrix_norm(x.T @ x)
        norm_y = torch.linalg.matrix_norm(y.T @ y)
    else:
        kx, ky = x @ x.T, y @ y.T
        cross = (kx * ky).sum()
        norm_x, norm_y = torch.linalg.matrix_norm(kx), torch.linalg.matrix_norm(ky)
    denominator = norm_x * norm_y
    if denominator <= 0:
        return math.nan
    return float(cross / denominator)


def active_fraction(acts: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """For each unit, the fraction of inputs on which it fires: ``mean_n [a_nu > threshold]``.

    Args:
        acts: ``[N, units]`` activations.
        threshold: a unit fires on an input when its activation exceeds this (0 for ReLU).

    Returns:
        ``[units]`` float tensor of rates in [0, 1].
    """
    acts = _matrix("acts", acts)
    if len(acts) == 0:
        raise ConfigError("acts has no rows: the rates need at least one input")
    return (acts > threshold).float().mean(dim=0)


def active_units(acts: torch.Tensor, threshold: float = 0.0, rate: float = 0.5) -> torch.Tensor:
    """Boolean ``[units]``: the units *active for a task*, those that fire (activation above
    ``threshold``) on at least a fraction ``rate`` of the task's inputs ``acts``."""
    rate = check_range("rate", rate, 0.0, 1.0, low_open=True)
    return active_fraction(acts, threshold) >= rate


def overlap(
    acts_a: torch.Tensor,
    acts_b: torch.Tensor,
    threshold: float = 0.0,
    rate: float = 0.5,
    over: str = "active",
) -> float:
    """The share of units two tasks use in common.

    A unit is *active for a task* when it fires (activation above ``threshold``) on at least a
    fraction ``rate`` of that task's inputs (:func:`active_units`); ``acts_a`` and ``acts_b`` are
    the same layer's ``[N, units]`` activations for inputs of task A and of task B (the rows
    need not match). With ``A`` and ``B`` those sets of units:

        over="active":  |A ∩ B| / |A ∪ B|   (of the units either task uses, the share both use)
        over="units":   |A ∩ B| / units      (of all the layer's units)

    and, without a cut-off, from the firing rates ``r_A(u)``, ``r_B(u)`` of each unit
    (:func:`active_fraction`), the weighted Jaccard (Ruzicka) similarity, to which "active"
    reduces when rates are 0 or 1:

        over="weighted": sum_u min(r_A(u), r_B(u)) / sum_u max(r_A(u), r_B(u))   (``rate`` unused)

    This is the seed article's "fraction of units active for both tasks", made precise; Ramasesh
    et al. (2021) relate forgetting to how much two tasks' representations share. ``"active"``
    is 1 for two identical tasks whatever ``rate`` is, so values are comparable across layers.

    Returns:
        A float in [0, 1]; ``nan`` for ``"active"`` and ``"weighted"`` when no unit is active
        for (fires on) either task.
    """
    if over not in ("active", "units", "weighted"):
        raise ConfigError(f"over must be 'active', 'units' or 'weighted', got {over!r}")
    acts_a, acts_b = _matrix("acts_a", acts_a), _matrix("acts_b", acts_b)
    if acts_a.shape[1] != acts_b.shape[1]:
        raise ConfigError(
            f"acts_a and acts_b must be the same layer: {acts_a.shape[1]} vs {acts_b.shape[1]} units"
        )
    if over == "weighted":
        r_a, r_b = active_fraction(acts_a, threshold), active_fraction(acts_b, threshold)
        top = float(torch.maximum(r_a, r_b).sum())
        return float(torch.minimum(r_a, r_b).sum()) / top if top > 0 else math.nan
    a = active_units(acts_a, threshold, rate)
    b = active_units(acts_b, threshold, rate)
    both = int((a & b).sum())
    if over == "units":
        return both / a.numel()
    either = int((a | b).sum())
    return both / either if either else math.nan


def dormant_fraction(
    acts: torch.Tensor | Activations, tau: float = 0.0, max_rate: float = 0.0
) -> float:
    """The fraction of units that are dormant (Dohare et al. 2024).

    A unit is *dormant* on a set of inputs when its activation exceeds ``tau`` on at most a
    fraction ``max_rate`` of them. The defaults (``tau=0``, ``max_rate=0``) are Dohare et al.'s
    definition for permuted MNIST: a ReLU unit is dead when its output is zero for every one of
    the inputs measured (2,000 examples of the task in their code). For networks whose units are
    rarely exactly zero, ``max_rate=0.01`` gives "active on at most 1% of the inputs".

    Args:
        acts: ``[N, units]``, or a dict of layers (from :func:`layer_activations`): their units
            are pooled, so the result is the fraction over all hidden units.
        tau: the activation a unit must exceed to count as firing.
        max_rate: the largest firing rate (in [0, 1)) that still counts as dormant.
    """
    max_rate = check_range("max_rate", max_rate, 0.0, 1.0, high_open=True)
    layers = list(acts.values()) if isinstance(acts, Mapping) else [acts]
    if not layers:
        raise ConfigError("acts is an empty dict of layers")
    rates = torch.cat([active_fraction(a, tau) for a in layers])
    return float((rates <= max_rate).float().mean())


def effective_rank(matrix: torch.Tensor) -> float:
    """The effective rank of a matrix (Roy and Vetterli 2007; as used by Dohare et al. 2024)::

        erank(M) = exp(H(p)),   p_k = sigma_k / sum_j sigma_j,   H(p) = -sum_k p_k log p_k

    over the singular values ``sigma`` of ``M`` (with ``0 log 0 = 0``). It lies between 1 and
    ``rank(M)``: ``n`` for an ``n x n`` identity, 1 for a rank-one matrix, and it falls as a
    layer's representation collapses onto fewer directions. Dohare et al. apply it to the
    ``[N, units]`` activations of a hidden layer, uncentred, as here. Computed in float64.

    Returns:
        The effective rank; 0.0 for an all-zero matrix.
    """
    matrix = _matrix("matrix", matrix)
    sigma = torch.linalg.svdvals(matrix.double())
    total = sigma.sum()
    if total <= 0:
        return 0.0
    p = sigma / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def mean_weight_magnitude(model: nn.Module, include_biases: bool = False) -> float:
    """The mean absolute weight ``mean_i |w_i|`` over the model's weight matrices and kernels
    (parameters with two or more dimensions), biases too when ``include_biases``. Dohare et al.
    (2024) track it along a stream: with plain backprop it keeps growing as plasticity is lost.
    """
    params = [p.detach() for p in model.parameters() if include_biases or p.ndim >= 2]
    if not params:
        raise ConfigError("the model has no weight matrices to measure")
    total = sum(float(p.abs().sum()) for p in params)
    count = sum(p.numel() for p in params)
    return total / count
