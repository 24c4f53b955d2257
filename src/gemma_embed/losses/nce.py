"""Noise-contrastive estimation (InfoNCE): in-batch negatives, weighted hard negatives, false-negative mask.

EmbeddingGemma's contrastive loss L_C (Schechter Vera et al., 2025, "EmbeddingGemma: Powerful and Lightweight
Text Representations", arXiv:2509.20354). With `s` the cosine similarity and `tau` the temperature, for each
query row `i`:

    l_i = -log( e^{s(q_i, p_i)/tau}
                / ( e^{s(q_i, p_i)/tau}
                    + sum_k  w_ik e^{s(q_i, n_ik)/tau}
                    + sum_{j != i} m_ij e^{s(q_i, p_j)/tau} ) )

    w_ik = exp(alpha * stopgrad(s(q_i, n_ik)))       hardness weight: no gradient flows through it
    m_ij = 0 if q_ids[i] == q_ids[j] or p_ids[i] == p_ids[j] else 1      (false-negative mask)

    L_C = mean_i l_i

It is computed as `logsumexp(logits) - s(q_i, p_i)/tau`, where the hard-negative logits carry the log-weight
`alpha * s.detach()` and masked in-batch candidates are `-inf`, in float32 (bf16 inputs are up-cast).

Distributed training (a larger, all-gathered candidate set): `q` holds this rank's rows only while `p`,
`q_ids` and `p_ids` describe every in-batch candidate column, e.g. the positives of all ranks concatenated in
rank order; row `i`'s own positive and ids are at column `offset + i` (`offset = rank * local_batch`).
Single-process training is the case `offset = 0` with `p` of the same length as `q`.
`gemma_embed.losses.EmbeddingGemmaLoss` does the gathering; see `gemma_embed.distributed` for why the
local mean is the right scaling under DDP.
"""

import torch
from torch import Tensor

from gemma_embed.errors import InputError
from gemma_embed.losses.similarity import cosine_similarity


def nce_loss(
    q: Tensor,
    p: Tensor,
    neg: Tensor | None = None,
    *,
    tau: float = 0.05,
    alpha: float = 5.0,
    q_ids: Tensor | None = None,
    p_ids: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """Mean InfoNCE loss of the `b` query rows (a float32 scalar; float64 for float64 inputs).

    Args:
        q: query embeddings [b, d].
        p: in-batch positive candidates [N, d], N >= offset + b; row i's positive is p[offset + i].
        neg: hard negatives, one per query [b, d] or k per query [b, k, d]; None for in-batch negatives only.
        tau: softmax temperature (> 0).
        alpha: hardness-weight strength; 0 gives every hard negative weight 1.
        q_ids, p_ids: integer ids [N] of the query and the passage of each candidate column; a column whose
            query id or passage id equals row i's (at column offset + i) is masked out of row i's denominator.
            None: only column offset + i is excluded from the in-batch sum.
        offset: column of row 0's positive in `p` (non-zero only for an all-gathered candidate set).
    """
    if q.dim() != 2 or p.dim() != 2 or q.shape[1] != p.shape[1]:
        raise InputError(
            f"nce_loss needs q [b, d] and p [N, d] of one dim d; got {tuple(q.shape)} and {tuple(p.shape)}"
        )
    b, n = q.shape[0], p.shape[0]
    if b == 0 or not 0 <= offset <= n - b:
        raise InputError(f"nce_loss needs 0 <= offset <= N - b and b > 0; got offset={offset}, b={b}, N={n}")
    if tau <= 0:
        raise InputError(f"nce_loss temperature tau must be > 0; got {tau}")
    rows = torch.arange(b, device=q.device)
    own = rows + offset

    sim = cosine_similarity(q, p)  # [b, N]
    pos = sim[rows, own] / tau
    keep = torch.ones_like(sim, dtype=torch.bool)
    keep[rows, own] = False
    for name, ids in (("q_ids", q_ids), ("p_ids", p_ids)):
        if ids is None:
            continue
        if ids.shape != (n,):
            raise InputError(f"nce_loss {name} must have shape [N]=[{n}] like p; got {tuple(ids.shape)}")
        keep &= ids[own].unsqueeze(1) != ids.unsqueeze(0)
    logits = [pos.unsqueeze(1), (sim / tau).masked_fill(~keep, float("-inf"))]

    if neg is not None:
        hard = neg.unsqueeze(1) if neg.dim() == 2 else neg
        if hard.dim() != 3 or hard.shape[0] != b or hard.shape[2] != q.shape[1]:
            raise InputError(
                f"nce_loss neg must be [b, d] or [b, k, d] with b={b}, d={q.shape[1]}; got {tuple(neg.shape)}"
            )
        s_neg = cosine_similarity(q.unsqueeze(1), hard).squeeze(1)  # [b, k]
        logits.append(s_neg / tau + alpha * s_neg.detach())

    return (torch.logsumexp(torch.cat(logits, dim=1), dim=1) - pos).mean()
