"""Matryoshka representation learning: apply a loss at nested embedding dims and sum.

Kusupati et al., 2022, "Matryoshka Representation Learning" (NeurIPS); EmbeddingGemma (Schechter Vera et al.,
2025, arXiv:2509.20354) trains its contrastive and spread-out losses this way so that embeddings truncated to
512, 256 or 128 dims stay useful. For a loss L over embeddings x^(1..n) [..., D] and dims
D = m_1 > ... > m_r:

    L_MRL(x) = sum_r L( normalize(x^(1)[..., :m_r]), ..., normalize(x^(n)[..., :m_r]) )

i.e. every embedding is truncated to its first m_r dims and re-normalised to unit length.
"""

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor

from gemma_embed.errors import ConfigError, InputError
from gemma_embed.losses.similarity import l2_normalize


class Matryoshka:
    """Wrap `loss_fn` so that it is summed over the nested dims `dims` (the full embedding dim included).

    The wrapper truncates and re-normalises every positional Tensor argument (the embeddings; None passes
    through) and hands keyword arguments (ids, temperatures, offsets) unchanged, so one wrapper serves
    `nce_loss(q, p, neg, tau=..., q_ids=...)` and `spread_out_loss(q, p)` alike.
    """

    def __init__(self, loss_fn: Callable[..., Tensor], dims: Iterable[int]) -> None:
        dims = tuple(dims)
        if not dims or any(not isinstance(m, int) or m <= 0 for m in dims):
            raise ConfigError(
                f"Matryoshka dims must be positive integers like (768, 512, 256, 128); got {dims}"
            )
        self.dims = tuple(sorted(set(dims), reverse=True))
        self.loss_fn = loss_fn

    def __call__(self, *embeddings: Tensor | None, **kwargs: Any) -> Tensor:
        full = {x.shape[-1] for x in embeddings if x is not None}
        if full != {self.dims[0]}:
            raise InputError(
                f"Matryoshka dims {self.dims} must start at the embedding dim; "
                f"got embeddings of dim {sorted(full)}"
            )
        return sum(
            self.loss_fn(*(None if x is None else l2_normalize(x[..., :m]) for x in embeddings), **kwargs)
            for m in self.dims
        )
