"""Embedding distillation (L_Q + L_P + L_N), its projection, and the relational similarity-matrix variant."""

import pytest
import torch

from gemma_embed.errors import InputError
from gemma_embed.losses import (
    DistillationProjection,
    embedding_distillation_loss,
    similarity_distillation_loss,
)

B, K, DS, DT = 4, 2, 6, 10


def _cos(a, b):
    return torch.dot(a, b) / (a.norm() * b.norm())


def _embeddings(dim, seed, dtype=torch.float64, grad=False):
    g = torch.Generator().manual_seed(seed)
    shapes = {"q": (B, dim), "p": (B, dim), "neg": (B, K, dim)}
    return {k: torch.randn(*s, generator=g, dtype=dtype).requires_grad_(grad) for k, s in shapes.items()}


def reference_distillation(student, teacher, mse_weight=0.0):
    """sum over q, p, neg of mean_rows (1 - cos(s, t) + mse_weight * mean_dims (s - t)^2)."""
    total = torch.zeros((), dtype=torch.float64)
    for key in ("q", "p", "neg"):
        s, t = (
            student[key].reshape(-1, student[key].shape[-1]),
            teacher[key].reshape(-1, teacher[key].shape[-1]),
        )
        rows = [1 - _cos(s[r], t[r]) + mse_weight * ((s[r] - t[r]) ** 2).mean() for r in range(s.shape[0])]
        total = total + torch.stack(rows).mean()
    return total


def test_matches_loop_formula_with_negatives_and_mse():
    student, teacher = _embeddings(DT, 0, grad=True), _embeddings(DT, 1)
    loss = embedding_distillation_loss(student, teacher, mse_weight=0.5)
    expected = reference_distillation(student, teacher, mse_weight=0.5)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-7)
    got = torch.autograd.grad(loss, list(student.values()))
    want = torch.autograd.grad(expected, list(student.values()))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-7)


def test_dicts_and_tuples_agree_and_negatives_are_optional():
    student, teacher = _embeddings(DT, 0), _embeddings(DT, 1)
    as_dict = embedding_distillation_loss(student, teacher)
    as_tuple = embedding_distillation_loss(tuple(student.values()), tuple(teacher.values()))
    torch.testing.assert_close(as_dict, as_tuple)
    without_neg = embedding_distillation_loss(
        (student["q"], student["p"]), {"q": teacher["q"], "p": teacher["p"]}
    )
    expected = (
        as_dict - (1 - torch.nn.functional.cosine_similarity(student["neg"], teacher["neg"], dim=-1)).mean()
    )
    torch.testing.assert_close(without_neg, expected)


def test_identical_embeddings_give_zero():
    student = _embeddings(DT, 0)
    assert embedding_distillation_loss(student, student, mse_weight=1.0).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_different_dims_need_a_projection_that_is_trained_and_teacher_gets_no_gradient():
    student, teacher = (
        _embeddings(DS, 0, torch.float32, grad=True),
        _embeddings(DT, 1, torch.float32, grad=True),
    )
    with pytest.raises(InputError, match=rf"DistillationProjection\({DS}, {DT}\)"):
        embedding_distillation_loss(student, teacher)
    projection = DistillationProjection(DS, DT)
    loss = embedding_distillation_loss(student, teacher, projection=projection)
    projected = {k: projection(v) for k, v in student.items()}
    torch.testing.assert_close(loss, embedding_distillation_loss(projected, teacher))
    loss.backward()
    assert projection.linear.weight.grad is not None and projection.linear.weight.grad.abs().sum() > 0
    assert all(t.grad is None for t in teacher.values())
    # Semi-orthogonal start: the projection preserves the student's cosine similarities.
    s = student["q"].detach()
    torch.testing.assert_close(projection(s) @ projection(s).T, s @ s.T, rtol=1e-5, atol=1e-5)


def test_negatives_on_one_side_only_are_refused():
    student, teacher = _embeddings(DT, 0), _embeddings(DT, 1)
    with pytest.raises(InputError, match="hard negatives"):
        embedding_distillation_loss(student, {"q": teacher["q"], "p": teacher["p"]})
    with pytest.raises(InputError, match="keys"):
        embedding_distillation_loss({"q": student["q"], "passages": student["p"]}, teacher)


def test_relational_kl_and_mse_match_loop_formulas():
    sq, sp, tq, tp = (torch.randn(B, d, dtype=torch.float64) for d in (DS, DS, DT, DT))
    tau = 0.1
    s = torch.tensor([[_cos(sq[i], sp[j]) for j in range(B)] for i in range(B)], dtype=torch.float64)
    t = torch.tensor([[_cos(tq[i], tp[j]) for j in range(B)] for i in range(B)], dtype=torch.float64)
    kl = 0.0
    for i in range(B):
        ps, pt = torch.softmax(s[i] / tau, 0), torch.softmax(t[i] / tau, 0)
        kl += sum(pt[j] * torch.log(pt[j] / ps[j]) for j in range(B)) / B
    mse = sum((s[i, j] - t[i, j]) ** 2 for i in range(B) for j in range(B)) / B**2
    torch.testing.assert_close(similarity_distillation_loss(sq, sp, tq, tp, kind="kl", tau=tau), kl)
    torch.testing.assert_close(similarity_distillation_loss(sq, sp, tq, tp, kind="mse"), mse)
    with pytest.raises(InputError, match="'kl' or 'mse'"):
        similarity_distillation_loss(sq, sp, tq, tp, kind="l1")


def test_relational_option_adds_the_similarity_term():
    student, teacher = _embeddings(DS, 0), _embeddings(DT, 1)
    projection = DistillationProjection(DS, DT)
    base = embedding_distillation_loss(student, teacher, projection=projection)
    with_kl = embedding_distillation_loss(
        student, teacher, projection=projection, relational="kl", relational_tau=0.2
    )
    relational = similarity_distillation_loss(student["q"], student["p"], teacher["q"], teacher["p"], tau=0.2)
    torch.testing.assert_close(with_kl, base + relational)
