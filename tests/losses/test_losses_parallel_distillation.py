"""Parallel distillation: both sides of a translation pair are pulled to the teacher's vector of the source."""

import pytest
import torch

from gemma_embed.errors import ConfigError, InputError
from gemma_embed.losses import (
    DistillationProjection,
    EmbeddingGemmaLoss,
    Matryoshka,
    nce_loss,
    parallel_distillation_loss,
    spread_out_loss,
)

B, D, DT = 5, 16, 24
DIMS = (16, 8)


def _pairs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    source, translation = (torch.randn(B, D, generator=g).requires_grad_() for _ in range(2))
    return source, translation, torch.randn(B, D, generator=g)


def test_zero_when_both_sides_equal_the_teachers_source_vector():
    _, _, teacher = _pairs()
    for scale in (1.0, 3.0):  # cosine: any positive scale of the target is a perfect match
        s = (scale * teacher).clone().requires_grad_()
        t = teacher.clone().requires_grad_()
        loss = parallel_distillation_loss(s, t, teacher)
        assert loss.dtype == torch.float32
        assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # with the MSE term only the exact vector is a perfect match
    assert parallel_distillation_loss(teacher, teacher, teacher, mse_weight=1.0).item() == pytest.approx(
        0.0, abs=1e-6
    )
    assert parallel_distillation_loss(2 * teacher, teacher, teacher, mse_weight=1.0).item() > 0.1


def test_the_formula_and_a_gradient_into_both_sides_but_not_the_teacher():
    source, translation, teacher = _pairs()
    teacher.requires_grad_()
    loss = parallel_distillation_loss(source, translation, teacher)
    cos = torch.nn.functional.cosine_similarity
    expected = (1 - cos(source, teacher)).mean() + (1 - cos(translation, teacher)).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert source.grad is not None and source.grad.abs().sum() > 0
    assert translation.grad is not None and translation.grad.abs().sum() > 0
    assert teacher.grad is None  # a fixed target


def test_the_translation_is_pulled_to_the_source_not_to_itself():
    """Only the source's teacher vector is a target: a translation equal to its own 'teacher vector' (any
    other vector) still has a loss, which one gradient step on it lowers."""
    source, translation, teacher = _pairs()
    with torch.no_grad():
        source.copy_(teacher)
    loss = parallel_distillation_loss(source, translation, teacher)
    loss.backward()
    assert source.grad.abs().max() < 1e-6 and loss.item() > 0.5
    with torch.no_grad():
        stepped = translation - 0.5 * translation.grad / translation.grad.norm(dim=1, keepdim=True)
    assert parallel_distillation_loss(source, stepped, teacher) < loss


def test_projection_to_the_teachers_dim_and_shape_errors():
    source, translation, _ = _pairs()
    teacher = torch.randn(B, DT)
    projection = DistillationProjection(D, DT)
    loss = parallel_distillation_loss(source, translation, teacher, projection=projection)
    loss.backward()
    assert projection.linear.weight.grad is not None
    with pytest.raises(InputError, match="projection"):
        parallel_distillation_loss(source, translation, teacher)
    with pytest.raises(InputError, match="one translation per source"):
        parallel_distillation_loss(source, translation[:3], teacher)


def test_in_the_total_it_replaces_the_per_text_distillation_on_parallel_batches():
    source, translation, teacher = _pairs()
    ids = torch.arange(B)
    loss_fn = EmbeddingGemmaLoss(dims=DIMS, distillation_weight=1.0, parallel_distillation_weight=2.0)
    total, parts = loss_fn(source, translation, q_ids=ids, p_ids=ids, teacher={"q": teacher}, parallel=True)
    contrastive = Matryoshka(nce_loss, DIMS)(source, translation, q_ids=ids, p_ids=ids)
    spread = Matryoshka(spread_out_loss, DIMS)(source, translation)
    expected = contrastive + spread + 2.0 * parallel_distillation_loss(source, translation, teacher)
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"contrastive", "spread_out", "parallel_distillation", "total"}
    # other batches: the per-text distillation, as before
    other = {"q": torch.randn(B, D), "p": torch.randn(B, D)}
    _, parts = loss_fn(source, translation, teacher=other)
    assert set(parts) == {"contrastive", "spread_out", "distillation", "total"}
    with pytest.raises(InputError, match="teacher's vectors of the sources"):
        loss_fn(source, translation, parallel=True)
    only_distillation = EmbeddingGemmaLoss(
        dims=DIMS, contrastive_weight=0, spread_out_weight=0, distillation_weight=1
    )
    with pytest.raises(InputError, match="no loss applies"):
        only_distillation(source, translation, teacher={"q": teacher}, parallel=True)
    with pytest.raises(ConfigError, match="parallel_distillation_weight"):
        EmbeddingGemmaLoss(parallel_distillation_weight=-1.0)
