"""Spread-out regularizer: the second-moment term of the global orthogonal regularizer.

Zhang et al., 2017, "Learning Spread-out Local Feature Descriptors" (ICCV); used by EmbeddingGemma (Schechter
Vera et al., 2025, arXiv:2509.20354) on query and passage embeddings to spread them over the sphere, which
makes them robust to quantization and truncation. With L2-normalised rows q_i, p_i of a batch of B:

    L_S = 1/(B(B-1)) * sum_{i != j} (q_i . q_j)^2  +  1/(B(B-1)) * sum_{i != j} (p_i . p_j)^2

Random unit vectors in d dims have E[(x . y)^2] = 1/d, the minimum this term pushes towards.
"""

import torch
from torch import Tensor

from gemma_embed.errors import InputError
from gemma_embed.losses.similarity import cosine_similarity


def _second_moment(x: Tensor, name: str) -> Tensor:
    if x.dim() != 2 or x.shape[0] < 2:
        raise InputError(f"spread_out_loss needs {name} of shape [B, d] with B >= 2; got {tuple(x.shape)}")
    n = x.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=x.device)
    return cosine_similarity(x, x).pow(2)[off_diagonal].sum() / (n * (n - 1))


def spread_out_loss(q: Tensor, p: Tensor) -> Tensor:
    """L_S of query embeddings `q` [B, d] and passage embeddings `p` [B', d] (float32 scalar; B, B' >= 2).

    Inputs need not be normalised (they are, in float32). Each term is the mean over its own off-diagonal
    pairs.
    """
    return _second_moment(q, "q") + _second_moment(p, "p")
