"""The one cosine-similarity helper every loss uses.

Both functions compute in float32 (float64 inputs stay float64), whatever the input dtype: a bf16 model's
embeddings are up-cast before normalisation, so the losses never do exp/log arithmetic in bf16.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def l2_normalize(x: Tensor) -> Tensor:
    """`x / ||x||` along the last dim, up-cast to at least float32. Shape is unchanged."""
    return F.normalize(x.to(torch.promote_types(x.dtype, torch.float32)), dim=-1)


def cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Cosine-similarity matrix: `a` [..., n, d], `b` [..., m, d] give [..., n, m] (leading dims broadcast).

    Mixed dtypes (a bf16 student against a float32 teacher) meet in the wider one, at least float32.
    """
    a, b = l2_normalize(a), l2_normalize(b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype) @ b.to(dtype).transpose(-1, -2)


def paired_cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of matching rows: `a`, `b` [..., d] give [...]."""
    return cosine_similarity(a.unsqueeze(-2), b.unsqueeze(-2))[..., 0, 0]
