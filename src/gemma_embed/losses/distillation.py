"""Embedding-matching distillation from a teacher's embeddings of queries, positives and hard negatives.

EmbeddingGemma's geometric embedding distillation (Schechter Vera et al., 2025, "EmbeddingGemma: Powerful and
Lightweight Text Representations", arXiv:2509.20354) matches each student embedding to the teacher's embedding
of the same text:

    L_D = L_Q + L_P + L_N,   L_X = mean over the rows x of X of  dist(proj(x_student), x_teacher)
    dist(s, t) = 1 - cos(s, t)  +  mse_weight * mean_over_dims (s - t)^2

`proj` is the identity when the dims agree and a learned `DistillationProjection` otherwise. The MSE term
(off by default) compares raw, un-normalised vectors, so it also matches norms. L_N is over every hard
negative ([B, d] or [B, k, d]) and is left out when no negatives are given. `relational="kl"|"mse"` adds the
similarity-matrix term L_R of `similarity_distillation_loss` (on the un-projected student embeddings).
The teacher is a fixed target: no gradient flows into it.
"""

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from gemma_embed.errors import InputError
from gemma_embed.losses.similarity import paired_cosine_similarity
from gemma_embed.losses.similarity_distillation import RelationalKind, similarity_distillation_loss

# {"q": [B, d], "p": [B, d], "neg": [B, d] | [B, k, d] | None} or the tuple (q, p) / (q, p, neg).
Embeddings = Mapping[str, Tensor | None] | Sequence[Tensor | None]


class DistillationProjection(nn.Module):
    """Learned linear map from the student's embedding dim to the teacher's (no bias).

    It is trained with the student (keep it in the module the optimizer sees, e.g. `EmbeddingGemmaLoss`) and
    it is not part of the model, so saving the model drops it. Initialised (semi-)orthogonal: it starts out
    preserving cosine similarities, so distillation does not begin from a random rotation.
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(student_dim, teacher_dim, bias=False)
        nn.init.orthogonal_(self.linear.weight)

    def forward(self, x: Tensor) -> Tensor:
        """[..., student_dim] -> [..., teacher_dim], in the projection's dtype."""
        return self.linear(x.to(self.linear.weight.dtype))


def _unpack(embeddings: Embeddings, who: str) -> tuple[Tensor, Tensor, Tensor | None]:
    if isinstance(embeddings, Mapping):
        unknown = set(embeddings) - {"q", "p", "neg"}
        if unknown or "q" not in embeddings or "p" not in embeddings:
            raise InputError(
                f"{who} embeddings need keys 'q', 'p' and optionally 'neg'; got {sorted(embeddings)}"
            )
        return embeddings["q"], embeddings["p"], embeddings.get("neg")
    if isinstance(embeddings, Sequence) and len(embeddings) in (2, 3):
        q, p, *neg = embeddings
        return q, p, neg[0] if neg else None
    raise InputError(f"{who} embeddings must be a dict with 'q', 'p'[, 'neg'] or a tuple (q, p[, neg])")


def embedding_distillation_loss(
    student: Embeddings,
    teacher: Embeddings,
    *,
    projection: DistillationProjection | None = None,
    mse_weight: float = 0.0,
    relational: RelationalKind | None = None,
    relational_tau: float = 0.05,
) -> Tensor:
    """L_D = L_Q + L_P + L_N (+ L_R with `relational`) as a float32 scalar.

    Args:
        student, teacher: {"q", "p", "neg"} dicts or (q, p[, neg]) tuples; q, p [B, d]; neg [B, d] or
            [B, k, d]. Student and teacher shapes agree except for the last dim; both have negatives or
            neither.
        projection: maps student dim -> teacher dim; required when they differ.
        mse_weight: weight of the raw-vector MSE added to 1 - cosine.
        relational: also match the q-p similarity matrices ("kl" over softmax rows or "mse"); None: off.
        relational_tau: temperature of the "kl" relational term.
    """
    pairs = list(zip(_unpack(student, "student"), _unpack(teacher, "teacher"), strict=True))
    if (pairs[2][0] is None) != (pairs[2][1] is None):
        raise InputError("only one of student and teacher has hard negatives 'neg': give both or neither")
    student_dim, teacher_dim = pairs[0][0].shape[-1], pairs[0][1].shape[-1]
    if projection is None and student_dim != teacher_dim:
        raise InputError(
            f"student dim {student_dim} != teacher dim {teacher_dim}: "
            f"pass projection=DistillationProjection({student_dim}, {teacher_dim})"
        )
    total = torch.zeros((), dtype=torch.float32, device=pairs[0][0].device)
    for s, t in pairs:
        if s is None or t is None:
            continue
        if s.shape[:-1] != t.shape[:-1]:
            raise InputError(
                f"student {tuple(s.shape)} and teacher {tuple(t.shape)} embeddings must match in batch"
            )
        s_proj = s if projection is None else projection(s)
        t = t.detach()
        total = total + (1.0 - paired_cosine_similarity(s_proj, t)).mean()
        if mse_weight:
            total = total + mse_weight * (s_proj.float() - t.float()).pow(2).mean()
    if relational is not None:
        total = total + similarity_distillation_loss(
            pairs[0][0], pairs[1][0], pairs[0][1], pairs[1][1], kind=relational, tau=relational_tau
        )
    return total
