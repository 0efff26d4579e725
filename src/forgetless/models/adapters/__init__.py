"""Adapters: small trainable layers wrapped, in place, around the linear layers of any model.

- ``lora`` (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"), through the
  ``peft`` library: ``y = W x + (alpha / r) B A x``, ``B`` zero-initialised. Needs
  ``pip install 'forgetless[adapters]'``.
- ``curlora`` (Fawi 2024): ``y = W x + alpha C U R x`` with ``C``, ``R`` columns and rows of
  ``W`` and only ``U`` trained (:mod:`forgetless.models.adapters.curlora`). No dependency.

Both wrap ``nn.Linear`` layers and GPT-2's ``Conv1D``, leave the user's model object and class
as they are (only the targeted submodules are replaced, by wrappers that hold the original as
``base_layer``), start exactly at the base model's outputs, and can be merged into the base
weights, unmerged, and removed::

    from forgetless.models import adapters
    names = adapters.wrap(model, "curlora", rank=8)      # the wrapped layers; the rest frozen
    ...train...
    adapters.merge(model); adapters.unmerge(model)
    adapters.remove(model, merge=True)                  # plain layers again, update kept
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from forgetless.errors import ConfigError
from forgetless.models.adapters.curlora import CURLinear

METHODS = ("lora", "curlora")
#: Default scale of the update: LoRA's ``alpha`` (the update is ``alpha / rank * B A``) is
#: twice the rank, a common choice; CURLoRA's (``alpha * C U R``) is 1, as in its paper's code.
DEFAULT_ALPHA = {"lora": None, "curlora": 1.0}

__all__ = [
    "METHODS",
    "CURLinear",
    "TaskAdapters",
    "adapter_layers",
    "adapter_parameters",
    "adapter_state",
    "default_targets",
    "merge",
    "remove",
    "unmerge",
    "wrap",
]


def wrap(
    model: nn.Module,
    method: str = "lora",
    rank: int = 8,
    alpha: float | None = None,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
    seed: int | None = None,
    freeze: bool = True,
) -> list[str]:
    """Wrap the targeted linear layers of ``model`` in adapters, in place.

    Args:
        model: any ``nn.Module``; it is changed in place and keeps its class.
        method: ``"lora"`` (through peft) or ``"curlora"``.
        rank: the update's rank ``r``.
        alpha: the update's scale (default: ``2 * rank`` for LoRA, 1 for CURLoRA).
        dropout: dropout on the adapters' inputs.
        targets: module names, or name suffixes as in peft (``"qkv"`` matches every
            ``....qkv``); ``None``: :func:`default_targets`.
        seed: seeds the adapters' random parts (LoRA's ``A``, CURLoRA's indices) without
            touching the global random stream; ``None``: drawn from it.
        freeze: make every other parameter of the model non-trainable.

    Returns:
        The names of the wrapped layers.

    Raises:
        ConfigError: unknown method, bad rank, targets that match no linear layer, a model
            already wrapped, or ``lora`` without peft installed.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown adapter {method!r}; known: {', '.join(METHODS)}")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ConfigError(f"the adapter rank must be a positive integer, got {rank!r}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"adapter dropout must be in [0, 1), got {dropout!r}")
    if adapter_layers(model):
        raise ConfigError("the model already has adapters; remove or merge them first")
    names = _resolve(model, default_targets(model) if targets is None else targets)
    if alpha is None:
        alpha = 2.0 * rank if method == "lora" else DEFAULT_ALPHA[method]
    trainable = {id(p): p.requires_grad for p in model.parameters()}
    with _seeded(seed) as generator:
        if method == "lora":
            _wrap_lora(model, names, rank, alpha, dropout)
        else:
            for name in names:
                layer = model.get_submodule(name)
                _replace(model, name, CURLinear(layer, rank, alpha, dropout, generator))
    # The base layers are frozen; the rest of the model too, or as it was (peft freezes all).
    wrapped = {id(p) for n in names for p in _base(model.get_submodule(n)).parameters()}
    for p in model.parameters():
        if id(p) in trainable:
            p.requires_grad_(not freeze and id(p) not in wrapped and trainable[id(p)])
    return names


def adapter_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(name, layer)`` of every adapter wrapper in ``model`` (LoRA or CURLoRA)."""
    lora = _lora_layer_type()
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, CURLinear) or (lora is not None and isinstance(m, lora))
    ]


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' own parameters (LoRA's ``A`` and ``B``, CURLoRA's ``U``), not their base
    layers'."""
    out = []
    for _, layer in adapter_layers(model):
        base = {id(p) for p in _base(layer).parameters()}
        out += [p for p in layer.parameters() if id(p) not in base]
    return out


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' own entries of ``model.state_dict()``, by name: their parameters and
    CURLoRA's drawn indices, not their base layers' tensors, nor CURLoRA's ``C`` and ``R``
    (copies of the base weight's columns and rows, which the indices and that weight give
    back). What a task trained through adapters adds to the model."""
    prefixes = []
    skip = set()
    for name, layer in adapter_layers(model):
        prefixes.append(f"{name}.")
        base = _base(layer)
        skip |= {id(t) for t in (*base.parameters(), *base.buffers())}
        if isinstance(layer, CURLinear):
            skip |= {id(layer.C), id(layer.R)}
    own = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name.startswith(tuple(prefixes)) and id(tensor) not in skip:
            own[name] = tensor.detach()
    return own


@torch.no_grad()
def merge(model: nn.Module) -> None:
    """Fold every adapter's update into its base weight (``W <- W + delta``); the adapters
    are then skipped, and the outputs stay the same (up to rounding)."""
    for _, layer in adapter_layers(model):
        layer.merge()


@torch.no_grad()
def unmerge(model: nn.Module) -> None:
    """Undo :func:`merge` (``W <- W - delta``)."""
    for _, layer in adapter_layers(model):
        layer.unmerge()


def remove(model: nn.Module, merge: bool = False) -> None:
    """Put the base layers back in place of the adapters, with their update merged into the
    weights (``merge=True``) or dropped. Base parameters stay as frozen as they are."""
    for name, layer in adapter_layers(model):
        if merge:
            layer.merge()
        elif _is_merged(layer):
            layer.unmerge()
        _replace(model, name, _base(layer))
    if hasattr(model, "peft_config"):  # peft's record of what it injected, now gone
        del model.peft_config


def default_targets(model: nn.Module) -> list[str]:
    """Where adapters go when no targets are given:

    - :class:`~forgetless.models.gpt.GPT`: each block's attention projections
      (``attn.qkv``, ``attn.proj``), as LoRA adapts the attention weights;
    - a Hugging Face model (:class:`~forgetless.models.hf.CausalLM`): peft's default for its
      model type (GPT-2's ``c_attn``, Llama's ``q_proj`` and ``v_proj``, ...) when known;
    - any other model (the MLP and CNNs too): every ``nn.Linear`` and ``Conv1D``.
    """
    from forgetless.models.gpt import GPT
    from forgetless.models.hf import CausalLM

    if isinstance(model, GPT):
        return [n for n, _ in _linear_layers(model) if n.endswith(("attn.qkv", "attn.proj"))]
    if isinstance(model, CausalLM):
        with contextlib.suppress(ImportError):
            from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known

            if model.model_type in known:
                return _resolve(model, known[model.model_type])
    return [n for n, _ in _linear_layers(model)]


def _resolve(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """The full names of the linear layers ``targets`` name (exactly, or as a suffix)."""
    if isinstance(targets, str):
        targets = [targets]
    layers = _linear_layers(model)
    linear = {n for n, _ in layers}
    matched = [
        n for n, _ in model.named_modules() if any(n == t or n.endswith(f".{t}") for t in targets)
    ]
    other = [n for n in matched if n not in linear]
    if other:
        kind = type(model.get_submodule(other[0])).__name__
        raise ConfigError(
            f"adapters wrap nn.Linear and Conv1D layers only; target {other[0]!r} is a {kind}"
        )
    if not matched:
        known = ", ".join(n for n, _ in layers[:20]) or "none"
        raise ConfigError(
            f"no linear layer of the model matches the adapter targets {list(targets)}; its "
            f"linear layers are: {known}"
        )
    return matched


def _linear_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    conv1d = _conv1d_type()
    kinds = (nn.Linear,) if conv1d is None else (nn.Linear, conv1d)
    return [(n, m) for n, m in model.named_modules() if n and isinstance(m, kinds)]


def _conv1d_type() -> type | None:
    # A model holds GPT-2's Conv1D only if transformers was imported: never import it here.
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None)


def _lora_layer_type() -> type | None:
    module = sys.modules.get("peft.tuners.lora")
    return getattr(module, "LoraLayer", None)


def _base(layer: nn.Module) -> nn.Module:
    """The original layer inside an adapter wrapper."""
    getter = getattr(layer, "get_base_layer", None)  # peft's, through nested wrappers
    return getter() if getter is not None else layer.base_layer


def _is_merged(layer: nn.Module) -> bool:
    return bool(getattr(layer, "merged", False))


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _wrap_lora(model: nn.Module, names: list[str], rank: int, alpha: float, dropout: float):
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ConfigError(
            "the lora adapter uses peft: pip install 'forgetless[adapters]' (or use curlora, "
            "which needs nothing more)"
        ) from None
    conv1d = _conv1d_type()
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        # exactly these layers (peft matches a string as a regular expression on full names)
        target_modules="^(" + "|".join(re.escape(n) for n in names) + ")$",
        fan_in_fan_out=conv1d is not None
        and all(isinstance(model.get_submodule(n), conv1d) for n in names),
        bias="none",
    )
    with warnings.catch_warnings():
        # peft corrects fan_in_fan_out per layer type when targets mix Linear and Conv1D
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        inject_adapter_in_model(config, model)


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[torch.Generator]:
    """A CPU generator for the adapters' draws; with a seed, the global random stream (which
    peft's initialisers use) is also seeded inside and restored after."""
    if seed is None:
        yield torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


from forgetless.models.adapters.tasks import TaskAdapters  # noqa: E402  (it uses the above)
