"""Small, standard networks as plain ``nn.Module``s, and :func:`build_model` to make one by name.

Classifiers (:class:`MLP`, :class:`CNN`, :class:`ResidualCNN`) here; the causal transformer
language model in :mod:`forgetless.models.gpt`; Hugging Face causal LMs built from a config in
:mod:`forgetless.models.hf`; the parts of models that change: masked layers
(:mod:`forgetless.models.masked`), the columns of progressive networks
(:mod:`forgetless.models.progressive`), one copy per task
(:mod:`forgetless.models.specialists`), adapters (:mod:`forgetless.models.adapters`).
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.errors import ConfigError
from forgetless.models.init import INITS, init_weights
from forgetless.models.masked import (
    LayerMask,
    MaskedConv2d,
    MaskedLinear,
    MaskedNet,
    masked_layers,
    to_masked,
)
from forgetless.models.progressive import Column, ProgressiveNet, column_of
from forgetless.models.specialists import SpecialistNet
from forgetless.names import MODELS as MODEL_NAMES

#: Elementwise activation modules: their outputs are a network's hidden units (for the
#: representation measures of ``forgetless.analysis`` and for continual backprop).
ACTIVATIONS: tuple[type[nn.Module], ...] = (
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
)


class MLP(nn.Sequential):
    """Flatten, then ``Linear -> ReLU`` per hidden layer, then a linear output layer."""

    def __init__(
        self, input_shape: Sequence[int], num_outputs: int, hidden: Sequence[int] = (400, 400)
    ):
        if any(h < 1 for h in hidden):
            raise ConfigError(f"hidden layer sizes must be positive, got {list(hidden)}")
        sizes = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_outputs))
        super().__init__(*layers)


class CNN(nn.Sequential):
    """Two conv blocks (3x3 conv, ReLU, 2x2 max-pool; 32 then 64 channels), then two fully
    connected layers (``hidden`` units, then the outputs).

    The forward pass runs each ``ReLU, MaxPool2d`` pair as pool, then ReLU: the same function
    (the ReLU is monotone, so the largest of the rectified values is the rectified largest,
    ``max(relu(a), relu(b)) = relu(max(a, b))``, exactly), with the same gradients bit for
    bit (:func:`relu_after_pool`), on a quarter of the values. What the modules' order says,
    ReLU then pool, is what hooks on those modules see: with any hook on one of them (the
    representation measures record the ReLUs' outputs) the pair runs in that order.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_after_pool(self, x)

    def __init__(self, input_shape: Sequence[int], num_outputs: int, hidden: int = 128):
        if len(input_shape) != 3:
            raise ConfigError(
                f"the CNN needs image inputs [C, H, W], got input shape {tuple(input_shape)}"
            )
        channels, height, width = input_shape
        if height < 4 or width < 4:
            raise ConfigError(f"the CNN needs images of at least 4x4 pixels, got {height}x{width}")
        features = 64 * (height // 4) * (width // 4)
        super().__init__(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_outputs),
        )


class ResidualCNN(nn.Module):
    """:class:`CNN` with skip connections: the same layers and parameters, each conv block
    computing ``pool(relu(conv(x) + pad(x)))`` instead of ``pool(relu(conv(x)))``.

    ``pad(x)`` is ``x`` with zero channels appended up to the conv's output channels: the
    parameter-free "option A" shortcut of He, Zhang, Ren and Sun 2016 ("Deep residual learning
    for image recognition", CVPR, Sec. 3.3), so the parameter count is exactly the CNN's and
    the two differ only by the two additions. The fully connected layers have no shortcut
    (their widths differ). Parameter names: ``conv1``, ``conv2``, ``fc1``, ``fc2``.
    """

    def __init__(self, input_shape: Sequence[int], num_outputs: int, hidden: int = 128):
        super().__init__()
        plain = CNN(input_shape, num_outputs, hidden)  # same checks, same init order
        self.conv1, self.conv2 = plain[0], plain[3]
        self.fc1, self.fc2 = plain[7], plain[9]

    @staticmethod
    def _block(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        shortcut = F.pad(x, (0, 0, 0, 0, 0, conv.out_channels - x.shape[-3]))
        # relu(pool(.)) is pool(relu(.)) exactly, on a quarter of the values (see CNN)
        return F.relu(F.max_pool2d(conv(x) + shortcut, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._block(self.conv2, self._block(self.conv1, x))
        return self.fc2(F.relu(self.fc1(x.flatten(-3))))


def relu_after_pool(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` for an ``nn.Sequential``, with each ``ReLU`` directly followed by a
    ``MaxPool2d`` applied after the pool instead of before it.

    The outputs and the gradients are those of the modules in order, bit for bit: the ReLU
    is monotone, so pooling the rectified values picks the rectified largest value of each
    window; where that value is positive both orders route the window's gradient to the same
    element, and where it is not, both give it a zero gradient (the ReLU's gradient at and
    below 0 is 0). ``tests/test_cnn_speed.py`` checks it on whole training runs. A pair whose
    modules carry a forward hook (or with global forward hooks) runs in the modules' order,
    so that a hook sees what the order says.
    """
    modules = list(model._modules.values())
    hooked = _global_forward_hooks()
    i = 0
    while i < len(modules):
        module = modules[i]
        after = modules[i + 1] if i + 1 < len(modules) else None
        if (
            type(module) is nn.ReLU
            and type(after) is nn.MaxPool2d
            and not after.return_indices
            and not hooked
            and not _has_forward_hooks(module)
            and not _has_forward_hooks(after)
        ):
            x = module(after(x))
            i += 2
        else:
            x = module(x)
            i += 1
    return x


def _has_forward_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _global_forward_hooks() -> bool:
    from torch.nn.modules import module as torch_module

    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks)


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_outputs: int,
    hidden: Sequence[int] | None = None,
    seed: int | None = None,
    vocab_size: int | None = None,
    init: str | None = None,
) -> nn.Module:
    """Make a network by name.

    Args:
        name: ``"mlp"``, ``"cnn"`` or ``"cnn-skip"`` (:class:`ResidualCNN`, the CNN with skip
            connections; the same seed gives it the CNN's initial weights); for token
            sequences, ``"gpt"`` (:class:`~forgetless.models.gpt.GPT`) or ``"hf:TYPE"``, a
            Hugging Face causal LM of that model type (``hf:gpt2``, ``hf:llama``) or local
            ``config.json`` (``hf:path/config.json``), randomly initialised (needs
            ``transformers``).
        input_shape: shape of one input, e.g. ``(1, 28, 28)``; ``(T,)`` for sequences.
        num_outputs: output units (the stream's ``num_outputs``).
        hidden: hidden layer sizes for the MLP (default ``(400, 400)``), or one size for the
            CNN's fully connected layer (default ``128``), or one width per transformer block,
            all equal (gpt default ``(128, 128, 128, 128)``: 4 blocks of width 128).
        seed: if given, initialise the weights from this seed.
        vocab_size: language models: distinct input token ids (default ``num_outputs``; less
            under the ``task`` protocol, whose outputs hold a copy of the vocabulary per task).
        init: the initial weights, a name of :data:`~forgetless.models.init.INITS`
            (``None`` or ``"default"``: the layers' PyTorch defaults; ``"xavier"``:
            Xavier-uniform weights and zero biases), drawn right after the layers' own draws.
    """
    if seed is not None:
        torch.manual_seed(seed)
    return init_weights(_build(name, input_shape, num_outputs, hidden, vocab_size), init)


def _build(
    name: str,
    input_shape: Sequence[int],
    num_outputs: int,
    hidden: Sequence[int] | None,
    vocab_size: int | None,
) -> nn.Module:
    if name == "gpt" or name.startswith("hf:"):
        return _language_model(name, input_shape, num_outputs, hidden, vocab_size)
    if name == "mlp":
        return MLP(input_shape, num_outputs, tuple(hidden) if hidden else (400, 400))
    if name in ("cnn", "cnn-skip"):
        if hidden is not None and len(hidden) != 1:
            raise ConfigError(f"the CNN takes one hidden size, got {list(hidden)}")
        model = CNN if name == "cnn" else ResidualCNN
        return model(input_shape, num_outputs, hidden[0] if hidden else 128)
    hint = difflib.get_close_matches(name, MODEL_NAMES, n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(
        f"unknown model {name!r}{suggestion}; known: {', '.join(MODEL_NAMES)}, or hf:TYPE"
    )


def _language_model(
    name: str,
    input_shape: Sequence[int],
    num_outputs: int,
    hidden: Sequence[int] | None,
    vocab_size: int | None,
) -> nn.Module:
    if len(input_shape) != 1:
        raise ConfigError(
            f"{name} is a language model: it takes token sequences [T], not inputs of shape "
            f"{tuple(input_shape)}; use a text scenario (--scenario text or shakespeare)"
        )
    block_size = input_shape[0]
    if name.startswith("hf:"):
        from forgetless.models.hf import build_causal_lm

        return build_causal_lm(name.removeprefix("hf:"), num_outputs, block_size, hidden)
    from forgetless.models.gpt import GPT

    widths = tuple(hidden) if hidden else (128,) * 4
    if len(set(widths)) != 1:
        raise ConfigError(f"the gpt's blocks share one width, got {list(widths)}")
    return GPT(vocab_size or num_outputs, block_size, widths[0], len(widths), outputs=num_outputs)


__all__ = [
    "ACTIVATIONS",
    "CNN",
    "INITS",
    "MLP",
    "MODEL_NAMES",
    "Column",
    "LayerMask",
    "MaskedConv2d",
    "MaskedLinear",
    "MaskedNet",
    "ProgressiveNet",
    "ResidualCNN",
    "SpecialistNet",
    "build_model",
    "column_of",
    "init_weights",
    "masked_layers",
    "relu_after_pool",
    "to_masked",
]
