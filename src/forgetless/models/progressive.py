"""Columns and lateral adapters of progressive neural networks (Rusu et al. 2016,
"Progressive Neural Networks", arXiv:1606.04671).

A column is a copy of a network, cut into stages, one per linear or convolutional layer: stage
``i`` computes ``h_i = post_i(W_i pre_i(h_{i-1}) + lateral_i)``, ``post`` being what follows
the layer (activation, pooling) and ``pre`` a reshape before it (flattening). Column ``k``
receives, into every stage but the first, the previous stage's outputs of all earlier columns
through the paper's adapter (Sec. 2, "Adapters"):

    lateral_i^(k) = U_i^(k) sigma(V_i^(k) (alpha_i^(k) [h_{i-1}^(0), ..., h_{i-1}^(k-1)]))

``alpha`` a learned scalar initialised at a small random value (it adjusts for the scales of
the inputs), ``V`` a projection of the concatenated activations back to one column's width
(a 1x1 convolution for feature maps), ``sigma`` a ReLU, and ``U`` a layer of the same kind and
geometry as ``W_i`` (without bias). Earlier columns are frozen; only the newest one and its
adapters are trained.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.errors import ConfigError

#: Modules that may follow a layer inside a stage: elementwise, pooling, dropout, norms.
_POST = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.Dropout,
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Identity,
)
_LAYERS = (nn.Linear, nn.Conv2d)


class Stage(nn.Module):
    """One layer of a column with what surrounds it: ``post(layer(pre(x)) + lateral)``, or
    with ``shortcut`` the residual block of :class:`~forgetless.models.ResidualCNN`,
    ``post(layer(x) + lateral + pad(x))``."""

    def __init__(
        self,
        layer: nn.Linear | nn.Conv2d,
        pre: nn.Module | None = None,
        post: nn.Module | None = None,
        shortcut: bool = False,
    ):
        super().__init__()
        self.pre = pre if pre is not None else nn.Identity()
        self.layer = layer
        self.post = post if post is not None else nn.Identity()
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor, lateral: torch.Tensor | None = None) -> torch.Tensor:
        z = self.layer(self.pre(x))
        if lateral is not None:
            z = z + lateral
        if self.shortcut:
            z = z + F.pad(x, (0, 0, 0, 0, 0, self.layer.out_channels - x.shape[-3]))
        return self.post(z)


class Column(nn.Module):
    """A network as a list of :class:`Stage`; ``column(x)`` is the network's function."""

    def __init__(self, stages: list[Stage]):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


def column_of(model: nn.Module) -> Column:
    """``model`` as a :class:`Column` of stages over its own layers (the same modules and
    tensors). Takes an ``nn.Sequential`` of ``nn.Linear``/``nn.Conv2d`` layers with
    elementwise activations, pooling, dropout, normalisation and flattening between them
    (forgetless' ``mlp`` and ``cnn``), or a :class:`~forgetless.models.ResidualCNN`
    (``cnn-skip``)."""
    from forgetless.models import ResidualCNN

    if isinstance(model, Column):
        return model
    if isinstance(model, ResidualCNN):
        return Column(
            [
                Stage(model.conv1, post=nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)), shortcut=True),
                Stage(model.conv2, post=nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)), shortcut=True),
                Stage(model.fc1, pre=nn.Flatten(), post=nn.ReLU()),
                Stage(model.fc2),
            ]
        )
    if not isinstance(model, nn.Sequential):
        raise ConfigError(_UNSUPPORTED.format(type(model).__name__))
    stages: list[Stage] = []
    pre: list[nn.Module] = []  # modules before the next layer
    pre_of_layer: list[nn.Module] = []  # those before the current one
    post: list[nn.Module] = []
    layer = None
    for module in model:
        if isinstance(module, _LAYERS):
            if layer is not None:
                stages.append(_stage(layer, pre_of_layer, post))
            layer, pre_of_layer, pre, post = module, pre, [], []
        elif isinstance(module, nn.Flatten) or layer is None:
            pre.append(module)  # a reshape before the next layer (or before the first)
        elif isinstance(module, _POST) and not pre:
            post.append(module)
        else:
            raise ConfigError(
                _UNSUPPORTED.format(type(model).__name__)
                + f" ({type(module).__name__} cannot be placed in a stage)"
            )
    if layer is None:
        raise ConfigError(_UNSUPPORTED.format(type(model).__name__) + " (no layer found)")
    if pre:
        raise ConfigError(
            _UNSUPPORTED.format(type(model).__name__) + " (it must end with a layer's output)"
        )
    stages.append(_stage(layer, pre_of_layer, post))
    return Column(stages)


_UNSUPPORTED = (
    "progressive networks build columns from an nn.Sequential of Linear/Conv2d layers with "
    "activations, pooling and flattening between them (mlp, cnn) or from cnn-skip; got {}"
)


def _stage(layer, pre, post) -> Stage:
    def wrap(modules):
        if not modules:
            return None
        return modules[0] if len(modules) == 1 else nn.Sequential(*modules)

    return Stage(layer, pre=wrap(pre), post=wrap(post))


class Adapter(nn.Module):
    """The lateral connection into one stage of column ``k`` from the previous stage of
    columns ``0..k-1``: ``U relu(V (alpha [h^(0), ..., h^(k-1)]))`` (Rusu et al. 2016, Sec. 2).

    ``V`` maps the ``k`` concatenated sources back to one source's width (a 1x1 convolution
    for feature maps), then the stage's ``pre`` reshape applies, then ``U``, a copy of the
    stage's layer geometry without bias. ``alpha`` starts at a draw from ``U(0, 0.1)``.
    """

    def __init__(self, stage: Stage, source: nn.Linear | nn.Conv2d, columns: int):
        super().__init__()
        self.alpha = nn.Parameter(0.1 * torch.rand(()))
        layer = stage.layer
        if isinstance(source, nn.Conv2d):
            width = source.out_channels
            self.project = nn.Conv2d(columns * width, width, 1)
        else:
            width = source.out_features
            self.project = nn.Linear(columns * width, width)
        self.pre = copy.deepcopy(stage.pre)
        if isinstance(layer, nn.Conv2d):
            if not isinstance(source, nn.Conv2d):
                raise ConfigError("a convolution cannot follow a linear layer in a column")
            self.lateral = nn.Conv2d(
                width,
                layer.out_channels,
                layer.kernel_size,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                bias=False,
                padding_mode=layer.padding_mode,
            )
        else:
            self.lateral = nn.Linear(layer.in_features, layer.out_features, bias=False)

    def forward(self, sources: list[torch.Tensor]) -> torch.Tensor:
        h = torch.cat(sources, dim=1) if len(sources) > 1 else sources[0]
        return self.lateral(self.pre(F.relu(self.project(self.alpha * h))))


class ProgressiveNet(nn.Module):
    """A progressive network: ``net(x, t)`` answers task ``t`` with column ``t`` (Rusu et al.
    2016, Eq. 1 with the adapters of Sec. 2).

    Column 0 is the given model itself (its layers, its weights). :meth:`add_column` freezes
    every existing column and adapter and adds a freshly initialised column with adapters
    from all earlier ones. A task id beyond the newest column (a task not learnt yet) is
    answered by the newest column. With an int ``t`` only columns ``0..t`` are computed (the
    function of a task never changes once its column is frozen); with a tensor of ids every
    column is, and each row takes its own column's output. Frozen columns stay in evaluation
    mode.
    """

    takes_task_id = True

    def __init__(self, model: nn.Module):
        super().__init__()
        self.columns = nn.ModuleList([column_of(model)])
        self.adapters = nn.ModuleList([nn.ModuleList()])  # adapters[k][i-1] feeds stage i

    def add_column(self, seed: int) -> None:
        """Freeze the network as it is and add a column, initialised (as PyTorch initialises
        its layers) from ``seed``, with adapters into each of its stages but the first."""
        self.requires_grad_(False)
        first = self.columns[0]
        device = next(first.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            column = copy.deepcopy(first).to("cpu")
            for module in column.modules():
                if hasattr(module, "reset_parameters") and module is not column:
                    module.reset_parameters()
            k = len(self.columns)
            stages = list(column.stages)
            adapters = nn.ModuleList(
                Adapter(stage, stages[i - 1].layer, k) for i, stage in enumerate(stages) if i > 0
            )
        column.requires_grad_(True).train(self.training)
        self.columns.append(column.to(device))
        self.adapters.append(adapters.to(device))

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        newest = len(self.columns) - 1
        if isinstance(t, int):
            return self._outputs(x, min(t, newest))[-1]
        outputs = torch.stack(self._outputs(x, newest))  # [columns, batch, units]
        rows = torch.arange(len(x), device=outputs.device)
        return outputs[t.clamp(max=newest), rows]

    def _outputs(self, x: torch.Tensor, last: int) -> list[torch.Tensor]:
        """The outputs of columns ``0..last``, each fed by the earlier ones' activations."""
        activations: list[list[torch.Tensor]] = []
        for k in range(last + 1):
            h, own = x, []
            for i, stage in enumerate(self.columns[k].stages):
                lateral = None
                if k > 0 and i > 0:
                    lateral = self.adapters[k][i - 1]([activations[j][i - 1] for j in range(k)])
                h = stage(h, lateral)
                own.append(h)
            activations.append(own)
        return [own[-1] for own in activations]

    def train(self, mode: bool = True) -> ProgressiveNet:
        super().train(mode)
        for frozen in (*self.columns[:-1], *self.adapters[:-1]):
            frozen.eval()
        return self

    def column_parameters(self) -> list[int]:
        """Parameters of each column, its adapters included."""
        return [
            sum(p.numel() for p in (*column.parameters(), *adapters.parameters()))
            for column, adapters in zip(self.columns, self.adapters, strict=True)
        ]
