"""HAT: a learnt, almost binary gate per unit and task; the weights earlier tasks' gates use
stop moving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.errors import ConfigError
from forgetless.learner import Learner, takes_task_id
from forgetless.models import ResidualCNN
from forgetless.models.masked import MASKED, LayerMask, MaskedNet, masked_layers, to_masked
from forgetless.scenarios.stream import Task
from forgetless.strategies.base import Strategy
from forgetless.strategies.packnet import zero_optimizer_state
from forgetless.validation import check_range

#: ``|s e|`` beyond which ``cosh`` is clamped in the compensation (Eq. 5), as in the authors'
#: code: ``cosh(50)`` is about ``3e21``, far from float32's overflow at ``cosh(89)``.
COSH_CLAMP = 50.0
#: Embeddings are kept in ``[-6, 6]`` after every step, as in the authors' code.
EMBEDDING_CLAMP = 6.0

#: Modules allowed between two masked layers of a sequence: each maps 0 to 0, so a unit whose
#: gate is 0 reaches the next layer as 0 (a sigmoid or a normalisation would not).
PASS_ZERO: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
)

#: Over what ``s`` rises from ``1/s_max`` to ``s_max``: each pass over the task's data (the
#: paper's Eq. 3), or all the task's steps.
ANNEALING = ("epoch", "task")

#: How the attention of a layer's inputs (one value per input feature or channel) follows from
#: the unit attention of the gated layers, by name.
InputAttention = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def anneal(batch: int, batches: int, s_max: float) -> float:
    """The gates' scale ``s`` for batch ``batch`` (0-based) of ``batches`` in an epoch (Serra et
    al. 2018, Eq. 3, with ``b = batch + 1``, ``B = batches``):

        s = 1/s_max + (s_max - 1/s_max) (b - 1) / (B - 1)

    so ``s`` rises linearly from ``1/s_max`` at an epoch's first batch to ``s_max`` at its last;
    an epoch of one batch trains at ``s_max``."""
    if batches <= 1:
        return s_max
    return 1 / s_max + (s_max - 1 / s_max) * batch / (batches - 1)


def compensation(embedding: torch.Tensor, s: float, s_max: float) -> torch.Tensor:
    """The factor on an embedding's gradient (Eq. 5):

        q' = s_max [cosh(s e) + 1] / (s [cosh(e) + 1]) q

    with ``s e`` clamped to ``[-50, 50]`` inside ``cosh``, as in the authors' code. Since
    ``d sigmoid(s e) / de = s / (2 [cosh(s e) + 1])``, the compensated gradient is that of
    ``sigmoid(e)`` times ``s_max``, whatever ``s``: the gates keep learning at every ``s``."""
    num = torch.cosh(torch.clamp(s * embedding, -COSH_CLAMP, COSH_CLAMP)) + 1
    return s_max / s * num / (torch.cosh(embedding) + 1)


class Attention(nn.Module):
    """HAT's task embeddings and, as the mask source of a :class:`MaskedNet`, each task's gates.

    ``embeddings[t][l]`` is ``e^t_l``: a value per output unit of gated layer ``l`` (every masked
    layer but the last, whose rows are the tasks' heads), for every task of the stream, drawn
    from N(0, 1) (``nn.Embedding``'s initialisation, which the authors' code uses). In
    training, the newest task's gates are ``sigmoid(s e)`` at the annealed ``s`` the strategy
    sets each step (Eq. 1); otherwise a task is answered with its test gates: ``1[e > 0]``
    (``binary``, the limit of ``sigmoid(s e)`` as ``s`` grows) or ``sigmoid(s_max e)``.
    """

    def __init__(
        self,
        layers: dict[str, nn.Module],
        tasks: int,
        s_max: float,
        binary: bool,
        seed: int,
    ):
        super().__init__()
        self.gated = list(layers)[:-1]
        dtype = next(iter(layers.values())).weight.dtype
        generator = torch.Generator().manual_seed(seed)
        self.embeddings = nn.ModuleList(
            nn.ParameterList(
                nn.Parameter(torch.randn(_units(layers[name]), generator=generator, dtype=dtype))
                for name in self.gated
            )
            for _ in range(tasks)
        )
        self.s_max = s_max
        self.binary = binary
        self.s = s_max  # set by the strategy before every training step
        self.newest = 0  # the task being (or last) trained

    def gates(self, task: int, s: float | None = None) -> list[torch.Tensor]:
        """``sigmoid(s e^task_l)`` per gated layer (Eq. 1), at ``s`` (default: the current one)."""
        s = self.s if s is None else s
        return [torch.sigmoid(s * e) for e in self.embeddings[task]]

    def test_gates(self, task: int) -> list[torch.Tensor]:
        """The gates task ``task`` is answered with, and the attention earlier tasks keep."""
        if self.binary:
            return [(e > 0).to(e.dtype) for e in self.embeddings[task]]
        return self.gates(task, self.s_max)

    @torch.no_grad()
    def cumulative(self, tasks: int) -> list[torch.Tensor]:
        """``a^{<tasks}``: per gated layer, the elementwise maximum of the test gates of tasks
        ``0..tasks-1`` (zeros for none)."""
        if tasks == 0:
            return [torch.zeros_like(e) for e in self.embeddings[0]]
        per_task = [self.test_gates(j) for j in range(tasks)]
        return [torch.stack(layer).amax(0) for layer in zip(*per_task, strict=True)]

    def forward(self, task: int) -> dict[str, LayerMask]:
        task = min(task, self.newest)  # a task not learnt yet is answered as the newest
        gates = self.gates(task) if self.training and task == self.newest else self.test_gates(task)
        return {name: LayerMask(units=g) for name, g in zip(self.gated, gates, strict=True)}


class HAT(Strategy):
    """HAT, hard attention to the task (Serra, Suris, Miron and Karatzoglou 2018, "Overcoming
    catastrophic forgetting with hard attention to the task", ICML).

    Each task ``t`` learns an embedding ``e^t_l`` per layer ``l`` (every linear or convolutional
    layer but the output layer, whose rows are the tasks' heads), and the layer's units are
    gated by ``a^t_l = sigmoid(s e^t_l)`` (Eq. 1): the gate multiplies a unit's output (before
    the activation, which for ReLU is the paper's gating of the activation). Training task
    ``t``:

    - **annealing** (Eq. 3): ``s`` rises linearly within each epoch from ``1/s_max`` at its
      first batch to ``s_max`` at its last (:func:`anneal`; an epoch is a pass over the task's
      data, ``learner.epoch_steps`` batches), so the gates start soft and end almost binary;
    - **gradients scaled by the cumulative attention** (Eq. 2): with ``a^{<t}`` the elementwise
      maximum of the attention of tasks ``0..t-1``, the weight from unit ``j`` of layer
      ``l - 1`` into unit ``i`` of layer ``l`` has its gradient multiplied by
      ``1 - min(a^{<t}_{l,i}, a^{<t}_{l-1,j})``, a bias by ``1 - a^{<t}_{l,i}``; the first layer's
      inputs count as attended, and the output layer's rows of the units an earlier task answers
      with count as attended by it (gradient hooks, so the rule holds whatever else edits the
      gradient, e.g. A-GEM's reference gradients);
    - **embedding-gradient compensation** (Eq. 5, :func:`compensation`), then the gradient norm
      clipped at ``clip`` (the authors' 10000), and after each step the embeddings clamped to
      ``[-6, 6]`` (their code);
    - **attention regulariser** (Eq. 6), added to the loss:
      ``c * sum_l sum_i a^t_{l,i} (1 - a^{<t}_{l,i}) / sum_l sum_i (1 - a^{<t}_{l,i})``: it
      favours few gates, and costs nothing for units earlier tasks use already.

    At test time a task is answered with its gates at the limit ``s -> inf``, ``1[e > 0]``
    (``binary``, the default), and the cumulative attention is built from the same gates, so
    every weight a task's answer depends on has gradient factor exactly 0 afterwards: with the
    task given, BWT is exactly 0 (the authors test with ``sigmoid(s_max e)`` instead, which
    differs for ``|e| < 0.05``; ``binary=False`` does that, and then the gradients of weights
    whose gates are not saturated are scaled down but not 0, so BWT is near 0). With a kept
    optimiser (``--keep-optimizer``), the momentum and Adam moments of weights that become
    fixed are zeroed, so they cannot move them either; but adaptive optimisers normalise the
    gradient's scale, so with ``binary=False`` and Adam the partial factors protect little.

    Defaults are the authors': ``s_max`` 400 and ``c`` (``reg``) 0.75 (chosen by grid search in
    their code), clipping at 10000, N(0, 1) embeddings. They train layers of 2000 units with SGD
    at lr 0.05, batch 64, for up to 200 epochs with learning-rate decay on a validation set. On
    split digits with a 32-32 MLP and 80 steps a task, HAT learns with Adam (lr 0.005: ACC 0.985
    against fine-tuning's 0.688) but hardly with SGD (lr 0.05: 0.50, 0.68 with ``reg`` 0, where
    fine-tuning learns each task to 0.97): half of a layer's gates start closed, half the steps
    are soft-gate ones (passes of 2 batches), and the regulariser, a mean over a layer's units,
    closes the rest before the weights learn.

    The model must be a sequence of linear and convolutional layers with activations that keep
    0 at 0, pooling, flattening and dropout between them (``mlp``, ``cnn``), or ``cnn-skip``
    (whose shortcuts carry a channel whatever its gate: the rule counts such channels as
    attended). ``report`` gives the units each task uses per layer and the share of weights
    fixed for the next task.

    Args:
        s_max: the gates' largest scale, > 1.
        reg: ``c``, the weight of the attention regulariser (Eq. 6), >= 0.
        clip: the gradient norm is clipped to this (0: no clipping).
        binary: answer with the step-function gates ``1[e > 0]`` (exact BWT 0 with the task
            given) rather than ``sigmoid(s_max e)``.
        anneal: over which steps the gates' scale ``s`` rises: ``"epoch"`` (Eq. 3) or
            ``"task"``: ``s`` rises once over all the task's steps,
            for streams whose passes are a few batches (on split digits a pass is 2 batches of
            128, so per epoch half the steps train at ``s = 1/s_max``, where every gate is about
            0.5).
    """

    name = "hat"
    revisits = False  # one part (or one data set) per task
    needs_task_id = True
    trained_start_refusal = (
        "HAT learns each task's gates during the task's own steps, and a trained start's model "
        "has none for the tasks it learnt, so nothing would protect them; use ewc, lwf or replay"
    )
    transient = ("_hooks", "_factors", "_wiring", "_free", "_free_units", "_step")

    def __init__(
        self,
        s_max: float = 400.0,
        reg: float = 0.75,
        clip: float = 10000.0,
        binary: bool = True,
        anneal: str = "epoch",
    ):
        if anneal not in ANNEALING:
            raise ConfigError(f"anneal must be one of {', '.join(ANNEALING)}, got {anneal!r}")
        self.anneal = anneal
        self.s_max = check_range("s_max", s_max, 1.0, low_open=True)
        self.reg = check_range("reg", reg, 0.0)
        self.clip = check_range("clip", clip, 0.0)
        self.binary = bool(binary)
        self._hooks: list[Any] = []
        self._factors: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._wiring: dict[str, InputAttention | None] = {}
        self._free: list[torch.Tensor] = []  # 1 - a^{<t} per gated layer
        self._free_units = torch.ones(())  # their sum
        self._step = 0  # steps into the current task

    # The structure: masked layers, embeddings, gradient factors, what trains.

    def change_model(self, learner: Learner, task: Task) -> None:
        k = learner.task_index
        net = learner.model
        if not (isinstance(net, MaskedNet) and isinstance(net.masks, Attention)):
            self._wrap(learner)
            net = learner.model
        attention = net.masks
        attention.newest = k
        _train_only(attention, k)
        self._factors = self._gradient_factors(learner, k)
        for name, (weight, bias) in self._factors.items():  # a kept optimiser's state too
            layer = net.layers[name]
            zero_optimizer_state(
                learner.optimizer, layer.weight, (weight == 0).expand_as(layer.weight)
            )
            if bias is not None:
                zero_optimizer_state(learner.optimizer, layer.bias, bias == 0)
        self._free = [1 - a for a in attention.cumulative(k)]
        self._free_units = sum(f.sum() for f in self._free)
        self._step = 0

    def rebuild(self, learner: Learner, state: Any) -> None:
        self._wrap(learner)
        attention = learner.model.masks
        attention.newest = learner.task_index
        _train_only(attention, learner.task_index)

    def _wrap(self, learner: Learner) -> None:
        model = learner.model
        if takes_task_id(model):
            raise ConfigError(
                f"hat gates the units of a plain model, but the model ({type(model).__name__}) "
                "already takes the task id: another strategy wrapped it. Use hat alone or with a "
                "regulariser (hat+ewc)"
            )
        wiring = _wiring(model)
        body = to_masked(model)
        layers = masked_layers(body)
        head = list(layers.values())[-1]
        if _units(head) != learner.stream.num_outputs:
            raise ConfigError(
                f"hat takes the model's last layer for the tasks' heads, but it has "
                f"{_units(head)} outputs, not the stream's {learner.stream.num_outputs}"
            )
        seed = learner.task_generator("hat", 0).initial_seed()
        attention = Attention(layers, len(learner.stream), self.s_max, self.binary, seed)
        learner.model = MaskedNet(body, attention)
        self._wiring = wiring
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        for name, layer in learner.model.layers.items():
            self._hooks.append(layer.weight.register_hook(self._masker(name, 0)))
            if layer.bias is not None:
                self._hooks.append(layer.bias.register_hook(self._masker(name, 1)))

    def _masker(self, name: str, which: int):
        def hook(grad: torch.Tensor) -> torch.Tensor | None:
            factors = self._factors.get(name)
            return None if factors is None else grad * factors[which]

        return hook

    def _gradient_factors(
        self, learner: Learner, tasks: int
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Eq. 2's factors for training after ``tasks`` tasks: per masked layer, broadcastable
        to its weight and bias; none for the first task."""
        if tasks == 0:
            return {}
        net = learner.model
        attention = net.masks
        unit = dict(zip(attention.gated, attention.cumulative(tasks), strict=True))
        names = list(net.layers)
        heads = names[-1]
        answered = torch.zeros(learner.stream.num_outputs, dtype=unit[names[0]].dtype)
        for earlier in learner.stream.tasks[:tasks]:
            answered[list(earlier.units)] = 1
        post = {**unit, heads: answered.to(unit[names[0]].device)}
        factors = {}
        for name, layer in net.layers.items():
            extra = (1,) * (layer.weight.ndim - 2)
            out = post[name].view(-1, 1, *extra)
            inputs = self._wiring[name]
            used = out if inputs is None else torch.minimum(out, inputs(unit).view(1, -1, *extra))
            factors[name] = (1 - used, None if layer.bias is None else 1 - post[name])
        return factors

    # Each step: the gates' scale, the regulariser, the embeddings' gradients.

    def batch(self, learner, x, y, t):
        if self.anneal == "task":
            s = anneal(self._step, learner.task_steps, self.s_max)
        else:  # Eq. 3: within each pass over the data
            batches = max(1, learner.epoch_steps)
            s = anneal(self._step % batches, batches, self.s_max)
        learner.model.masks.s = s
        self._step += 1
        return x, y, t

    def penalty(self, learner, x, y, t, logits) -> torch.Tensor | None:
        if self.reg == 0:
            return None
        gates = learner.model.masks.gates(learner.task_index)
        used = sum((g * free).sum() for g, free in zip(gates, self._free, strict=True))
        return self.reg * used / self._free_units.clamp_min(1e-12)  # Eq. 6

    def after_backward(self, learner: Learner) -> None:
        attention = learner.model.masks
        with torch.no_grad():
            for e in attention.embeddings[learner.task_index]:
                if e.grad is not None:
                    e.grad.mul_(compensation(e, attention.s, self.s_max))
        if self.clip > 0:
            grads = [p for p in learner.model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(grads, self.clip)

    def after_step(self, learner, x, y, t, logits) -> None:
        with torch.no_grad():
            for e in learner.model.masks.embeddings[learner.task_index]:
                e.clamp_(-EMBEDDING_CLAMP, EMBEDDING_CLAMP)

    def report(self, learner: Learner) -> dict[str, Any] | None:
        net = learner.model
        if not isinstance(net, MaskedNet) or not isinstance(net.masks, Attention):
            return None
        attention, tasks = net.masks, learner.task_index + 1
        per_task = [attention.test_gates(j) for j in range(tasks)]
        layers = {}
        for i, name in enumerate(attention.gated):
            gates = [g[i] for g in per_task]
            layers[name] = {
                "units": len(gates[0]),
                "tasks": [int((g > 0.5).sum()) for g in gates],
                "used": int((torch.stack(gates).amax(0) > 0.5).sum()),
            }
        factors = self._gradient_factors(learner, tasks)  # what a next task could not change
        fixed = sum(
            int((w == 0).expand_as(net.layers[n].weight).sum()) for n, (w, _) in factors.items()
        )
        total = sum(layer.weight.numel() for layer in net.layers.values())
        return {"layers": layers, "fixed": fixed / total}


def _train_only(attention: Attention, task: int) -> None:
    """Only task ``task``'s embeddings train: earlier ones are fixed, later ones unused."""
    for t, embeddings in enumerate(attention.embeddings):
        for e in embeddings:
            e.requires_grad_(t == task)


def _units(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _inputs(layer: nn.Module) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def _is_layer(module: nn.Module) -> bool:
    return type(module) in (nn.Linear, nn.Conv2d) or isinstance(module, MASKED)


def _wiring(model: nn.Module) -> dict[str, InputAttention | None]:
    """For each linear or convolutional layer of ``model``, by name, how the attention of its
    inputs follows from the gated layers' unit attention (``None``: the network's inputs,
    always attended). A ConfigError for models whose layers HAT cannot follow."""
    if isinstance(model, ResidualCNN):
        return _residual_wiring(model)
    if not isinstance(model, nn.Sequential):
        raise ConfigError(
            f"hat needs to know which units feed each layer: it supports a sequence of linear "
            f"and convolutional layers (mlp, cnn) and cnn-skip, not {type(model).__name__}"
        )
    wiring: dict[str, InputAttention | None] = {}
    previous: tuple[str, nn.Module] | None = None
    for name, child in model.named_children():
        if _is_layer(child):
            wiring[name] = None if previous is None else _follows(*previous, child)
            previous = (name, child)
        elif not isinstance(child, PASS_ZERO):
            raise ConfigError(
                f"hat gates each layer's units, so what lies between two layers must keep a "
                f"gated-off unit at 0 (ReLU-like activations, pooling, flatten, dropout); "
                f"{type(child).__name__} ({name}) does not"
            )
    if len(wiring) < 2:
        raise ConfigError("hat gates every layer but the output layer: it needs at least two")
    return wiring


def _follows(name: str, previous: nn.Module, layer: nn.Module) -> InputAttention:
    units, inputs = _units(previous), _inputs(layer)
    if inputs == units:
        return lambda unit: unit[name]
    if isinstance(layer, nn.Linear) and isinstance(previous, nn.Conv2d) and inputs % units == 0:
        positions = inputs // units  # flattened [C, H, W]: channel-major
        return lambda unit: unit[name].repeat_interleave(positions)
    raise ConfigError(
        f"hat cannot match the {inputs} inputs of a layer to the {units} units before it"
    )


def _residual_wiring(model: ResidualCNN) -> dict[str, InputAttention | None]:
    """``cnn-skip``: block ``k`` computes ``pool(relu(g * conv(x) + pad(x)))``, so a channel the
    shortcut carries is attended whatever its gate."""
    c_in, c1, c2 = model.conv1.in_channels, model.conv1.out_channels, model.conv2.out_channels
    positions = model.fc1.in_features // c2

    def conv2(unit: dict[str, torch.Tensor]) -> torch.Tensor:
        carried = F.pad(unit["conv1"].new_ones(c_in), (0, c1 - c_in))
        return torch.maximum(unit["conv1"], carried)

    def fc1(unit: dict[str, torch.Tensor]) -> torch.Tensor:
        carried = F.pad(conv2(unit), (0, c2 - c1))
        return torch.maximum(unit["conv2"], carried).repeat_interleave(positions)

    return {"conv1": None, "conv2": conv2, "fc1": fc1, "fc2": lambda unit: unit["fc1"]}
