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

MODEL_NAMES = ("mlp", "cnn", "cnn-skip", "gpt")

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
    connected layers (``hidden`` units, then the outputs)."""

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
        return F.max_pool2d(F.relu(conv(x) + shortcut), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._block(self.conv2, self._block(self.conv1, x))
        return self.fc2(F.relu(self.fc1(x.flatten(-3))))


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
    "to_masked",
]
