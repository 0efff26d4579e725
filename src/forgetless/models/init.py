"""Initial weights other than PyTorch's defaults, by name (``RunConfig.init``, ``--init``).

An initialisation is applied to a freshly built model and draws from the global random stream
right after the architecture's own draws, so the same seed gives the same weights; a model
that uses none (``"default"``) keeps the draws of its layers' constructors.
"""

from __future__ import annotations

import difflib
import math

from torch import nn

from forgetless.errors import ConfigError

#: The initialisations ``init_weights`` knows, with what each does.
INITS = {
    "default": "each layer's PyTorch default (linear and convolutional layers: "
    "U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases)",
    "xavier": "Xavier-uniform weights, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), and zero "
    "biases, for every linear and convolutional layer (Glorot and Bengio 2010; the DER "
    "authors' MNIST MLP)",
}


def check_init(name: str | None) -> str | None:
    """``name`` as a config holds it: ``None`` for the default (``"default"`` included, so a
    run that names it has the id of one that does not), else a known name; a ConfigError
    with a "did you mean" otherwise."""
    if name is None or name == "default":
        return None
    if not isinstance(name, str) or name not in INITS:
        match = difflib.get_close_matches(str(name), list(INITS), n=1)
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        raise ConfigError(f"init must be one of {', '.join(INITS)}, got {name!r}{hint}")
    return name


def init_weights(model: nn.Module, name: str | None) -> nn.Module:
    """Re-initialise ``model`` in place by the initialisation ``name`` (see :data:`INITS`;
    ``None`` or ``"default"``: unchanged) and return it. Draws from the global random stream."""
    name = check_init(name)
    if name == "xavier":
        xavier_(model)
    return model


def xavier_(model: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every linear and convolutional layer, in
    module order (Glorot and Bengio 2010, "Understanding the difficulty of training deep
    feedforward neural networks", AISTATS, eq. 16). ``fan_in`` and ``fan_out`` count a
    convolution's kernel elements too. Other layers (embeddings, norms) keep their weights."""
    for layer in model.modules():
        if isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd)):
            weight = layer.weight
            receptive = math.prod(weight.shape[2:])
            fan_out, fan_in = weight.shape[0] * receptive, weight.shape[1] * receptive
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(weight, -bound, bound)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
