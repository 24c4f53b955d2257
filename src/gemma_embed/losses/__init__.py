"""EmbeddingGemma's training losses, one per module (formula, citation and shapes in each docstring)."""

from gemma_embed.losses.distillation import DistillationProjection, embedding_distillation_loss
from gemma_embed.losses.matryoshka import Matryoshka
from gemma_embed.losses.nce import nce_loss
from gemma_embed.losses.parallel_distillation import parallel_distillation_loss
from gemma_embed.losses.similarity import cosine_similarity, l2_normalize, paired_cosine_similarity
from gemma_embed.losses.similarity_distillation import similarity_distillation_loss
from gemma_embed.losses.spread_out import spread_out_loss
from gemma_embed.losses.total import EmbeddingGemmaLoss

__all__ = [
    "DistillationProjection",
    "EmbeddingGemmaLoss",
    "Matryoshka",
    "cosine_similarity",
    "embedding_distillation_loss",
    "l2_normalize",
    "nce_loss",
    "paired_cosine_similarity",
    "parallel_distillation_loss",
    "similarity_distillation_loss",
    "spread_out_loss",
]
