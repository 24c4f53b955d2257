"""Relational (similarity-matrix) distillation: match the student's in-batch query-passage similarities to the
teacher's.

A relational alternative to embedding matching for EmbeddingGemma's distillation from a larger teacher
(Schechter Vera et al., 2025, arXiv:2509.20354), in the style of relational knowledge distillation (Park et
al., 2019, "Relational Knowledge Distillation"). It needs no projection: the [B, B'] matrices have the same
shape whatever the student and teacher dims. With S = cos(q_s, p_s) and T = cos(q_t, p_t):

    kind="kl":   L_R = 1/B * sum_i KL( softmax(T_i / tau) || softmax(S_i / tau) )
    kind="mse":  L_R = 1/(B B') * sum_ij (S_ij - T_ij)^2

The teacher is a fixed target: no gradient flows into it.
"""

from typing import Literal

import torch
from torch import Tensor

from gemma_embed.errors import InputError
from gemma_embed.losses.similarity import cosine_similarity

RelationalKind = Literal["kl", "mse"]


def similarity_distillation_loss(
    student_q: Tensor,
    student_p: Tensor,
    teacher_q: Tensor,
    teacher_p: Tensor,
    *,
    kind: RelationalKind = "kl",
    tau: float = 0.05,
) -> Tensor:
    """L_R for student q [B, d_s], p [B', d_s] and teacher q [B, d_t], p [B', d_t] (a float32 scalar)."""
    s = cosine_similarity(student_q, student_p)
    t = cosine_similarity(teacher_q.detach(), teacher_p.detach())
    if s.shape != t.shape:
        raise InputError(
            f"student and teacher batches differ: similarity {tuple(s.shape)} vs {tuple(t.shape)}"
        )
    if kind == "mse":
        return (s - t).pow(2).mean()
    if kind != "kl":
        raise InputError(f"relational distillation kind must be 'kl' or 'mse'; got {kind!r}")
    if tau <= 0:
        raise InputError(f"relational distillation temperature tau must be > 0; got {tau}")
    log_s = torch.log_softmax(s / tau, dim=1)
    log_t = torch.log_softmax(t / tau, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1).mean()
