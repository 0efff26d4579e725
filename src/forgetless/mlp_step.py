"""A hand-written training step for a plain Linear/ReLU MLP under cross-entropy and SGD.

Eager autograd spends about as long around the matrix products of a small MLP's step as in
them (building the graph, the engine's thread hand-over, the optimiser's Python): at batch 128
on the 784-400-400-10 MLP the products take 870 us and the step 1,740 (BENCHMARKS.md, goal 3).
This step does the same arithmetic with no graph: the forward products into buffers kept per
batch size, ReLU in place (its output is its own backward mask, as autograd's), the loss and
its gradient with the very kernels autograd calls (``log_softmax``, ``nll_loss`` and their
backward functions), the backward products, and SGD's update, layer by layer from the top
(each layer's input gradient is taken before its weights move).

A quadratic penalty (EWC, online EWC, MAS, L2: ``lam/2 * sum Omega (theta - m)^2``,
:mod:`forgetless.strategies.quadratic`) has the closed-form gradient ``lam * Omega * (theta -
m)``: the strategy computes it with the very operations its autograd function runs
(:meth:`~forgetless.strategies.quadratic.QuadraticPenalty.penalty_gradients`), the step adds it
to each weight gradient (autograd sums the two contributions of a parameter the same way, and
a sum of two floats does not depend on their order) and its value to the loss.

Two arithmetics (``FitConfig.fast_path``):

* ``"exact"`` (what ``"auto"`` runs): each weight gradient into a buffer, then SGD's own
  ``param.add_(grad, alpha=-lr)`` (momentum and weight decay as ``torch.optim.SGD`` does
  them, the momentum buffers kept in the optimiser's state). Every operation is the one
  autograd and ``torch.optim.SGD`` run, in the same order, so the weights are bit for bit the
  autograd path's (``tests/test_mlp_step.py``).
* ``"fused"``: the update folded into the weight-gradient product,
  ``W.addmm_(grad.T, x, alpha=-lr)``; one rounding where SGD has two, so the weights drift
  from the autograd path's at float32 rounding (about 1e-5 after an epoch of Split-MNIST),
  and one pass over each weight matrix fewer. Plain SGD only (no momentum or weight decay).

:func:`refusal` says why the step does not apply to a run (then the engine uses autograd).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from forgetless.errors import ConfigError
from forgetless.names import FAST_PATHS

_ATEN = torch.ops.aten
_IGNORE_INDEX = -100  # F.cross_entropy's default
_MEAN = 1  # the reduction code of "mean" in aten's losses


def check_fast_path(value: Any) -> str:
    """``value`` if it names a fast path (:data:`FAST_PATHS`), else a ConfigError."""
    if value not in FAST_PATHS:
        raise ConfigError(f"fast_path must be one of {', '.join(FAST_PATHS)}, got {value!r}")
    return value


def mlp_layers(model: nn.Module) -> list[nn.Linear] | None:
    """The Linear layers of ``model`` if it is exactly forgetless's MLP (Flatten, then Linear
    and ReLU pairs, then a Linear), unchanged and hook-free, with float32 parameters that all
    train; else ``None``."""
    from forgetless.models import MLP

    if type(model) is not MLP:
        return None
    modules = list(model.children())
    if not modules or type(modules[0]) is not nn.Flatten or len(modules) % 2 != 0:
        return None
    flatten, body = modules[0], modules[1:]
    if (flatten.start_dim, flatten.end_dim) != (1, -1):
        return None
    linears = body[0::2]
    if any(type(m) is not nn.Linear or m.bias is None for m in linears):
        return None
    if any(type(m) is not nn.ReLU for m in body[1::2]):
        return None
    if any(_hooked(m) for m in modules) or _hooked(model) or _global_module_hooks():
        return None
    for p in model.parameters():
        if (
            not p.requires_grad
            or p.dtype != torch.float32
            or p.device.type != "cpu"
            or not p.is_contiguous()
            or p._backward_hooks
            or getattr(p, "_post_accumulate_grad_hooks", None)
        ):
            return None
    return list(linears)


def _hooked(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def _global_module_hooks() -> bool:
    from torch.nn.modules import module as module_module

    return bool(
        module_module._global_forward_hooks
        or module_module._global_forward_pre_hooks
        or module_module._global_backward_hooks
        or module_module._global_backward_pre_hooks
    )


class MLPStep:
    """One SGD step of cross-entropy on a Linear/ReLU MLP, without autograd.

    Args:
        linears: the model's Linear layers, input first (:func:`mlp_layers`).
        optimizer: the run's ``torch.optim.SGD`` over exactly their parameters; its one group's
            learning rate, momentum and weight decay are read at every step (its momentum
            buffers live in its state, so checkpoints hold them as autograd's path does).
        fused: the fused update (module docstring).
        penalty: called before each step: ``None``, or the value of a loss term and its
            gradient for some of the parameters, ``(value, params, grads)``
            (:func:`closed_form_penalty`).
    """

    def __init__(
        self,
        linears: Sequence[nn.Linear],
        optimizer: torch.optim.SGD,
        fused: bool = False,
        penalty: Callable[[], PenaltyTerms | None] | None = None,
    ):
        self.weights = [m.weight for m in linears]
        self.biases = [m.bias for m in linears]
        self.group = optimizer.param_groups[0]
        self.state = optimizer.state
        self.fused = fused
        self.penalty = penalty
        self._one = torch.ones(())  # the gradient of the loss
        self._buffers: dict[int, dict[str, list[torch.Tensor]]] = {}

    def _for(self, batch: int) -> dict[str, list[torch.Tensor]]:
        """Activations, gradients and weight-gradient buffers for a batch of ``batch``."""
        found = self._buffers.get(batch)
        if found is None:
            outs = [w.shape[0] for w in self.weights]
            found = {
                "out": [torch.empty(batch, o) for o in outs],
                "input_grad": [torch.empty(batch, w.shape[1]) for w in self.weights],
                "weight_grad": [torch.empty_like(w) for w in self.weights],
                "bias_grad": [torch.empty_like(b) for b in self.biases],
            }
            self._buffers[batch] = found
        return found

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on ``(x, y)``; the mean cross-entropy before the step (a 0-dim tensor) and the
        logits (a buffer the next step of this batch size overwrites)."""
        buffers = self._for(len(x))
        weights, biases, outs = self.weights, self.biases, buffers["out"]
        # The penalty at the weights before the step, as autograd's forward pass takes it.
        terms = None if self.penalty is None else self.penalty()
        penalty_grads: dict[int, torch.Tensor] = {}
        if terms is not None:
            penalty_grads = {id(p): g for p, g in zip(terms[1], terms[2], strict=True)}
        last = len(weights) - 1
        inputs = [x.reshape(len(x), -1)]
        for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
            out = torch.addmm(b, inputs[k], w.t(), out=outs[k])
            if k < last:
                inputs.append(out.relu_())
        logits = outs[last]
        loss, grad = cross_entropy_and_gradient(logits, y, self._one)
        if terms is not None:
            loss = loss + terms[0]  # the engine's ``loss + term``
        group = self.group
        lr = group["lr"]
        for k in range(last, -1, -1):
            w, b, layer_input = weights[k], biases[k], inputs[k]
            if k > 0:  # the gradient of this layer's input, before its weights change
                input_grad = torch.mm(grad, w, out=buffers["input_grad"][k])
            w_penalty, b_penalty = penalty_grads.get(id(w)), penalty_grads.get(id(b))
            if self.fused:
                if w_penalty is not None:
                    w.add_(w_penalty, alpha=-lr)
                w.addmm_(grad.t(), layer_input, alpha=-lr)
                bias_grad = torch.sum(grad, 0, out=buffers["bias_grad"][k])
                if b_penalty is not None:
                    bias_grad.add_(b_penalty)
                b.add_(bias_grad, alpha=-lr)
            else:
                weight_grad = torch.mm(grad.t(), layer_input, out=buffers["weight_grad"][k])
                bias_grad = torch.sum(grad, 0, out=buffers["bias_grad"][k])
                if w_penalty is not None:
                    weight_grad.add_(w_penalty)
                if b_penalty is not None:
                    bias_grad.add_(b_penalty)
                self._update(w, weight_grad, lr)
                self._update(b, bias_grad, lr)
            if k > 0:  # ReLU's backward: its output is the mask
                grad = relu_backward_(input_grad, layer_input)
        return loss, logits

    def _update(self, param: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        """``torch.optim.SGD``'s single-tensor update of one parameter (no nesterov, no
        dampening, not maximising: :func:`refusal` leaves those to it)."""
        group = self.group
        if group["weight_decay"] != 0:
            grad = grad.add(param, alpha=group["weight_decay"])
        momentum = group["momentum"]
        if momentum != 0:
            state = self.state[param]
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = grad.detach().clone()
            else:
                buffer.mul_(momentum).add_(grad, alpha=1)
            grad = buffer
        param.add_(grad, alpha=-lr)


def cross_entropy_and_gradient(
    logits: torch.Tensor, y: torch.Tensor, one: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.cross_entropy(logits, y)`` (the mean) and its gradient with respect to ``logits``
    for an upstream gradient ``one`` (a 0-dim 1), with the kernels autograd runs for it, in its
    order: the same bits."""
    log_probs = torch._log_softmax(logits, 1, False)
    loss, total_weight = _ATEN.nll_loss_forward(log_probs, y, None, _MEAN, _IGNORE_INDEX)
    grad = _ATEN.nll_loss_backward(one, log_probs, y, None, _MEAN, _IGNORE_INDEX, total_weight)
    return loss, _ATEN._log_softmax_backward_data(grad, log_probs, 1, logits.dtype)


def relu_backward_(grad: torch.Tensor, relu_output: torch.Tensor) -> torch.Tensor:
    """ReLU's backward as autograd runs it (its output is the mask), in place in ``grad``."""
    return _ATEN.threshold_backward.grad_input(grad, relu_output, 0, grad_input=grad)


def forward(
    linears: Sequence[nn.Linear], x: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The MLP's forward pass without autograd, as its modules compute it: each Linear's input
    (the flattened ``x``, then the ReLU outputs) and the logits."""
    inputs = [x.reshape(len(x), -1)]
    last = len(linears) - 1
    with torch.no_grad():
        for k, m in enumerate(linears):
            out = torch.addmm(m.bias, inputs[k], m.weight.t())
            if k < last:
                inputs.append(out.relu_())
    return inputs, out


#: A penalty's value, the parameters it reaches and its gradient for each.
PenaltyTerms = tuple[torch.Tensor, Sequence[torch.Tensor], Sequence[torch.Tensor]]


def _plain_strategies() -> tuple[type, ...]:
    """The strategies whose hooks neither read gradients nor change the loss, by exact class
    (a subclass may do either)."""
    from forgetless.strategies.finetune import Finetune
    from forgetless.strategies.replay import Replay

    return (Finetune, Replay)


def _penalty_strategies() -> tuple[type, ...]:
    """The strategies whose only effect on a step is a quadratic penalty with a closed-form
    gradient (:meth:`~forgetless.strategies.quadratic.QuadraticPenalty.penalty_gradients`), by
    exact class. SI is not one: it reads the step's gradients. Only modules already imported
    are looked in: a strategy's instance means its module is loaded, and a run imports only
    the strategies it uses (the lazy registry)."""
    import sys

    classes = {
        "forgetless.strategies.ewc": ("EWC", "OnlineEWC"),
        "forgetless.strategies.l2": ("L2",),
        "forgetless.strategies.mas": ("MAS",),
    }
    return tuple(
        getattr(sys.modules[module], name)
        for module, names in classes.items()
        if module in sys.modules
        for name in names
    )


def closed_form_penalty(
    strategies: Sequence[Any], learner: Any
) -> Callable[[], PenaltyTerms | None] | None:
    """The ``penalty`` argument of :class:`MLPStep` for ``strategies`` (which
    :func:`refusal` accepted): the one penalty strategy's, bound to ``learner``; ``None``
    if there is none."""
    penalties = [s for s in strategies if type(s) in _penalty_strategies()]
    if not penalties:
        return None
    (strategy,) = penalties
    return lambda: strategy.penalty_gradients(learner)


def refusal(
    mode: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    strategies: Sequence[Any],
    *,
    precision: str,
    loss: Any,
    scheduler: Any,
    output_mask: Any,
    target_shape: tuple[int, ...],
) -> str | None:
    """Why the hand-written step does not apply (``None``: it does). It applies only where its
    arithmetic is autograd's: the MLP as built (:func:`mlp_layers`), on the CPU in float32;
    the default loss (cross-entropy) on class labels, no task mask; ``torch.optim.SGD``
    over exactly the MLP's parameters, one group, without nesterov, dampening or maximising
    (and, when fused, without momentum or weight decay); no learning-rate schedule; and
    only fine-tuning or replay (whose loss is the same cross-entropy over a joined batch and
    whose hooks read no gradient), with at most one quadratic penalty (EWC, online EWC, L2,
    MAS; two would add three gradients per parameter, in an order autograd's engine picks)."""
    if mode == "off":
        return "fast_path is off"
    if precision != "float32":
        return f"precision is {precision}"
    if loss is not None or scheduler is not None:
        return "a custom loss or a learning-rate schedule"
    if output_mask is not None or target_shape != ():
        return "task-incremental masks or sequence targets"
    plain, penalties = _plain_strategies(), _penalty_strategies()
    if any(type(s) not in plain + penalties for s in strategies):
        return "a strategy other than finetune, replay, ewc, online-ewc, l2 or mas"
    if sum(type(s) in penalties for s in strategies) > 1:
        return "more than one quadratic penalty"
    linears = mlp_layers(model)
    if linears is None:
        return "the model is not a plain float32 Linear/ReLU MLP on the CPU"
    if type(optimizer) is not torch.optim.SGD or len(optimizer.param_groups) != 1:
        return "not torch.optim.SGD with one parameter group"
    group = optimizer.param_groups[0]
    expected = [p for m in linears for p in (m.weight, m.bias)]
    if len(group["params"]) != len(expected) or any(
        a is not b for a, b in zip(group["params"], expected, strict=True)
    ):
        return "the optimiser's parameters are not the MLP's"
    if group["nesterov"] or group["dampening"] != 0 or group["maximize"]:
        return "nesterov, dampening or maximize"
    if group.get("differentiable") or group.get("fused") or group.get("foreach"):
        return "a differentiable, fused or foreach SGD"
    if mode == "fused" and (group["momentum"] != 0 or group["weight_decay"] != 0):
        return "the fused update is plain SGD only (no momentum or weight decay)"
    if optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks:
        return "optimiser step hooks"
    from torch.optim import optimizer as optimizer_module

    if (
        optimizer_module._global_optimizer_pre_hooks
        or optimizer_module._global_optimizer_post_hooks
    ):
        return "global optimiser step hooks"
    return None
