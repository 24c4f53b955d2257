"""Vector precisions of stored embeddings and of the ANN index: float32, int8 and binary (sign bits).

Embeddings are L2-normalized, so every component is in [-1, 1]: int8 stores round(127 * x) (a fixed range,
so shards embedded at different times agree; `gemma_embed.quant.embeddings` has the calibrated variant), binary
stores the sign bits packed 8 per byte (`ubinary` of `gemma_embed.quant.embeddings`).
"""

from __future__ import annotations

import numpy as np

from gemma_embed.errors import ConfigError
from gemma_embed.quant.embeddings import quantize_embeddings, unpack_signs

PRECISIONS: tuple[str, ...] = ("float32", "int8", "binary")


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS, else a ConfigError."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return precision


def quantize(vectors: np.ndarray, precision: str) -> np.ndarray:
    """Unit vectors [n, dim] in the storage type of `precision` (binary: [n, ceil(dim / 8)] uint8)."""
    check_precision(precision)
    vectors = np.asarray(vectors, dtype=np.float32)
    if precision == "int8":
        return np.clip(np.rint(vectors * 127.0), -127, 127).astype(np.int8)
    if precision == "binary":
        return quantize_embeddings(vectors, "ubinary")
    return vectors


def dequantize(stored: np.ndarray, precision: str, dim: int) -> np.ndarray:
    """float32 unit vectors [n, dim] back from stored vectors (approximate for int8 and binary)."""
    check_precision(precision)
    if precision == "binary":
        floats = unpack_signs(np.asarray(stored, dtype=np.uint8), dim)
    else:
        floats = np.asarray(stored, dtype=np.float32)
        if precision == "int8":
            floats = floats / 127.0
    norms = np.linalg.norm(floats, axis=1, keepdims=True)
    return (floats / np.maximum(norms, 1e-12)).astype(np.float32)
