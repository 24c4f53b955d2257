"""Long inputs attend in query blocks: the same vectors as one SDPA call, with bounded scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gemma_embed.model import attention as attention_module
from gemma_embed.model.gemma3 import attention_masks


def test_query_blocks_equal_one_call_for_every_mask_kind(monkeypatch) -> None:
    monkeypatch.setattr(attention_module, "QUERY_BLOCK", 16)
    generator = torch.Generator().manual_seed(0)
    length = 50  # not a multiple of the block: the last block is short
    q = torch.randn(2, 4, length, 8, generator=generator)
    k, v = (torch.randn(2, 2, length, 8, generator=generator) for _ in range(2))
    padding = torch.ones(2, length, dtype=torch.long)
    padding[1, 37:] = 0
    full, sliding = attention_masks(padding, length, 6, q.device)
    unpadded_full, window = attention_masks(None, length, 6, q.device)
    for mask in (full, sliding, unpadded_full, window):
        with torch.inference_mode():
            blocked = attention_module.attention(q, k, v, mask, 0.3, True)
            whole = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3, enable_gqa=True)
        # Same math per query row; only the kernels' shapes differ, so float32 rounding may.
        torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-6)


def test_autograd_passes_run_as_one_call(monkeypatch) -> None:
    monkeypatch.setattr(attention_module, "QUERY_BLOCK", 4)
    calls = []
    original = F.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", counted)
    q = torch.randn(1, 2, 10, 4, requires_grad=True)
    attention_module.attention(q, q.detach(), q.detach(), None, 1.0, False).sum().backward()
    assert len(calls) == 1 and q.grad is not None
    with torch.inference_mode():
        attention_module.attention(q.detach(), q.detach(), q.detach(), None, 1.0, False)
    assert len(calls) == 1 + 3  # 10 queries in blocks of 4
