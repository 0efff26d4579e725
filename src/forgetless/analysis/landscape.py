"""Loss-landscape geometry: losses along lines and planes in weight space, and sharpness.

Li, Xu, Taylor, Studer and Goldstein 2018, "Visualizing the loss landscape of neural nets"
(NeurIPS). Around a solution ``theta`` the loss is drawn along random directions
``d1, d2`` scaled filter by filter to the weights (:func:`random_direction`):

    f(alpha)       = L(theta + alpha d1)                 (1-D, :func:`loss_line`)
    f(alpha, beta) = L(theta + alpha d1 + beta d2)       (2-D, :func:`loss_plane`)

and along the straight line between two solutions (Goodfellow, Vinyals and Saxe 2015),
``L((1 - alpha) theta_A + alpha theta_B)``: :func:`loss_line` with a model as the direction.
Sharpness (the top Hessian eigenvalue) is in :mod:`forgetless.analysis.sharpness`; the usual set
of pictures in one call in :mod:`forgetless.analysis.landscape_study`.

Evaluating a grid is batched. If the model is an ``nn.Sequential`` whose first layer with
weights is a ``Linear`` or a convolution, that layer is linear in its parameters for fixed
inputs, so

    X (W + a D1 + b D2)^T = X W^T + a X D1^T + b X D2^T

is computed as three products once per batch of examples, and every grid point only mixes them.
The rest of the network runs once per grid point with ``torch.func.functional_call``, on
weights mixed in place into buffers allocated once (an MLP's rest, Linear and ReLU only, runs
with its outputs in buffers as well). One matrix product per point is the
fastest form on CPU: ``vmap`` over a stack of weight sets makes batched products (``bmm``),
measured at half the speed of ``mm`` for the 400-unit layer (62 against 133 GFLOP/s), and
grouped convolutions, 1.5 times slower than a loop. Examples go in batches of
``batch_size``, smaller where an activation tensor would exceed ``max_elements`` numbers.

A direction is a plain ``dict`` from parameter names (``model.named_parameters()``, trainable
ones only) to tensors of the same shapes (:data:`Direction`). Buffers (batch-norm statistics)
are never perturbed: the model is evaluated in ``eval()`` mode with its own buffers.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from forgetless.data.arrays import ArraySet
from forgetless.errors import ConfigError
from forgetless.validation import check_positive_int, check_range

#: A point or a direction in weight space: trainable parameter name -> tensor.
Direction = dict[str, torch.Tensor]
#: Examples to evaluate on: an :class:`~forgetless.data.arrays.ArraySet` (a task's ``test``) or
#: a pair ``(inputs, labels)``.
Data = ArraySet | tuple[torch.Tensor, torch.Tensor]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_AFFINE = (nn.Linear, *_CONV)


# --- directions ------------------------------------------------------------------------------


def parameters_of(model: nn.Module) -> Direction:
    """The model's trainable parameters as a :data:`Direction` (detached copies)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def difference(model_b: nn.Module, model_a: nn.Module) -> Direction:
    """``theta_B - theta_A``: the direction from ``model_a``'s weights to ``model_b``'s."""
    a, b = parameters_of(model_a), parameters_of(model_b)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ConfigError(
            "the two models must have the same architecture (parameter names and shapes)"
        )
    return {k: b[k] - a[k] for k in a}


def filter_normalize(direction: Direction, model: nn.Module, bias: str = "zero") -> Direction:
    """Scale each filter of ``direction`` to the norm of the same filter of the weights.

    Li et al. 2018, Sec. 4: ``d_ij <- d_ij / ||d_ij|| * ||theta_ij||`` for the ``j``-th filter
    of layer ``i``; a filter is the slice of a weight tensor along its first dimension (the
    weights producing one feature map of a convolution, or one neuron of a ``Linear`` layer).
    Parameters with one dimension (biases, batch-norm scales and shifts) get a zero direction
    (``bias="zero"``, the paper's choice, ``--xignore biasbn`` in the authors' code), or the
    weights themselves (``bias="weights"``, what the authors' code does when they are not
    ignored).

    Returns:
        A new direction; ``direction`` is not changed.
    """
    if bias not in ("zero", "weights"):
        raise ConfigError(f"bias must be 'zero' or 'weights', got {bias!r}")
    weights = parameters_of(model)
    _check_direction(direction, weights)
    out = {}
    for name, d in direction.items():
        w = weights[name]
        if w.ndim <= 1:
            out[name] = torch.zeros_like(w) if bias == "zero" else w.clone()
            continue
        rows_d, rows_w = d.reshape(len(d), -1), w.reshape(len(w), -1)
        scale = rows_w.norm(dim=1) / rows_d.norm(dim=1).clamp_min(1e-10)
        out[name] = (rows_d * scale[:, None]).reshape(d.shape)
    return out


def random_direction(model: nn.Module, seed: int = 0, bias: str = "zero") -> Direction:
    """A Gaussian random direction, filter-normalised (:func:`filter_normalize`), drawn from
    ``seed`` alone: the same seed gives the same direction for the same architecture."""
    generator = torch.Generator().manual_seed(seed)
    raw = {
        n: torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        for n, p in parameters_of(model).items()
    }
    return filter_normalize(raw, model, bias)


def _check_direction(direction: Direction, weights: Direction) -> None:
    if direction.keys() != weights.keys():
        missing = sorted(weights.keys() - direction.keys())
        extra = sorted(direction.keys() - weights.keys())
        raise ConfigError(
            "a direction must name every trainable parameter of the model and nothing else; "
            f"missing {missing}, unknown {extra}"
        )
    for name, d in direction.items():
        if d.shape != weights[name].shape:
            raise ConfigError(
                f"direction[{name!r}] has shape {tuple(d.shape)}, the parameter has "
                f"{tuple(weights[name].shape)}"
            )


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossLine:
    """Losses along one or several lines ``theta + alpha d``.

    Attributes:
        alphas: ``[A]`` the positions.
        loss, accuracy: ``[A]`` for one direction, ``[n, A]`` for a list of ``n``; the mean
            cross-entropy (nats) and the accuracy (0 to 1) over the examples.
    """

    alphas: torch.Tensor
    loss: torch.Tensor
    accuracy: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).tolist() for k in ("alphas", "loss", "accuracy")}


@dataclass(frozen=True)
class LossPlane:
    """Losses on the grid ``theta + alphas[i] d1 + betas[j] d2``.

    Attributes:
        alphas: ``[A]``; betas: ``[B]``.
        loss, accuracy: ``[A, B]``, entry ``[i, j]`` at ``(alphas[i], betas[j])`` (plot
            ``contour(alphas, betas, loss.T)``).
        seconds: wall time of the evaluation.
    """

    alphas: torch.Tensor
    betas: torch.Tensor
    loss: torch.Tensor
    accuracy: torch.Tensor
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k).tolist() for k in ("alphas", "betas", "loss", "accuracy")}
        out["seconds"] = self.seconds
        return out


# --- batched evaluation ----------------------------------------------------------------------


def loss_line(
    model: nn.Module,
    data: Data,
    direction: Direction | nn.Module | Sequence[Direction],
    alphas: torch.Tensor | Sequence[float] | None = None,
    *,
    units: Sequence[int] | None = None,
    batch_size: int = 2000,
    max_elements: int = 2**26,
) -> LossLine:
    """The loss and accuracy of ``model`` along ``theta + alpha d``.

    Args:
        model: the network; ``theta`` is its trainable parameters (it is not changed).
        data: the examples (a task's ``test`` set, or ``(inputs, labels)``).
        direction: a :data:`Direction`; a list of them (one line each); or another model of
            the same architecture, meaning ``d = theta_B - theta``, so that ``alpha = 0`` is
            ``model``, ``alpha = 1`` the other model and the line runs straight between them.
        alphas: the positions (default ``linspace(-1, 1, 41)``).
        units: score only these output units (a task-incremental task's ``task.units``: the
            loss is then over the task's own head, as training saw it); ``None``: all.
        batch_size: examples evaluated at once. 2000 keeps the 400-unit MLP's activations
            in cache; larger batches were slower.
        max_elements: the largest activation tensor (numbers) a batch may make: wide
            networks get smaller batches.

    Returns:
        A :class:`LossLine`; ``loss`` is ``[A]`` for one direction or model, ``[n, A]`` for a
        list.
    """
    alphas = _positions(alphas, "alphas")
    if isinstance(direction, nn.Module):
        directions, single = [difference(direction, model)], True
    elif isinstance(direction, dict):
        directions, single = [direction], True
    else:
        directions, single = list(direction), False
        if not directions:
            raise ConfigError("direction: give at least one direction")
    n, a = len(directions), len(alphas)
    coefficients = torch.zeros(n * a, n, dtype=torch.float64)
    for k in range(n):
        coefficients[k * a : (k + 1) * a, k] = alphas
    loss, acc, _ = _evaluate(model, data, directions, coefficients, batch_size, max_elements, units)
    loss, acc = loss.view(n, a), acc.view(n, a)
    if single:
        loss, acc = loss[0], acc[0]
    return LossLine(alphas, loss, acc)


def loss_plane(
    model: nn.Module,
    data: Data,
    d1: Direction,
    d2: Direction,
    alphas: torch.Tensor | Sequence[float] | None = None,
    betas: torch.Tensor | Sequence[float] | None = None,
    *,
    units: Sequence[int] | None = None,
    batch_size: int = 2000,
    max_elements: int = 2**26,
    progress: bool = False,
) -> LossPlane:
    """The loss and accuracy of ``model`` on the plane ``theta + alpha d1 + beta d2``.

    Args:
        model, data, units, batch_size, max_elements: as for :func:`loss_line`.
        progress: draw a bar of grid points on stderr (on a terminal only).
        d1, d2: the two directions (e.g. :func:`random_direction` with two seeds, or the
            principal directions of a training path).
        alphas, betas: the grid's coordinates along ``d1`` and ``d2`` (default
            ``linspace(-1, 1, 41)`` each).

    Returns:
        A :class:`LossPlane` with ``[A, B]`` losses and accuracies.
    """
    alphas = _positions(alphas, "alphas")
    betas = alphas.clone() if betas is None else _positions(betas, "betas")
    grid_a, grid_b = torch.meshgrid(alphas, betas, indexing="ij")
    coefficients = torch.stack([grid_a.reshape(-1), grid_b.reshape(-1)], dim=1)
    start = time.perf_counter()
    loss, acc, _ = _evaluate(
        model, data, [d1, d2], coefficients, batch_size, max_elements, units, progress
    )
    seconds = time.perf_counter() - start
    shape = (len(alphas), len(betas))
    return LossPlane(alphas, betas, loss.view(shape), acc.view(shape), seconds)


def evaluate_points(
    model: nn.Module,
    data: Data,
    directions: Sequence[Direction],
    coefficients: torch.Tensor,
    *,
    units: Sequence[int] | None = None,
    batch_size: int = 2000,
    max_elements: int = 2**26,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy at each point ``theta + sum_k coefficients[p, k] directions[k]``.

    The engine of :func:`loss_line` and :func:`loss_plane` (see the module docstring).

    Returns:
        ``(loss, accuracy)``, each ``[P]`` float64.
    """
    loss, acc, _ = _evaluate(
        model, data, list(directions), coefficients, batch_size, max_elements, units
    )
    return loss, acc


def _positions(values, name: str) -> torch.Tensor:
    if values is None:
        return torch.linspace(-1.0, 1.0, 41, dtype=torch.float64)
    out = torch.as_tensor(values, dtype=torch.float64).flatten()
    if len(out) == 0 or not torch.isfinite(out).all():
        raise ConfigError(f"{name} must be a non-empty list of finite numbers")
    return out


def examples(data: Data, units: Sequence[int] | None = None):
    """``(inputs, labels, units)`` of ``data``: ``inputs(rows)`` gives model inputs for a slice
    or index of rows; with ``units``, labels are positions in ``units`` (a ``[U]`` tensor)."""
    if isinstance(data, ArraySet):
        inputs, labels = data.inputs, data.y
    elif isinstance(data, tuple) and len(data) == 2:
        x, labels = data[0], torch.as_tensor(data[1]).long()

        def inputs(rows):
            return x[rows]
    else:
        raise ConfigError(f"data must be an ArraySet or a pair (inputs, labels), got {type(data)}")
    if units is None:
        return inputs, labels, None
    pick = torch.as_tensor(list(units), dtype=torch.long)
    position = torch.full((int(max(pick.max(), labels.max())) + 1,), -1, dtype=torch.long)
    position[pick] = torch.arange(len(pick))
    local = position[labels]
    if (local < 0).any():
        raise ConfigError(f"units {pick.tolist()} must include every label of the data")
    return inputs, local, pick


def _split_affine(model: nn.Module):
    """``(prefix, key, layer, rest)`` when ``model`` is a Sequential whose first module with
    parameters is Linear or a convolution, preceded only by modules without parameters
    (Flatten); else ``None``."""
    if not isinstance(model, nn.Sequential):
        return None
    items = list(model._modules.items())
    for i, (key, module) in enumerate(items):
        if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
            if not isinstance(module, _AFFINE) or not module.weight.requires_grad:
                return None
            prefix = nn.Sequential(OrderedDict(items[:i]))
            # Keys are kept, so parameter names in the rest match the model's ("2.weight").
            rest = nn.Sequential(OrderedDict(items[i + 1 :]))
            return prefix, key, module, rest
    return None


def _largest_activation(module: nn.Module, example: torch.Tensor) -> int:
    """The largest output (numbers per example) of any submodule, for one example."""
    sizes = [example.numel()]
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sizes.append(out[0].numel()))
        for m in module.modules()
        if len(m._modules) == 0
    ]
    try:
        with torch.no_grad():
            out = module(example.unsqueeze(0))
        sizes.append(out[0].numel())
    finally:
        for h in hooks:
            h.remove()
    return max(sizes)


def _mix(
    out: torch.Tensor,
    base: torch.Tensor,
    terms: list[tuple[float, torch.Tensor]],
    share: bool = True,
) -> torch.Tensor:
    """``base + sum(c * t for c, t in terms)`` written into ``out``; with no terms, ``base``
    itself if ``share`` (the caller only reads it), else a copy in ``out``."""
    if not terms:
        return base if share else out.copy_(base)
    (c, t), *others = terms
    torch.add(base, t, alpha=c, out=out)
    for c, t in others:
        out.add_(t, alpha=c)
    return out


def _linear_chain(rest: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """``rest``'s modules when it is a Sequential of only ``Linear``, ``ReLU`` and ``Identity``
    (an MLP after its first layer), which :func:`_run_chain` runs in place; else ``None``."""
    if not isinstance(rest, nn.Sequential):
        return None
    steps = list(rest._modules.items())
    kinds = (nn.Linear, nn.ReLU, nn.Identity)
    if not steps or not all(isinstance(m, kinds) for _, m in steps):
        return None
    return steps


def _run_chain(
    steps: list[tuple[str, nn.Module]],
    params: dict[str, torch.Tensor],
    h: torch.Tensor,
    outputs: dict[str, torch.Tensor],
) -> torch.Tensor:
    """What ``functional_call(rest, params, (h,))`` returns, for a :func:`_linear_chain`, with
    each layer's output written into ``outputs`` (reused across points) and ReLU in place:
    ``h`` is overwritten. 12% faster than allocating, for the 400-unit MLP."""
    for name, module in steps:
        if isinstance(module, nn.Linear):
            weight = params.get(f"{name}.weight", module.weight)
            bias = params.get(f"{name}.bias", module.bias)
            out = outputs.get(name)
            if out is None or out.shape != (len(h), len(weight)):
                out = outputs[name] = h.new_empty(len(h), len(weight))
            if bias is None:
                h = torch.mm(h, weight.t(), out=out)
            else:
                h = torch.addmm(bias, h, weight.t(), out=out)
        elif isinstance(module, nn.ReLU):
            h = h.relu_()
    return h


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    data: Data,
    directions: list[Direction],
    coefficients: torch.Tensor,
    batch_size: int,
    max_elements: int,
    units: Sequence[int] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_elements", max_elements)
    inputs, labels, pick = examples(data, units)
    n = len(labels)
    if n == 0:
        raise ConfigError("data has no examples")
    base = parameters_of(model)
    for d in directions:
        _check_direction(d, base)
    coefficients = torch.as_tensor(coefficients, dtype=torch.float64)
    if coefficients.ndim != 2 or coefficients.shape[1] != len(directions):
        raise ConfigError(
            f"coefficients must be [points, {len(directions)}], got {tuple(coefficients.shape)}"
        )
    device = next(iter(base.values())).device
    dtype = next(iter(base.values())).dtype
    if pick is not None:
        pick = pick.to(device)
    # Python floats: each point's nonzero coefficients, so that a point on one of several
    # lines mixes only its own direction.
    points = [[(c, k) for k, c in enumerate(row) if c != 0.0] for row in coefficients.tolist()]
    was_training = model.training
    model.eval()
    try:
        split = _split_affine(model)
        if split is not None:
            prefix, key, layer, rest = split
            names = [n for n in base if not n.startswith(f"{key}.")]
        else:
            prefix = key = layer = None
            rest = model
            names = list(base)
        chain = _linear_chain(rest) if layer is not None else None
        chain_outputs: dict[str, torch.Tensor] = {}
        widest = _largest_activation(model, inputs(slice(0, 1))[0].to(device, dtype))
        batch_size = max(1, min(batch_size, max_elements // widest))
        # One buffer per parameter, refilled for every point: no allocation in the loop.
        buffers = {name: torch.empty_like(base[name]) for name in names}
        total_loss = torch.zeros(len(points), dtype=torch.float64, device=device)
        total_correct = torch.zeros(len(points), dtype=torch.float64, device=device)
        bar = tqdm(
            total=len(points) * -(-n // batch_size),
            unit="point",
            desc="loss plane",
            file=sys.stderr,
            disable=None if progress else True,  # None: on a terminal only
            leave=False,
        )
        for start in range(0, n, batch_size):
            rows = slice(start, min(start + batch_size, n))
            x = inputs(rows).to(device, dtype)
            y = labels[rows].to(device)
            if layer is not None:
                x = prefix(x)
                # The first layer is linear in (weight, bias): its output at every grid point
                # is a mix of K + 1 outputs computed once (module docstring).
                firsts = [layer(x)]
                for d in directions:
                    params = {"weight": d[f"{key}.weight"]}
                    if layer.bias is not None:  # a frozen bias does not move: zero direction
                        params["bias"] = d.get(f"{key}.bias", torch.zeros_like(layer.bias))
                    firsts.append(functional_call(layer, params, (x,)))
                mixed_first = torch.empty_like(firsts[0])
            losses, corrects = [], []
            # Each point's weights are mixed again for every batch of examples: the other
            # order would keep every batch's first-layer outputs, (K + 1) x n x features
            # numbers (gigabytes for a CNN), to save about 5% of the 400-unit MLP's plane.
            for terms in points:
                params = {
                    name: _mix(
                        buffers[name], base[name], [(c, directions[k][name]) for c, k in terms]
                    )
                    for name in names
                }
                if layer is not None:
                    first_terms = [(c, firsts[k + 1]) for c, k in terms]
                    h = _mix(mixed_first, firsts[0], first_terms, share=chain is None)
                else:
                    h = x
                if chain is not None and h.dim() == 2:
                    logits = _run_chain(chain, params, h, chain_outputs)
                else:
                    logits = functional_call(rest, params, (h,))
                if pick is not None:
                    logits = logits.index_select(-1, pick)
                losses.append(F.cross_entropy(logits, y, reduction="sum"))
                corrects.append((logits.argmax(dim=-1) == y).sum())
                bar.update()
            total_loss += torch.stack(losses).double()
            total_correct += torch.stack(corrects).double()
        bar.close()
    finally:
        model.train(was_training)
    return (total_loss / n).cpu(), (total_correct / n).cpu(), batch_size


def flat_width(alphas: torch.Tensor, losses: torch.Tensor, rise: float = 0.1) -> float:
    """The width of the basin around ``alpha = 0`` on a 1-D loss curve: the length of the
    interval containing 0 on which ``loss <= loss(0) + rise`` (nats), with its ends found by
    linear interpolation between grid points (an end at the grid's edge is the edge).

    ``alphas`` must be increasing and contain 0.
    """
    alphas = torch.as_tensor(alphas, dtype=torch.float64)
    losses = torch.as_tensor(losses, dtype=torch.float64)
    zero = torch.nonzero(alphas == 0).flatten()
    if len(zero) != 1 or not (alphas[1:] > alphas[:-1]).all():
        raise ConfigError("alphas must be increasing and contain 0 exactly once")
    i0 = int(zero[0])
    level = float(losses[i0]) + check_range("rise", rise, 0.0, low_open=True)

    def edge(step: int) -> float:
        i = i0
        while 0 <= i + step < len(alphas) and losses[i + step] <= level:
            i += step
        j = i + step
        if not 0 <= j < len(alphas):
            return float(alphas[i])
        t = (level - losses[i]) / (losses[j] - losses[i])
        return float(alphas[i] + t * (alphas[j] - alphas[i]))

    return edge(1) - edge(-1)


def set_parameters(model: nn.Module, point: Direction) -> nn.Module:
    """Copy ``point`` into ``model``'s trainable parameters (in place); returns ``model``."""
    weights = dict(model.named_parameters())
    _check_direction(point, {k: v for k, v in weights.items() if v.requires_grad})
    with torch.no_grad():
        for name, value in point.items():
            weights[name].copy_(value)
    return model
