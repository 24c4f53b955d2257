"""EmbeddingGemmaLoss: the weighted sum of Matryoshka NCE, Matryoshka spread-out and distillation."""

import pytest
import torch

from gemma_embed.errors import ConfigError, InputError
from gemma_embed.losses import (
    DistillationProjection,
    EmbeddingGemmaLoss,
    Matryoshka,
    embedding_distillation_loss,
    nce_loss,
    spread_out_loss,
)

B, K, D, DT = 4, 2, 16, 24
DIMS = (16, 8)


def _batch():
    g = torch.Generator().manual_seed(0)
    q, p = (torch.randn(B, D, generator=g).requires_grad_() for _ in range(2))
    neg = torch.randn(B, K, D, generator=g).requires_grad_()
    teacher = {"q": torch.randn(B, DT, generator=g), "p": torch.randn(B, DT, generator=g)}
    teacher["neg"] = torch.randn(B, K, DT, generator=g)
    return q, p, neg, teacher


def test_total_is_the_weighted_sum_of_the_parts():
    q, p, neg, teacher = _batch()
    ids = torch.tensor([0, 1, 1, 2])
    loss_fn = EmbeddingGemmaLoss(
        dims=DIMS,
        tau=0.1,
        alpha=3.0,
        spread_out_weight=0.5,
        distillation_weight=1.0,
        projection=DistillationProjection(D, DT),
    )
    total, parts = loss_fn(q, p, neg, q_ids=ids, teacher=teacher)
    contrastive = Matryoshka(nce_loss, DIMS)(q, p, neg, tau=0.1, alpha=3.0, q_ids=ids)
    spread = Matryoshka(spread_out_loss, DIMS)(q, p)
    distill = embedding_distillation_loss((q, p, neg), teacher, projection=loss_fn.projection)
    torch.testing.assert_close(total, contrastive + 0.5 * spread + distill)
    assert set(parts) == {"contrastive", "spread_out", "distillation", "total"}
    assert all(isinstance(v, float) for v in parts.values())
    assert parts["spread_out"] == pytest.approx(spread.item())
    assert parts["total"] == pytest.approx(total.item())
    total.backward()
    assert loss_fn.projection.linear.weight.grad is not None
    assert set(dict(loss_fn.named_parameters())) == {"projection.linear.weight"}


def test_zero_weight_skips_a_loss_and_teacher_is_required_otherwise():
    q, p, neg, _ = _batch()
    _, parts = EmbeddingGemmaLoss(dims=DIMS, distillation_weight=0.0)(q, p, neg)
    assert set(parts) == {"contrastive", "spread_out", "total"}
    with pytest.raises(InputError, match="teacher"):
        EmbeddingGemmaLoss(dims=DIMS, distillation_weight=1.0)(q, p, neg)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spread_out_weight": -1.0},
        {"contrastive_weight": float("nan")},
        {"contrastive_weight": 0.0, "spread_out_weight": 0.0, "distillation_weight": 0.0},
        {"tau": 0.0},
        {"dims": (16, -8)},
    ],
)
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ConfigError):
        EmbeddingGemmaLoss(**kwargs)
