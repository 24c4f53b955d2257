"""Multilingual distillation from parallel text: both sides of a translation pair are pulled to the teacher's
embedding of the source sentence.

Reimers & Gurevych, 2020, "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation"
(EMNLP), arXiv:2004.09813: a student learns to map a source sentence s_i and its translation t_i to the
(monolingual) teacher's vector of s_i, so the teacher's geometry carries over to every language the parallel
data covers. It is EmbeddingGemma's embedding distillation (Schechter Vera et al., 2025, arXiv:2509.20354;
`gemma_embed.losses.distillation`) on parallel data, with the source's teacher vector as the target of both
sides. For a batch of B pairs, with M the teacher and S the student:

    L_PD = 1/B sum_i dist(proj(S(s_i)), M(s_i))  +  1/B sum_i dist(proj(S(t_i)), M(s_i))
    dist(x, y) = 1 - cos(x, y)  +  mse_weight * mean_over_dims (x - y)^2

Reimers & Gurevych use the MSE alone; `dist` here is that of `embedding_distillation_loss` (L_PD is computed
by it, with targets (M(s), M(s))), so the same `mse_weight` and projection apply.
The teacher never embeds the translation: an English teacher's vector of a German sentence is no target.
Inputs: student vectors of the sources and of their translations [B, d], the teacher's vectors of the sources
[B, d_t]; `projection` maps d -> d_t when they differ. No gradient flows into the teacher.
"""

from torch import Tensor

from gemma_embed.errors import InputError
from gemma_embed.losses.distillation import DistillationProjection, embedding_distillation_loss


def parallel_distillation_loss(
    source: Tensor,
    translation: Tensor,
    teacher_source: Tensor,
    *,
    projection: DistillationProjection | None = None,
    mse_weight: float = 0.0,
) -> Tensor:
    """L_PD as a float32 scalar.

    Args:
        source: student embeddings of the source sentences [B, d].
        translation: student embeddings of their translations [B, d] (row i translates source row i).
        teacher_source: teacher embeddings of the source sentences [B, d_t].
        projection: maps the student dim to the teacher's; required when they differ.
        mse_weight: weight of the raw-vector MSE added to 1 - cosine.
    """
    if source.shape != translation.shape:
        raise InputError(
            f"source {tuple(source.shape)} and translation {tuple(translation.shape)} embeddings must have "
            "the same shape: one translation per source"
        )
    return embedding_distillation_loss(
        (source, translation),
        (teacher_source, teacher_source),
        projection=projection,
        mse_weight=mse_weight,
    )
