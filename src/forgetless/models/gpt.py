"""A small causal transformer language model, readable top to bottom.

GPT-2's layout (Radford et al. 2019, "Language models are unsupervised multitask learners"),
written after Karpathy's nanoGPT: token and position embeddings; blocks of pre-norm causal
self-attention and a two-layer MLP, each added back to the residual stream; a final layer
norm; a linear head giving next-token logits at every position. Built in, so nothing needs
downloading. Unlike GPT-2 the head is not tied to the token embedding: the head can then be
trained (or frozen) alone, as the frozen-backbone baseline needs.

Module names are what adapters target: ``blocks.N.attn.qkv``, ``blocks.N.attn.proj``,
``blocks.N.mlp.fc``, ``blocks.N.mlp.proj`` and ``head``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.errors import ConfigError

#: Dimensions per attention head: a block of width ``w`` has ``w // HEAD_SIZE`` heads.
HEAD_SIZE = 32


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` sees positions ``<= t`` only
    (Vaswani et al. 2017, eq. 1, with the causal mask)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)  # queries, keys and values in one product
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # [B, T, C] -> [B, heads, T, C / heads]
        q, k, v = (z.view(B, T, self.heads, C // self.heads).transpose(1, 2) for z in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    """``proj(gelu(fc(x)))``, four times wider inside."""

    def __init__(self, width: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(width, 4 * width)
        self.proj = nn.Linear(4 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """``x + attn(norm(x))``, then ``x + mlp(norm(x))``: the pre-norm residual block."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MLP(width, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """A causal language model: ``tokens [B, T]`` (int64, ``T <= block_size``) to next-token
    logits ``[B, T, vocab_size]``.

    Args:
        vocab_size: tokens in the vocabulary (the stream's ``num_outputs``).
        block_size: the longest sequence (positions with an embedding).
        width: the residual stream's width; a multiple of :data:`HEAD_SIZE`.
        layers: transformer blocks.
        dropout: dropout after attention and the MLP (0: none, the default).
        outputs: logits per position; the vocabulary by default, more for a head per task
            (the ``task`` protocol's copies of the vocabulary).
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        width: int = 128,
        layers: int = 4,
        dropout: float = 0.0,
        outputs: int | None = None,
    ):
        super().__init__()
        if width < HEAD_SIZE or width % HEAD_SIZE:
            raise ConfigError(f"the gpt's width must be a multiple of {HEAD_SIZE}, got {width}")
        if layers < 1 or vocab_size < 1 or block_size < 1:
            raise ConfigError(
                f"the gpt needs at least one layer, token and position; got layers={layers}, "
                f"vocab_size={vocab_size}, block_size={block_size}"
            )
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(block_size, width)
        self.drop = nn.Dropout(dropout)
        heads = width // HEAD_SIZE
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, outputs or vocab_size, bias=False)
        self._init_weights(layers)

    def _init_weights(self, layers: int) -> None:
        # GPT-2: N(0, 0.02) everywhere, and the projections into the residual stream scaled by
        # 1 / sqrt(2 * layers), since each block adds two of them to it.
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(".proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[-1]
        if length > self.block_size:
            raise ConfigError(
                f"sequences of {length} tokens are longer than the gpt's {self.block_size}"
            )
        positions = torch.arange(length, device=tokens.device)
        x = self.drop(self.token_embedding(tokens) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
