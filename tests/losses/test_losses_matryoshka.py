"""Matryoshka: the wrapped loss summed over nested dims, on truncated and re-normalised embeddings."""

import pytest
import torch
import torch.nn.functional as F

from gemma_embed.errors import ConfigError, InputError
from gemma_embed.losses import Matryoshka, nce_loss, spread_out_loss

B, K, D = 4, 2, 16
DIMS = (16, 8, 4)


def _inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    q, p = (torch.randn(B, D, generator=g, dtype=dtype).requires_grad_() for _ in range(2))
    return q, p, torch.randn(B, K, D, generator=g, dtype=dtype).requires_grad_()


def test_nce_is_summed_over_truncated_dims_with_kwargs_passed_through():
    q, p, neg = _inputs()
    q_ids = torch.tensor([0, 1, 0, 2])
    loss = Matryoshka(nce_loss, (4, 16, 8))(q, p, neg, tau=0.1, alpha=2.0, q_ids=q_ids)
    expected = sum(nce_loss(q[:, :m], p[:, :m], neg[..., :m], tau=0.1, alpha=2.0, q_ids=q_ids) for m in DIMS)
    torch.testing.assert_close(loss, expected)
    got = torch.autograd.grad(loss, (q, p, neg))
    want = torch.autograd.grad(expected, (q, p, neg))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_spread_out_uses_renormalised_prefixes():
    q, p, _ = _inputs()
    loss = Matryoshka(spread_out_loss, DIMS)(q, p)
    expected = 0.0
    for m in DIMS:
        for x in (q, p):
            unit = F.normalize(x[:, :m], dim=-1)
            gram = unit @ unit.T
            expected = expected + (gram.pow(2).sum() - gram.diagonal().pow(2).sum()) / (B * (B - 1))
    torch.testing.assert_close(loss, expected)


def test_bf16_inputs_and_none_arguments():
    q, p, _ = _inputs(torch.float32)
    q16, p16 = q.detach().bfloat16(), p.detach().bfloat16()
    loss = Matryoshka(nce_loss, DIMS)(q16, p16, None)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, Matryoshka(nce_loss, DIMS)(q16.float(), p16.float(), None))


def test_dims_must_be_positive_and_start_at_the_embedding_dim():
    with pytest.raises(ConfigError, match="positive integers"):
        Matryoshka(nce_loss, (16, 0))
    with pytest.raises(ConfigError, match="positive integers"):
        Matryoshka(nce_loss, ())
    q, p, _ = _inputs()
    with pytest.raises(InputError, match="must start at the embedding dim"):
        Matryoshka(spread_out_loss, (8, 4))(q, p)
    with pytest.raises(InputError, match="must start at the embedding dim"):
        Matryoshka(spread_out_loss, (32, 16))(q, p)
