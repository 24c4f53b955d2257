"""Attention over long inputs in query blocks, so its memory stays bounded.

SDPA with a boolean mask on CPU materializes the scores of every query against every key: for a 2048-token
text of the 300m config that is 3 heads x 2048 x 2048 floats (48 MiB in float32) plus the mask and the
softmax's copy, the largest activation of a forward pass. Each query's softmax depends only on its own row,
so cutting the queries into blocks of QUERY_BLOCK rows (keys whole) computes the same function with scores
of at most QUERY_BLOCK x length per head (results equal to the unblocked call up to float rounding: the
kernels see other shapes). Inputs up to QUERY_BLOCK tokens, and autograd passes (training keeps SDPA's
fused backward), traces and exports run as one call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

QUERY_BLOCK = 512


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, gqa: bool) -> Tensor:
    """`scaled_dot_product_attention(q, k, v, mask)` for q [B, H, L, D], k / v [B, Hkv, L, D] and a mask
    broadcastable to [B, H, L, L]; in query blocks when L > QUERY_BLOCK and no gradient is recorded."""
    length = q.shape[-2]
    whole = (torch.is_grad_enabled() and q.requires_grad) or torch.jit.is_tracing()  # a trace: one graph
    if length <= QUERY_BLOCK or whole or torch.onnx.is_in_onnx_export():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    blocks = []
    for start in range(0, length, QUERY_BLOCK):
        rows = slice(start, min(start + QUERY_BLOCK, length))
        block_mask = mask if mask is None or mask.shape[-2] == 1 else mask[..., rows, :]
        blocks.append(
            F.scaled_dot_product_attention(
                q[..., rows, :], k, v, attn_mask=block_mask, scale=scale, enable_gqa=gqa
            )
        )
    return torch.cat(blocks, dim=-2)
