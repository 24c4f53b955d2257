"""Quantization for EmbeddingGemma: output embeddings for storage/search, and weights for inference.

* `gemma_embed.quant.embeddings`: int8/uint8 (calibrated per-dimension ranges) and binary/ubinary (packed
  sign bits) embeddings, with Hamming search and float rescoring (sentence-transformers semantics).
* `gemma_embed.quant.weights`: per-block symmetric int8/int4 weights (block 32 along the input dim) and the
  mixed int4/int8 scheme of EmbeddingGemma's released quantization-aware variants (Schechter Vera et al.,
  2025, "EmbeddingGemma", section on quantization-aware training), stored as safetensors + a JSON manifest.
* `gemma_embed.quant.qat`: quantization-aware training for those weight formats (fake quantization with the
  same block math and a straight-through gradient), as trainer model transforms `qat_int8/qat_int4/qat_mixed`.
"""

from gemma_embed.quant.embeddings import PRECISIONS, calibration_ranges, quantize_embeddings, search_binary

__all__ = ["PRECISIONS", "calibration_ranges", "quantize_embeddings", "search_binary"]
