"""The diagonal of the Fisher information of a classifier's weights, estimated four ways.

For a classifier with weights ``theta`` and class probabilities ``p(c|x) = softmax(z(x))_c``
(``z`` the logits; under task-incremental learning only the task's own output units, as the
learner's masking gives), the diagonal of the Fisher information is (Kirkpatrick et al. 2017,
"Overcoming catastrophic forgetting in neural networks", PNAS)

    F_i = E_{x ~ D} sum_c p(c|x) * (d log p(c|x) / d theta_i)^2

estimated on the training examples ``x_1..x_N`` of a task. Van de Ven 2025 ("On the computation
of the Fisher information in continual learning", ICLR blog post) compares the ways EWC
implementations compute it; :func:`diagonal_fisher` offers them by ``kind``:

- ``exact``: ``(1/N) sum_n sum_c p(c|x_n) (d log p(c|x_n) / d theta)^2``, the expectation over
  every class, weighted by the model's own predictions.
- ``sample``: ``(1/N) sum_n (d log p(c_n|x_n) / d theta)^2`` with one label ``c_n ~ p(.|x_n)``
  drawn per example: an unbiased Monte Carlo estimate of ``exact``.
- ``empirical``: ``(1/N) sum_n (d log p(y_n|x_n) / d theta)^2`` with the true labels ``y_n``:
  the "empirical Fisher", which is not the Fisher (the two agree only where the model's
  predictions match the labels' distribution).
- ``weighted-empirical``: ``(1/N) sum_n p(y_n|x_n) (d log p(y_n|x_n) / d theta)^2``: the
  empirical Fisher with each example weighted by the probability of its true label, as the
  online EWC of Mammoth (Buzzega et al. 2020, the DER paper's code) computes it. The weights
  shrink the contribution of poorly fit examples, so it is several times smaller than
  ``empirical`` (about 4x on a Permuted-MNIST task learnt to 91%).
- ``batched``: ``(1/B) sum_b (d/d theta [(1/|b|) sum_{n in b} log p(y_n|x_n)])^2`` over ``B``
  mini-batches ``b``: squared gradients of mini-batch mean losses, as several libraries compute
  it. Cheap (one backward pass per batch) but biased: averaging ``|b|`` gradients before
  squaring leaves about ``1/|b|`` of the empirical Fisher plus the squared mean gradient, so it
  is far smaller than the others and depends on the batch size.

Every estimate is a *mean* over examples (or batches), not a sum, so the EWC strength
``lambda`` that suits it does not change with the size of a task's training set.

Sequence models (a language model: ``[N, T]`` next-token targets, ``[B, T, U]`` logits). A
sequence is one example, whose log-likelihood under teacher forcing is the sum over its
positions, ``log p(y|x) = sum_t log p_t(y_t|x)``, each position's distribution given the true
prefix. As a distribution over ``y`` that is a product of independent categoricals, so its
score is ``sum_t J_t^T (e_{y_t} - p_t)`` and its Fisher the sum over positions of the
per-position Fisher (the cross terms vanish: each position's score has mean zero). Per kind:

- ``sample``, ``empirical``: one logit-space vector per sequence carrying ``e_{c_t} - p_t`` at
  every position (``c_t`` drawn from ``p_t``, one uniform per position, or the true token), so
  one backward pass per sequence gives the gradient of the sequence's log-likelihood, squared
  whole. ``sample`` is an unbiased estimate of the exact Fisher (its cross terms have mean zero);
  ``empirical`` is the empirical Fisher of whole sequences.
- ``weighted-empirical``: each position's vector weighted by ``sqrt(p_t(y_t))``, its own true
  token's probability (for ``T = 1`` the classifier's form). The literal weight, the sequence's
  probability ``prod_t p_t(y_t)``, would vanish for any sequence of more than a few tokens.
- ``batched``: squared gradients of the mini-batch mean of the sequences' log-likelihoods (each
  the sum over its positions).
- ``exact``: refused. It needs a backward pass per position and unit (``T * U`` per sequence,
  32 x 18 = 576 even for the tiny character model of the tests); ``sample`` is its unbiased
  estimate at the cost of one.

How it is computed: never with a Python loop over examples or classes. With ``J_n`` the
Jacobian of the logits with respect to ``theta`` at ``x_n``, ``d log p(c|x_n) / d theta =
J_n^T (e_c - p_n)``, so every kind but ``batched`` is ``(1/N) sum_n sum_k (J_n^T v_nk)^2`` for
logit-space vectors ``v_nk``: for ``exact``, ``v_nc = sqrt(p_nc) (e_c - p_n)``, one per class;
for ``sample`` and ``empirical``, the one ``v_n = e_{c_n} - p_n`` (times ``sqrt(p_n y_n)`` for
``weighted-empirical``). Three exact ways evaluate it:

- closed form, for an ``nn.Linear`` layer applied once per example: the example's gradient of
  the layer's weight along ``v_nk`` is the outer product ``delta_nk a_n^T`` of the gradient at
  the layer's outputs and the layer's input, so the squares sum over examples and classes as
  one matrix product, ``F_W = (1/N) (sum_k delta_k^2)^T (a^2)``, ``F_b = (1/N) sum_nk
  delta_nk^2``. The ``delta_nk`` of all ``K`` vectors come from one batched backward pass
  through the activations (``is_grads_batched``); no per-example gradient is formed.
- for an ``nn.Conv2d`` (one group, numeric zero padding) applied once per example: the
  example's weight gradient along ``v_nk`` is ``delta_nk U_n^T``, the gradients at the
  layer's outputs times its unfolded input patches; the positions sum inside the square, so
  these are formed, a block of examples at a time, by batched matrix products (no autograd per
  example), then squared and summed.
- ``torch.func`` for every other parameter (norms, custom layers, ...): ``vmap`` over examples of
  a ``vjp`` of the example's logits, itself ``vmap``-ed over the ``K`` vectors, then squared and
  summed. It forms ``K`` per-example gradients of those parameters, a chunk of examples at a
  time.

``method="auto"`` uses these forms for every linear and convolutional layer that allows them and
``torch.func`` for the rest; ``method="vmap"`` uses ``torch.func`` for every parameter (the
reference).

Forgetless's plain MLP (Linear/ReLU layers, float32 on the CPU, every parameter trained:
:func:`forgetless.mlp_step.mlp_layers`) takes, under ``method="auto"``, the same closed form
with no autograd at all: the forward pass by hand, the ``delta_k`` of all ``K`` vectors by one
matrix product per layer (``delta <- (delta W) * [a > 0]``), equal to the autograd form's to
float rounding (other matrix-product shapes). Its ``batched`` Fisher runs the kernels of
autograd's mini-batch gradient (:mod:`forgetless.mlp_step`), so gives the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vjp, vmap

from forgetless.errors import ConfigError
from forgetless.losses import cross_entropy
from forgetless.mlp_step import cross_entropy_and_gradient, forward, mlp_layers, relu_backward_
from forgetless.per_sample import vmap_attention
from forgetless.validation import check_samples, is_positive_int


class Rows(Protocol):
    """Inputs read by rows: ``len(x)`` and ``x[index]`` (a slice or an index tensor)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor: ...


FISHER_KINDS = ("exact", "sample", "empirical", "weighted-empirical", "batched")
#: What a sequence model's Fisher uses where ``exact`` is asked for by default (EWC's
#: ``fisher="auto"``): its unbiased estimate.
SEQUENCE_KIND = "sample"
# The kinds that need the true labels.
_LABELLED = ("empirical", "weighted-empirical", "batched")
METHODS = ("auto", "vmap")

# Examples per batched forward pass (sequences: this many targets, at least one sequence).
_CHUNK = 1024
# Per-example gradients held at once (examples x vectors x parameters floats): 32 MiB in float32.
# Small on purpose: on CPUs, larger blocks of per-example gradients run slower, not faster.
_GRADIENT_FLOATS = 2**23


def diagonal_fisher(
    model: nn.Module,
    x: torch.Tensor | Rows,
    y: torch.Tensor | None = None,
    units: torch.Tensor | Sequence[int] | None = None,
    kind: str = "exact",
    n_samples: int | None = None,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 128,
    method: str = "auto",
) -> list[torch.Tensor]:
    """The diagonal Fisher information of ``model``'s trainable weights on examples ``x``.

    The formula of each ``kind`` is in the module docstring (Kirkpatrick et al. 2017; van de
    Ven 2025, "On the computation of the Fisher information in continual learning"). The model
    is in eval mode while computing (no dropout, batch-norm running statistics) and its mode is
    restored after; no ``.grad`` is touched. Examples must be processed independently (true of
    any usual network in eval mode).

    Args:
        model: a classifier mapping a batch of inputs to ``[batch, outputs]`` logits, or a
            sequence model giving ``[batch, *positions, outputs]`` logits (a language model's
            ``[batch, T, vocabulary]``; see "Sequence models" in the module docstring).
        x: model-ready inputs ``[N, ...]`` on any device (moved to the model's, a chunk at a
            time), or any object with ``len`` whose ``x[rows]`` gives them (e.g.
            ``ArraySet.lazy_inputs``, which converts stored images a chunk at a time).
        y: labels ``[N]`` (or targets ``[N, *positions]`` of a sequence model) as output-unit
            indices; needed by every kind but ``exact`` and ``sample``.
        units: the output units the probabilities are over: a boolean mask over the outputs (a
            row of ``learner.output_mask``) or unit indices (``task.units``); ``None``: all.
        kind: ``"exact"``, ``"sample"``, ``"empirical"``, ``"weighted-empirical"`` or
            ``"batched"``.
        n_samples: average over this many examples, drawn without replacement with
            ``generator``; ``None`` (or ``>= N``): all of them.
        chunk_size: examples per batched forward pass (``None``: 1024); a memory knob, the
            result does not depend on it beyond float rounding.
        generator: the random source (the global one if ``None``). It draws, in this order: a
            permutation of the ``N`` examples (if ``n_samples < N``, and always for
            ``batched``), whose first ``n_samples`` are used in that order; then, for
            ``sample``, one uniform ``u_n`` per used example (``[count, *positions]`` of them
            for a sequence model), the label ``c_n`` being the first class whose cumulative
            probability reaches ``u_n`` (inverse-CDF sampling).
        batch_size: the mini-batch size of ``batched`` (its estimate depends on it).
        method: ``"auto"`` (closed forms for linear and conv layers; the hand-written MLP
            forms for the plain MLP, module docstring) or ``"vmap"`` (``torch.func`` for every
            parameter; for ``batched``, autograd's mini-batch gradients); all exact.

    Returns:
        One tensor per trainable parameter, in ``model.parameters()`` order: the mean over the
        examples used (over the mini-batches for ``batched``).

    Raises:
        ConfigError: an unknown ``kind`` or ``method``, a bad ``n_samples``, ``chunk_size`` or
            ``batch_size``, missing labels, a label outside ``units``, or ``exact`` on a
            sequence model.
    """
    if kind not in FISHER_KINDS:
        raise ConfigError(f"fisher kind must be one of {', '.join(FISHER_KINDS)}, got {kind!r}")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    n_samples = check_samples("n_samples", n_samples)
    for name, value in (("chunk_size", chunk_size), ("batch_size", batch_size)):
        if value is not None and not is_positive_int(value):
            raise ConfigError(f"{name} must be an integer in [1, inf), got {value!r}")
    n = len(x)
    if n == 0:
        raise ConfigError("the Fisher information needs at least one example, got none")
    if kind in _LABELLED and (y is None or len(y) != n):
        raise ConfigError(f"the {kind} Fisher needs one label per example (y of length {n})")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return []

    was_training = model.training
    model.eval()
    try:
        positions = _target_shape(model, x, y, params[0].device)
        if positions and kind == "exact":
            raise ConfigError(
                f"the exact Fisher of a sequence model needs a backward pass per position and "
                f"output unit ({math.prod(positions)} positions x the units, per sequence); use "
                f"kind={SEQUENCE_KIND!r}, its unbiased estimate at one pass per sequence (or "
                "'empirical'; EWC's fisher='auto' picks 'sample' for sequence models)"
            )
        count = n if n_samples is None else min(n_samples, n)
        rows = None
        if count < n or kind == "batched":
            rows = torch.randperm(n, generator=generator)[:count]
        unit_index = _unit_index(units)
        targets = None
        if kind in _LABELLED:
            targets = _positions(y if rows is None else y[rows], unit_index)
        uniforms = None
        if kind == "sample":
            uniforms = torch.rand((count, *positions), generator=generator)
        chunks = _Chunks(x, rows, targets, uniforms, params[0].device)
        linears = _plain_mlp(model, positions) if method == "auto" else None
        if kind == "batched":
            if linears is not None:
                return _mlp_batched(linears, unit_index, chunks(batch_size))
            return _batched(model, params, unit_index, chunks(batch_size))
        # Bound the logits of a chunk by its targets: 1024 labels, or 1024 tokens of sequences.
        size = chunk_size or max(1, _CHUNK // math.prod(positions))
        if linears is not None:
            return _mean(_MLPTerm(linears, unit_index, kind), chunks(size))
        if method == "auto":
            try:
                return _mean(_Term(model, params, unit_index, kind, closed_form=True), chunks(size))
            except _CallPatternChanged:
                pass  # the model used its linear layers differently on another chunk
        return _mean(_Term(model, params, unit_index, kind, closed_form=False), chunks(size))
    finally:
        model.train(was_training)


_OUTPUT_NORM = "output-norm"


def output_sensitivity(
    model: nn.Module,
    x: torch.Tensor | Rows,
    units: torch.Tensor | Sequence[int] | None = None,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    method: str = "auto",
) -> list[torch.Tensor]:
    """MAS importance: ``(1/N) sum_n |d ||z(x_n)||_2^2 / d theta|`` per trainable weight, ``z``
    the logits over ``units`` (Aljundi et al. 2018, Eq. 2 and 4).

    Computed like the Fisher (module docstring) with the one vector ``v_n = 2 z(x_n)`` and
    absolute values instead of squares: closed forms for linear and conv layers, ``torch.func``
    for the rest, never a loop over examples. ``n_samples`` examples are drawn without
    replacement with ``generator`` (a permutation, of which the first ``n_samples`` are used).
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    n_samples = check_samples("n_samples", n_samples)
    n = len(x)
    if n == 0:
        raise ConfigError("MAS importance needs at least one example, got none")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return []
    count = n if n_samples is None else min(n_samples, n)
    rows = torch.randperm(n, generator=generator)[:count] if count < n else None
    chunks = _Chunks(x, rows, None, None, params[0].device)
    unit_index = _unit_index(units)
    was_training = model.training
    model.eval()
    try:
        positions = _target_shape(model, x, None, params[0].device)
        size = chunk_size or max(1, _CHUNK // math.prod(positions))  # about 1024 targets
        linears = _plain_mlp(model, positions) if method == "auto" else None
        if linears is not None:
            return _mean(_MLPTerm(linears, unit_index, _OUTPUT_NORM, power=1), chunks(size))
        if method == "auto":
            try:
                term = _Term(model, params, unit_index, _OUTPUT_NORM, closed_form=True, power=1)
                return _mean(term, chunks(size))
            except _CallPatternChanged:
                pass
        term = _Term(model, params, unit_index, _OUTPUT_NORM, closed_form=False, power=1)
        return _mean(term, chunks(size))
    finally:
        model.train(was_training)


def _target_shape(
    model: nn.Module, x: torch.Tensor | Rows, y: torch.Tensor | None, device: torch.device
) -> tuple[int, ...]:
    """One example's targets: ``()`` for a classifier, ``(T,)`` for a language model; from the
    labels if given, else from the model's output on one example (a forward pass)."""
    if y is not None:
        return tuple(y.shape[1:])
    with torch.no_grad():
        return tuple(model(x[0:1].to(device)).shape[1:-1])


def _unit_index(units: torch.Tensor | Sequence[int] | None) -> torch.Tensor | None:
    if units is None:
        return None
    index = torch.as_tensor(units)
    if index.dtype == torch.bool:
        index = index.nonzero()
    index = index.long().flatten().cpu()
    if len(index) == 0:
        raise ConfigError("units must name at least one output unit, got none")
    return index


def _positions(y: torch.Tensor, unit_index: torch.Tensor | None) -> torch.Tensor:
    """Labels as positions among ``units`` (the columns of the restricted logits)."""
    y = y.long().cpu()
    if unit_index is None:
        return y
    lookup = torch.full((int(max(y.max(), unit_index.max())) + 1,), -1, dtype=torch.long)
    lookup[unit_index] = torch.arange(len(unit_index))
    positions = lookup[y]
    if (positions < 0).any():
        outside = sorted(set(y[positions < 0].tolist()))[:5]
        raise ConfigError(
            f"labels {outside} are outside the units {unit_index.tolist()} the Fisher is over"
        )
    return positions


def _restrict(out: torch.Tensor, unit_index: torch.Tensor | None) -> torch.Tensor:
    return out if unit_index is None else out[..., unit_index.to(out.device)]


def _cotangents(
    kind: str, p: torch.Tensor, target: torch.Tensor | None, u: torch.Tensor | None
) -> torch.Tensor:
    """The logit-space vectors ``v_k`` whose ``sum_k (J^T v_k)^2`` is the kind's Fisher term.

    ``p`` is ``[B, U]``; returns ``[B, K, U]`` (``K = U`` for ``exact``, else 1). A sequence
    model's ``p`` is ``[B, *positions, U]``: one vector ``[B, 1, *positions, U]`` carrying each
    position's (``exact`` is refused before).
    """
    units = p.shape[-1]
    if kind == "exact":
        # sum_c p_c (J^T (e_c - p))^2 = sum_c (J^T v_c)^2 with v_c = sqrt(p_c) (e_c - p).
        eye = torch.eye(units, dtype=p.dtype, device=p.device)
        return p.sqrt().unsqueeze(-1) * (eye - p.unsqueeze(-2))
    if kind == "sample":
        # Inverse CDF: the first class whose cumulative probability reaches u.
        target = (p.cumsum(-1) < u.unsqueeze(-1)).sum(-1).clamp(max=units - 1)
    one_hot = F.one_hot(target, units).to(p.dtype)
    v = one_hot - p
    if kind == "weighted-empirical":
        # p_y (J^T (e_y - p))^2 = (J^T v)^2 with v = sqrt(p_y) (e_y - p).
        # For sequences each position is weighted by its own token's probability.
        v = v * p.gather(-1, target.unsqueeze(-1)).sqrt()
    return v.unsqueeze(1)


class _Chunks:
    """The examples used, with their targets and uniforms, a chunk at a time on ``device``."""

    def __init__(self, x, rows, targets, uniforms, device: torch.device):
        self.x, self.rows, self.targets, self.uniforms = x, rows, targets, uniforms
        self.count = len(x) if rows is None else len(rows)
        self.device = device

    def __call__(self, size: int) -> Iterator[tuple]:
        for start in range(0, self.count, size):
            part = slice(start, min(start + size, self.count))
            x = self.x[part] if self.rows is None else self.x[self.rows[part]]
            yield (x.to(self.device), self._on_device(self.targets, part),
                   self._on_device(self.uniforms, part))  # fmt: skip

    def _on_device(self, values: torch.Tensor | None, part: slice) -> torch.Tensor | None:
        return None if values is None else values[part].to(self.device)


def _mean(term: Callable, chunks: Iterator[tuple]) -> list[torch.Tensor]:
    """The mean over examples of ``term(x, target, u)``, a per-chunk sum."""
    total, count = None, 0
    for chunk in chunks:
        part = term(*chunk)
        count += len(chunk[0])
        if total is None:
            total = part
        else:
            torch._foreach_add_(total, part)
    return [t.div_(count) for t in total]


class _CallPatternChanged(Exception):
    """A linear layer found fit for the closed form on one chunk was not on another."""


class _Term:
    """``sum_n sum_k (J_n^T v_nk)^2`` over one chunk, for every trainable parameter.

    Linear and conv layers applied once per example (found on the first chunk) take their
    closed forms; every other trainable parameter takes ``vmap``. The vectors ``v_nk`` come from
    one batched forward pass, which also records those layers' inputs and outputs.
    """

    def __init__(self, model, params, unit_index, kind: str, closed_form: bool, power: int = 2):
        self.model, self.params, self.unit_index, self.kind = model, params, unit_index, kind
        self.power = power  # 2: sum of squares (Fisher); 1: sum of absolute values (MAS)
        self.candidates = _exclusive_layers(model) if closed_form else []
        self.layers: list[nn.Module] | None = None  # fixed on the first chunk

    def __call__(self, x, target, u) -> list[torch.Tensor]:
        rows = len(x)
        seen: dict[nn.Module, list] = {layer: [] for layer in self.candidates}

        def record(module, inputs, output):
            seen[module].append((inputs[0], output))

        handles = [layer.register_forward_hook(record) for layer in self.candidates]
        try:
            with torch.set_grad_enabled(bool(self.candidates)):
                logits = _restrict(self.model(x), self.unit_index)
        finally:
            for handle in handles:
                handle.remove()
        # One call on one row per example: else the layer's per-example weight gradient is a
        # sum of outer products, whose square does not factor.
        fit = [
            layer
            for layer, calls in seen.items()
            if len(calls) == 1
            and calls[0][0].ndim == (2 if isinstance(layer, nn.Linear) else 4)
            and calls[0][0].shape[0] == rows
            and calls[0][1].grad_fn is not None
        ]
        if self.layers is None:
            self.layers = fit
            closed = {id(p) for layer in fit for p in layer.parameters()}
            self.others = [p for p in self.params if id(p) not in closed]
        elif any(layer not in fit for layer in self.layers):
            raise _CallPatternChanged
        if self.kind == _OUTPUT_NORM:
            v = 2 * logits.detach().unsqueeze(1)  # d ||z||^2 / dz = 2 z: [B, 1, U]
        else:
            v = _cotangents(self.kind, torch.softmax(logits.detach(), -1), target, u)  # [B, K, U]
        result = {}
        if self.layers:
            calls = [seen[layer][0] for layer in self.layers]
            result.update(_closed_form(self.layers, calls, logits, v, self.power))
        if self.others:
            result.update(_per_example(self.model, self.others, self.unit_index, x, v, self.power))
        return [result[id(p)] for p in self.params]


def _exclusive_layers(model: nn.Module) -> list[nn.Module]:
    """Layers with a closed form: plain ``nn.Linear``, and ``nn.Conv2d`` with one group, zero
    padding given as numbers, with trainable parameters that no other module shares."""
    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1

    def has_form(m: nn.Module) -> bool:
        if type(m) is nn.Linear:
            return True
        return (
            type(m) is nn.Conv2d
            and m.groups == 1
            and m.padding_mode == "zeros"
            and not isinstance(m.padding, str)
        )

    return [
        m
        for m in model.modules()
        if has_form(m)
        and any(p.requires_grad for p in m.parameters())
        and all(owners[id(p)] == 1 for p in m.parameters())
    ]


def _closed_form(layers, calls, logits, v, power: int = 2) -> dict[int, torch.Tensor]:
    outputs = [out for _, out in calls]
    if v.shape[1] == 1:
        deltas = torch.autograd.grad(logits, outputs, v[:, 0], allow_unused=True)
        deltas = [None if d is None else d.unsqueeze(0) for d in deltas]
    else:
        deltas = torch.autograd.grad(
            logits, outputs, v.movedim(1, 0), allow_unused=True, is_grads_batched=True
        )
    result = {}
    for layer, (a, out), d in zip(layers, calls, deltas, strict=True):
        if d is None:  # the layer does not reach these logits
            d = out.new_zeros((1, *out.shape))
        if isinstance(layer, nn.Linear):
            result.update(_linear_form(layer, a.detach(), _moment(d, power).sum(0), power))
        else:
            result.update(_conv_form(layer, a.detach(), d, power))
    return result


def _moment(t: torch.Tensor, power: int) -> torch.Tensor:
    return t.pow(2) if power == 2 else t.abs()


def _linear_form(layer: nn.Linear, a: torch.Tensor, moments: torch.Tensor, power: int) -> dict:
    """The example's weight gradient along a vector is ``delta a^T``: its square is
    ``delta^2 (a^2)^T`` (its absolute value ``|delta| |a|^T``), so the sum over examples and
    vectors is one matrix product."""
    result = {}
    if layer.weight.requires_grad:
        # sum_n (sum_k delta_nk^2) a_n^2, or with absolute values
        result[id(layer.weight)] = moments.T @ _moment(a, power)
    if layer.bias is not None and layer.bias.requires_grad:
        result[id(layer.bias)] = moments.sum(0)
    return result


def _conv_form(layer: nn.Conv2d, a: torch.Tensor, d: torch.Tensor, power: int) -> dict:
    """A convolution's per-example weight gradient is ``delta U^T``: its output gradients
    ``delta`` [out, positions] times the unfolded input patches ``U`` [in * kh * kw,
    positions]. It does not factor once squared (the positions sum inside), so it is formed,
    a block of examples at a time, by batched matrix products: no autograd per example."""
    k, rows, channels = d.shape[0], d.shape[1], d.shape[2]
    patches = F.unfold(a, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    d = d.reshape(k, rows, channels, -1)  # [K, B, out, positions]
    weight = torch.zeros(channels, patches.shape[1], dtype=a.dtype, device=a.device)
    bias = torch.zeros(channels, dtype=a.dtype, device=a.device)
    block = max(1, _GRADIENT_FLOATS // (k * channels * patches.shape[1]))
    for start in range(0, rows, block):
        part = slice(start, start + block)
        grads = d[:, part] @ patches[part].transpose(1, 2).unsqueeze(0)  # [K, b, out, in*kk]
        weight += (grads.pow_(2) if power == 2 else grads.abs_()).sum((0, 1))
        bias += _moment(d[:, part].sum(-1), power).sum((0, 1))
    result = {}
    if layer.weight.requires_grad:
        result[id(layer.weight)] = weight.reshape(layer.weight.shape)
    if layer.bias is not None and layer.bias.requires_grad:
        result[id(layer.bias)] = bias
    return result


def _per_example(model, params, unit_index, x, v, power: int = 2) -> dict[int, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    wrt = {names[id(p)]: p.detach() for p in params}
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in wrt}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def example(q, xi, vi):
        def logits(r):
            out = functional_call(model, (r, fixed, buffers), (xi.unsqueeze(0),)).squeeze(0)
            return _restrict(out, unit_index)

        _, pullback = vjp(logits, q)
        (grads,) = vmap(pullback)(vi)
        return {n: _moment(g, power).sum(0) for n, g in grads.items()}

    per_call = max(1, _GRADIENT_FLOATS // (v.shape[1] * sum(p.numel() for p in params)))
    total = None
    for start in range(0, len(x), per_call):
        part = slice(start, start + per_call)
        with vmap_attention():
            per_part = vmap(example, in_dims=(None, 0, 0))(wrt, x[part], v[part])
        sums = [g.sum(0) for g in per_part.values()]
        if total is None:
            total = sums
        else:
            torch._foreach_add_(total, sums)
    return {id(p): t for p, t in zip(params, total, strict=True)}


def _plain_mlp(model: nn.Module, positions: tuple[int, ...]) -> list[nn.Linear] | None:
    """The Linear layers of a classifier that is forgetless's plain MLP, every parameter
    trained (so they are ``params``, in order); else ``None``."""
    return None if positions else mlp_layers(model)


def _scatter_units(
    grad: torch.Tensor, unit_index: torch.Tensor | None, outputs: int
) -> torch.Tensor:
    """A gradient over the ``units`` columns as one over all ``outputs`` (zeros elsewhere), as
    autograd's backward of :func:`_restrict` gives it."""
    if unit_index is None:
        return grad
    full = grad.new_zeros((*grad.shape[:-1], outputs))
    full[..., unit_index.to(grad.device)] = grad
    return full


class _MLPTerm:
    """:class:`_Term` for the plain MLP, without autograd: ``sum_n sum_k (J_n^T v_nk)^2`` (or
    absolute values) of every parameter over one chunk, by the linear closed form, with the
    ``delta_k`` of all ``K`` vectors backpropagated by hand, one matrix product per layer."""

    def __init__(self, linears: list[nn.Linear], unit_index, kind: str, power: int = 2):
        self.linears, self.unit_index, self.kind, self.power = linears, unit_index, kind, power

    @torch.no_grad()
    def __call__(self, x, target, u) -> list[torch.Tensor]:
        inputs, logits = forward(self.linears, x)
        restricted = _restrict(logits, self.unit_index)
        if self.kind == _OUTPUT_NORM:
            v = 2 * restricted.unsqueeze(1)  # d ||z||^2 / dz = 2 z: [B, 1, U]
        else:
            v = _cotangents(self.kind, torch.softmax(restricted, -1), target, u)  # [B, K, U]
        delta = _scatter_units(v.movedim(1, 0), self.unit_index, logits.shape[-1])  # [K, B, O]
        result: list[torch.Tensor] = []
        for k in range(len(self.linears) - 1, -1, -1):
            moments = _moment(delta, self.power).sum(0)  # [B, out]
            bias = moments.sum(0)
            result[:0] = [moments.T @ _moment(inputs[k], self.power), bias]
            if k > 0:
                delta = relu_backward_(torch.matmul(delta, self.linears[k].weight), inputs[k])
        return result


def _mlp_batched(linears: list[nn.Linear], unit_index, batches: Iterator[tuple]):
    """:func:`_batched` for the plain MLP: each mini-batch's gradient by hand, with the kernels
    of autograd's backward pass (:mod:`forgetless.mlp_step`), so the same bits."""
    total = [torch.zeros_like(p) for m in linears for p in (m.weight, m.bias)]
    one = torch.ones(())  # autograd.grad's upstream gradient of the loss
    count = 0
    with torch.no_grad():
        for x, target, _ in batches:
            inputs, logits = forward(linears, x)
            _, grad = cross_entropy_and_gradient(_restrict(logits, unit_index), target, one)
            grad = _scatter_units(grad, unit_index, logits.shape[-1])
            for k in range(len(linears) - 1, -1, -1):
                if k > 0:
                    input_grad = torch.mm(grad, linears[k].weight)
                total[2 * k].add_(torch.mm(grad.t(), inputs[k]).pow(2))
                total[2 * k + 1].add_(torch.sum(grad, 0).pow(2))
                if k > 0:
                    grad = relu_backward_(input_grad, inputs[k])
            count += 1
    return [t.div_(count) for t in total]


def _batched(model, params, unit_index, batches: Iterator[tuple]) -> list[torch.Tensor]:
    total = [torch.zeros_like(p) for p in params]
    count = 0
    for x, target, _ in batches:
        with torch.enable_grad():
            out = _restrict(model(x), unit_index)
            if out.ndim == 2:
                loss = F.cross_entropy(out, target)
            else:  # the mean over sequences of each one's log-likelihood, a sum over positions
                loss = cross_entropy(out, target, reduction="sum") / len(x)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        for t, g in zip(total, grads, strict=True):
            if g is not None:
                t.add_(g.pow(2))
        count += 1
    return [t.div_(count) for t in total]
