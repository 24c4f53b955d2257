"""The embedding head and the whole embedding model: encoder -> mean pool -> Dense -> Dense -> L2 normalize.

This is the sentence-transformers pipeline of EmbeddingGemma (modules Pooling(mean), 2_Dense 768->3072,
3_Dense 3072->768, both without bias or activation, then Normalize). Matryoshka truncation keeps the
first `dim` coordinates and re-normalizes.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gemma_embed.model.config import GemmaEmbedConfig
from gemma_embed.model.gemma3 import GemmaEncoder, gemma_init_


def mean_pool(states: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of token states over non-padding positions (prompt, BOS and EOS included), in float32."""
    weights = attention_mask.to(torch.float32).unsqueeze(-1)
    return (states.float() * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def truncate_and_normalize(embeddings: Tensor, dim: int | None = None) -> Tensor:
    """Matryoshka truncation to the first `dim` coordinates, then L2 normalization."""
    if dim is not None:
        embeddings = embeddings[..., :dim]
    return F.normalize(embeddings, p=2, dim=-1)


class EmbeddingHead(nn.Module):
    """Dense layers after pooling (sentence-transformers `Dense` modules, identity activation, no bias)."""

    def __init__(self, cfg: GemmaEmbedConfig) -> None:
        super().__init__()
        sizes = (cfg.hidden_size, *cfg.dense_dims)
        self.dense = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(sizes))

    def forward(self, pooled: Tensor) -> Tensor:
        for layer in self.dense:
            pooled = layer(pooled.to(layer.weight.dtype))
        return pooled


class EmbeddingModel(nn.Module):
    """Token ids -> L2-normalized float32 sentence embeddings [B, dim]."""

    def __init__(self, cfg: GemmaEmbedConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = GemmaEncoder(cfg)
        self.head = EmbeddingHead(cfg)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, dim: int | None = None) -> Tensor:
        states = self.encoder(input_ids, attention_mask)
        pooled = mean_pool(states, attention_mask)
        return truncate_and_normalize(self.head(pooled).float(), dim)

    def initialize(self, seed: int | None = None, std: float = 0.02) -> EmbeddingModel:
        """Random init as transformers does for Gemma 3 (see `gemma_init_`)."""
        return gemma_init_(self, seed, std)
