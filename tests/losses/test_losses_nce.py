"""nce_loss against a loop-by-loop transcription of the formula (float64): mask, hardness weight, bf16."""

import math

import pytest
import torch

from gemma_embed.errors import InputError
from gemma_embed.losses import nce_loss

B, D, K = 5, 8, 3
TAU, ALPHA = 0.05, 5.0


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.dot(a, b) / (a.norm() * b.norm())


def reference_nce(q, p, neg, q_ids=None, p_ids=None, *, tau=TAU, alpha=ALPHA, offset=0, detach_weight=True):
    """mean_i -log(e^{s_ii/tau} / (e^{s_ii/tau} + sum_k w_ik e^{s_ik/tau} + sum_{j!=i} m_ij e^{s_ij/tau}))."""
    negs = None if neg is None else (neg.unsqueeze(1) if neg.dim() == 2 else neg)
    losses = []
    for i in range(q.shape[0]):
        own = offset + i
        numerator = torch.exp(_cos(q[i], p[own]) / tau)
        denominator = numerator
        if negs is not None:
            for k in range(negs.shape[1]):
                s = _cos(q[i], negs[i, k])
                w = torch.exp(alpha * (s.detach() if detach_weight else s))
                denominator = denominator + w * torch.exp(s / tau)
        for j in range(p.shape[0]):
            if j == own:
                continue
            same_q = q_ids is not None and q_ids[own] == q_ids[j]
            same_p = p_ids is not None and p_ids[own] == p_ids[j]
            if not (same_q or same_p):
                denominator = denominator + torch.exp(_cos(q[i], p[j]) / tau)
        losses.append(-torch.log(numerator / denominator))
    return torch.stack(losses).mean()


def _inputs(neg_shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, D, generator=g, dtype=dtype).requires_grad_()
    p = torch.randn(B, D, generator=g, dtype=dtype).requires_grad_()
    neg = None if neg_shape is None else torch.randn(*neg_shape, generator=g, dtype=dtype).requires_grad_()
    return q, p, neg


def _grads(loss, tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None])


IDS = {
    "no_ids": (None, None),
    # rows 0 and 2 share a query (two positives of one query), rows 1 and 4 share a passage.
    "duplicates": (torch.tensor([7, 8, 7, 9, 10]), torch.tensor([1, 2, 3, 4, 2])),
}


@pytest.mark.parametrize("neg_shape", [None, (B, D), (B, K, D)], ids=["no_neg", "neg_BD", "neg_BKD"])
@pytest.mark.parametrize("ids", IDS.values(), ids=IDS.keys())
def test_matches_loop_formula_value_and_gradients(neg_shape, ids):
    q, p, neg = _inputs(neg_shape)
    loss = nce_loss(q, p, neg, tau=TAU, alpha=ALPHA, q_ids=ids[0], p_ids=ids[1])
    expected = reference_nce(q, p, neg, *ids)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)
    for got, want in zip(_grads(loss, (q, p, neg)), _grads(expected, (q, p, neg)), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_hardness_weight_is_a_constant():
    q, p, neg = _inputs((B, K, D))
    loss = nce_loss(q, p, neg, tau=TAU, alpha=ALPHA)
    with_grad_through_w = reference_nce(q, p, neg, detach_weight=False)
    torch.testing.assert_close(loss, with_grad_through_w)  # same value ...
    got = _grads(loss, (q, neg))
    wrong = _grads(with_grad_through_w, (q, neg))
    assert not torch.allclose(got[0], wrong[0])  # ... but a different gradient: w is stop-gradient
    assert not torch.allclose(got[1], wrong[1])


def test_false_negative_mask_removes_candidates():
    q, p, _ = _inputs(None)
    q_ids = torch.tensor([0, 1, 0, 2, 3])
    masked = nce_loss(q, p, q_ids=q_ids)
    # Masking column 2 for row 0 and column 0 for row 2 equals dropping those exp terms from the denominator.
    assert masked < nce_loss(q, p)
    torch.testing.assert_close(masked, reference_nce(q, p, None, q_ids))
    # All ids distinct is the same as no ids.
    torch.testing.assert_close(nce_loss(q, p, q_ids=torch.arange(B), p_ids=torch.arange(B)), nce_loss(q, p))


def test_alpha_zero_gives_unit_weights():
    q, p, neg = _inputs((B, K, D))
    torch.testing.assert_close(nce_loss(q, p, neg, alpha=0.0), reference_nce(q, p, neg, alpha=0.0))


def test_offset_rows_against_gathered_candidates_equal_the_full_batch():
    q, p, neg = _inputs((B, K, D))
    q_ids, p_ids = IDS["duplicates"]
    full = nce_loss(q, p, neg, q_ids=q_ids, p_ids=p_ids)
    # Rows 0-1 and 2-4 as two "ranks" that see every positive; weight each local mean by its row count.
    first = nce_loss(q[:2], p, neg[:2], q_ids=q_ids, p_ids=p_ids, offset=0)
    second = nce_loss(q[2:], p, neg[2:], q_ids=q_ids, p_ids=p_ids, offset=2)
    torch.testing.assert_close((2 * first + 3 * second) / B, full)
    torch.testing.assert_close(second, reference_nce(q[2:], p, neg[2:], q_ids, p_ids, offset=2))


def test_bf16_inputs_are_computed_in_float32():
    q, p, neg = (t.detach().to(torch.bfloat16).requires_grad_() for t in _inputs((B, K, D), torch.float32))
    loss = nce_loss(q, p, neg)
    assert loss.dtype == torch.float32
    expected = reference_nce(*(t.detach().double() for t in (q, p, neg)))
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-5)
    loss.backward()
    assert q.grad.dtype == torch.bfloat16 and torch.isfinite(q.grad.float()).all()


def test_large_similarities_do_not_overflow():
    q = torch.ones(B, D)
    p = torch.ones(B, D) + 1e-3 * torch.randn(B, D, generator=torch.Generator().manual_seed(1))
    loss = nce_loss(q, p, p.clone().unsqueeze(1), tau=0.001, alpha=50.0)
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p": torch.zeros(B, D + 1)}, "one dim d"),
        ({"neg": torch.zeros(B + 1, D)}, "neg must be"),
        ({"offset": 1}, "offset"),
        ({"q_ids": torch.arange(B + 1)}, r"q_ids must have shape"),
        ({"tau": 0.0}, "tau"),
    ],
)
def test_bad_inputs_are_refused(kwargs, match):
    args = {"q": torch.randn(B, D), "p": torch.randn(B, D), **kwargs}
    with pytest.raises(InputError, match=match):
        nce_loss(**args)
