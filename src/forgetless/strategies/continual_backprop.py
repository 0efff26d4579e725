"""Continual backpropagation: keep plasticity by reinitialising the least useful mature units."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.models import ACTIVATIONS
from forgetless.scenarios.stream import Task
from forgetless.state import pack, unpack
from forgetless.strategies.base import Strategy
from forgetless.validation import check_range

# Modules that may sit between the layers without changing which column is which unit.
_PASS_THROUGH = (nn.Flatten, nn.Identity, nn.Dropout)


@dataclass
class _Hidden:
    """One hidden layer: the Linear that makes its units, their activation, the Linear that
    reads them."""

    name: str
    fan_in: nn.Linear
    activation: nn.Module
    fan_out: nn.Linear


def hidden_layers(model: nn.Module) -> list[_Hidden]:
    """The hidden layers of an MLP made of ``Linear`` layers and elementwise activations
    (``Linear, act, [Dropout], Linear, act, ..., Linear``), in registration order, which is
    forward order for ``nn.Sequential`` models such as forgetless' ``mlp``.

    Raises:
        ConfigError: any other module (convolution, normalisation, ...), or no hidden layer.
    """
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    kinds = []
    for name, module in leaves:
        if isinstance(module, nn.Linear):
            kinds.append(("linear", name, module))
        elif isinstance(module, ACTIVATIONS):
            kinds.append(("act", name, module))
        elif not isinstance(module, _PASS_THROUGH):
            raise ConfigError(
                f"continual-backprop works on MLPs of nn.Linear layers and elementwise "
                f"activations; module {name!r} is a {type(module).__name__}. Use --model mlp "
                "(or a model of Linear + ReLU layers)"
            )
    layers, i = [], 0
    while i + 2 < len(kinds):
        (k0, _, m0), (k1, n1, m1), (k2, _, m2) = kinds[i : i + 3]
        if (k0, k1, k2) != ("linear", "act", "linear"):
            break
        if m0.out_features != m2.in_features:
            raise ConfigError(
                f"continual-backprop: layer {n1!r} has {m0.out_features} units but the next "
                f"Linear reads {m2.in_features}; the model is not a plain MLP"
            )
        layers.append(_Hidden(n1, m0, m1, m2))
        i += 2
    if not layers or i != len(kinds) - 1:
        pattern = " ".join(k for k, _, _ in kinds)
        raise ConfigError(
            "continual-backprop needs an MLP 'Linear, activation, Linear, ..., Linear'; "
            f"this model's layers are: {pattern}. Use --model mlp"
        )
    return layers


class ContinualBackprop(Strategy):
    """Continual backpropagation (Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood and Sutton
    2024, "Loss of plasticity in deep continual learning", Nature 632, Algorithm 1).

    Plain backprop, plus a generate-and-test step after every optimiser step. For each hidden
    layer ``l`` and unit ``i``, with activation ``h_i`` and outgoing weights ``w_ki`` (``mean_b``
    is the mean over the batch):

        age_i      += 1
        f_i         = eta * f_i + (1 - eta) * mean_b h_i                   (mean activation)
        u_i         = eta * u_i + (1 - eta) * mean_b |h_i| * sum_k |w_ki|  (contribution utility)
        n_l        += rho * #{i : age_i > m}                           (units due for replacement)

    and while ``n_l >= 1``: the *mature* unit (``age > m``) with the lowest bias-corrected
    utility ``u_i / (1 - eta^age_i)`` is reinitialised, and ``n_l -= 1``. Reinitialising unit
    ``i``: its input weights are drawn afresh from the layer's initial distribution (PyTorch's
    ``nn.Linear`` default, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, as forgetless' models are
    initialised), its bias is set to 0, its outgoing weights to 0 (so the network's output does
    not jump), and its mean contribution ``w_ki * f_i / (1 - eta^age_i)`` moves into the next
    layer's bias (as in the authors' code); its utility, mean and age restart at 0. Optimiser
    state of the reset weights (SGD momentum, Adam moments) is zeroed.

    Differences from the paper, which trains one example per step: ``h`` is averaged over the
    batch, and ``rho`` counts replacements per *optimiser step* (per example in the paper). The
    authors used ``rho = 1e-4`` (also 1e-5, 1e-6), ``m = 100``, ``eta = 0.99`` on permuted MNIST.
    Applies to MLPs of ``nn.Linear`` layers and elementwise activations (forgetless' ``mlp``);
    other models are a clear error at the first task.

    Args:
        rho: replacement rate ``rho`` in [0, 1]: units replaced per step, as a fraction of the
            mature units of each layer; 0 is exactly plain backprop.
        maturity: maturity threshold ``m`` (steps, >= 0): a unit younger than this is never
            replaced, so that it has time to become useful.
        eta: utility decay rate ``eta`` in [0, 1).
    """

    name = "continual-backprop"
    supports_task_id_models = False  # finds and hooks an MLP's own layers

    def __init__(self, rho: float = 1e-4, maturity: int = 100, eta: float = 0.99):
        self.rho = check_range("rho", rho, 0.0, 1.0)
        maturity_value = check_range("maturity", maturity, 0.0)
        if not float(maturity_value).is_integer():
            raise ConfigError(f"maturity must be a whole number of steps, got {maturity!r}")
        self.maturity = int(maturity_value)
        self.eta = check_range("eta", eta, 0.0, 1.0, high_open=True)
        self._layers: list[_Hidden] | None = None
        self._model: nn.Module | None = None
        self._handles: list[Any] = []
        self._acts: dict[str, torch.Tensor] = {}
        self._generator: torch.Generator | None = None
        self._utility: list[torch.Tensor] = []
        self._mean: list[torch.Tensor] = []
        self._age: list[torch.Tensor] = []
        self._pending: list[float] = []
        self.replaced = 0  # units reinitialised so far (all layers)

    def _attach(self, learner: Learner) -> None:
        """Find the hidden layers and hook their activations (once per model)."""
        if self._model is learner.model:
            return
        for handle in self._handles:
            handle.remove()
        self._layers = hidden_layers(learner.model)
        self._model = learner.model
        self._handles = [
            layer.activation.register_forward_hook(self._recorder(layer.name))
            for layer in self._layers
        ]
        if not self._utility:  # fresh (not restored from a checkpoint)
            sizes = [layer.fan_in.out_features for layer in self._layers]
            device = learner.device
            self._utility = [torch.zeros(n, device=device) for n in sizes]
            self._mean = [torch.zeros(n, device=device) for n in sizes]
            self._age = [torch.zeros(n, device=device) for n in sizes]
            self._pending = [0.0] * len(sizes)
        sizes = [len(u) for u in self._utility]
        expected = [layer.fan_in.out_features for layer in self._layers]
        if sizes != expected:
            raise ConfigError(
                f"continual-backprop state has layers of {sizes} units, the model {expected}"
            )

    def _recorder(self, name: str):
        def hook(module, inputs, output):
            if module.training:  # training forward passes only, not evaluation
                self._acts[name] = output.detach()

        return hook

    def before_task(self, learner: Learner, task: Task) -> None:
        self._attach(learner)
        # Fresh reinitialisations drawn from a generator of this task, independent of the
        # run's batch order: a resumed run draws the same ones.
        self._generator = learner.task_generator("continual-backprop")

    @torch.no_grad()
    def after_step(self, learner, x, y, t, logits) -> None:
        if not self._acts:
            return
        eta = self.eta
        for index, layer in enumerate(self._layers or []):
            h = self._acts.get(layer.name)
            if h is None:
                continue
            h = h.reshape(len(h), -1)
            age, mean, utility = self._age[index], self._mean[index], self._utility[index]
            age += 1
            mean.mul_(eta).add_(h.mean(dim=0), alpha=1 - eta)
            out_mag = layer.fan_out.weight.abs().sum(dim=0)
            utility.mul_(eta).add_(h.abs().mean(dim=0) * out_mag, alpha=1 - eta)
            if self.rho == 0:
                continue
            mature = age > self.maturity
            count = int(mature.sum())
            if count == 0:
                continue
            self._pending[index] += self.rho * count
            k = min(int(self._pending[index]), count)
            if k == 0:
                continue
            self._pending[index] -= k
            correction = 1 - eta**age
            corrected = (utility / correction).masked_fill(~mature, math.inf)
            units = torch.topk(corrected, k, largest=False).indices
            self._reinitialise(learner, index, layer, units, correction[units])
        self._acts.clear()

    def _reinitialise(
        self,
        learner: Learner,
        index: int,
        layer: _Hidden,
        units: torch.Tensor,
        correction: torch.Tensor,
    ) -> None:
        w_in, w_out = layer.fan_in.weight, layer.fan_out.weight
        bound = 1.0 / math.sqrt(w_in.shape[1])
        fresh = torch.rand(len(units), w_in.shape[1], generator=self._generator) * 2 - 1
        w_in[units] = (fresh * bound).to(w_in)
        if layer.fan_in.bias is not None:
            layer.fan_in.bias[units] = 0.0
        if layer.fan_out.bias is not None:
            # The unit's mean contribution moves into the next bias (the authors' code).
            layer.fan_out.bias += w_out[:, units] @ (self._mean[index][units] / correction)
        w_out[:, units] = 0.0
        self._utility[index][units] = 0.0
        self._mean[index][units] = 0.0
        self._age[index][units] = 0.0
        self.replaced += len(units)
        _zero_optimizer_state(learner.optimizer, w_in, rows=units)
        if layer.fan_in.bias is not None:
            _zero_optimizer_state(learner.optimizer, layer.fan_in.bias, rows=units)
        _zero_optimizer_state(learner.optimizer, w_out, cols=units)

    def state_bytes(self) -> int:
        tensors = [*self._utility, *self._mean, *self._age]
        return sum(t.untyped_storage().nbytes() for t in tensors)

    def state_dict(self) -> Any:
        return pack(
            {
                "utility": self._utility,
                "mean": self._mean,
                "age": self._age,
                "pending": self._pending,
                "replaced": self.replaced,
            },
            self.name,
        )

    def load_state_dict(self, state: Any, learner: Learner) -> None:
        data = unpack(state, learner.model, learner.device)
        self._utility, self._mean, self._age = data["utility"], data["mean"], data["age"]
        self._pending = [float(v) for v in data["pending"]]
        self.replaced = int(data["replaced"])
        self._model = None  # re-attach to the learner's model at the next task

    def params(self) -> dict[str, object]:
        return {"rho": self.rho, "maturity": self.maturity, "eta": self.eta}


def _zero_optimizer_state(
    optimizer: torch.optim.Optimizer,
    param: torch.Tensor,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
) -> None:
    """Zero the per-weight optimiser buffers (momentum, Adam moments) of some rows or columns."""
    state = optimizer.state.get(param)
    if not state:
        return
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            if rows is not None:
                value[rows] = 0.0
            if cols is not None:
                value[:, cols] = 0.0
