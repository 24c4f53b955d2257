"""Compute dtypes: float32 (exact) and bfloat16 (fast); float16 is refused because it overflows."""

from __future__ import annotations

import torch

from gemma_embed.errors import UnsupportedDtypeError

ALIASES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
FLOAT16_REASON = (
    "float16 is not supported: EmbeddingGemma's activations exceed the float16 range (65504) and become inf/NaN; "
    "use dtype='bfloat16' for half-precision speed, or 'float32'"
)


def resolve_dtype(dtype: str | torch.dtype | None, *, stored: torch.dtype | None = None) -> torch.dtype:
    """The compute dtype for a request; None keeps bfloat16 weights as stored and uses float32 otherwise."""
    if dtype is None:
        return torch.bfloat16 if stored == torch.bfloat16 else torch.float32
    key = str(dtype).removeprefix("torch.").lower()
    if key in ("float16", "fp16", "half"):
        raise UnsupportedDtypeError(FLOAT16_REASON)
    if key not in ALIASES:
        raise UnsupportedDtypeError(f"dtype {dtype!r} is not supported; use 'float32' or 'bfloat16'")
    return ALIASES[key]
