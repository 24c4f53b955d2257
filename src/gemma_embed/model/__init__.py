"""The EmbeddingGemma network: config presets, the Gemma 3 encoder and the embedding head."""

from gemma_embed.model.config import PRESETS, GemmaEmbedConfig, preset
from gemma_embed.model.gemma3 import GemmaEncoder
from gemma_embed.model.head import EmbeddingHead, EmbeddingModel, mean_pool, truncate_and_normalize

__all__ = [
    "PRESETS",
    "EmbeddingHead",
    "EmbeddingModel",
    "GemmaEmbedConfig",
    "GemmaEncoder",
    "mean_pool",
    "preset",
    "truncate_and_normalize",
]
