"""Any Hugging Face causal language model, built from a config (weights drawn, never
downloaded), as a plain module of tokens to logits. Needs ``transformers``
(``pip install 'forgetless[adapters]'``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from forgetless.errors import ConfigError

#: The prefix of model names that build a Hugging Face model: ``hf:gpt2``, ``hf:llama``,
#: ``hf:path/to/config.json``.
PREFIX = "hf:"


class CausalLM(nn.Module):
    """A ``transformers`` causal LM as a module ``tokens [B, T] -> logits [B, T, V]``; the
    model itself is the submodule ``model`` (adapters wrap its layers in place)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def model_type(self) -> str:
        return str(getattr(self.model.config, "model_type", ""))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=tokens, use_cache=False).logits


def build_causal_lm(
    spec: str, vocab_size: int, block_size: int, hidden: Sequence[int] | None = None
) -> CausalLM:
    """A randomly initialised causal LM from ``spec``: a model type ``transformers`` knows
    (``"gpt2"``, ``"llama"``, ``"qwen2"``, ...: its default config) or a local ``config.json``.

    The vocabulary and the positions are set to the stream's; ``hidden`` (one width per
    layer, all equal) sets the layers, the width and ``width // 32`` heads, four times wider
    inside the MLP, where the config has those fields.
    """
    transformers = _transformers()
    path = Path(spec)
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(f"no model config at {path}")
        try:
            settings = json.loads(path.read_text())
            model_type = settings.pop("model_type")
        except (json.JSONDecodeError, KeyError, AttributeError) as err:
            raise ConfigError(
                f"{path}: not a transformers config with a model_type: {err}"
            ) from None
    else:
        model_type, settings = spec, {}
    try:
        config = transformers.AutoConfig.for_model(model_type, **settings)
    except (ValueError, KeyError) as err:
        raise ConfigError(f"transformers has no model type {model_type!r}: {err}") from None
    sizes = {"vocab_size": vocab_size, "max_position_embeddings": block_size}
    if hidden:
        if len(set(hidden)) != 1:
            raise ConfigError(f"a transformer's layers share one width, got {list(hidden)}")
        width = hidden[0]
        sizes.update(
            num_hidden_layers=len(hidden),
            hidden_size=width,
            num_attention_heads=max(1, width // 32),
            num_key_value_heads=max(1, width // 32),
            intermediate_size=4 * width,
        )
    for key, value in sizes.items():
        if hasattr(config, key):  # attribute_map: gpt2's n_positions, n_embd, ...
            setattr(config, key, value)
    return CausalLM(transformers.AutoModelForCausalLM.from_config(config))


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "Hugging Face models need transformers: pip install 'forgetless[adapters]'"
        ) from None
    return transformers
