"""Matrix products with block-quantized weights: kernels that read the int codes at small batches,
dequantize-then-matmul at large ones, chosen per call by the rows of the input.

Measured on an AMD EPYC Zen 4 (AVX-512 with avx512_bf16, no AMX), one thread, one [1152, 768] block-32
matrix, bfloat16 activations, ms per product (bench/profile_query.py --kernels re-runs it):

    rows                       1      8     29     64    128
    int4: dequantize + mm   6.46   7.42   8.15   7.86   7.62
    int4: int4pack kernel   0.06   0.20   0.79   1.80   6.87
    int8: dequantize + mm   0.50   0.68   0.78   1.05   5.77
    int8: two int4 kernels  0.10   0.41   1.67   7.10  14.7

so int4 takes the kernel up to INT4_KERNEL_MAX_ROWS rows and int8 up to INT8_KERNEL_MAX_ROWS.

The kernel is torch's weight-only `_weight_int4pack_mm_for_cpu` (groups of 32 along the input, one scale
and one zero per group, `w = (u - 8) * scale + zero` for a nibble u): an int4 block of this project is
exactly that with zero 0 (its codes are stored offset by 8). An int8 code q splits exactly into two
nibbles, q + 128 = 16 a + b, so `q * s = (a - 8) * 16 s + ((b - 8) * s + 8 s)`: two int4 products with
scales 16 s and s and zeros 0 and 8 s, which read 8 bits per weight in all. Outlier columns (zero codes in
the blocks) are added as one small float product.

Where the kernel is not used, and why:
* float32 activations: torch's CPU kernels for float32 are a scalar fallback, 50-100x slower than
  dequantize + mm (0.79 ms bfloat16 against 74 ms float32 at 29 rows), so a CPU that computes bfloat16
  slowly (where `gemma_embed.dtypes` picks float32) always dequantizes, in float32;
* a non-CPU device (CUDA's int4 kernel wants another packing and tile layout): dequantize + mm, which on a
  GPU is bandwidth-cheap;
* input dims that are not a multiple of 64 (the kernel's K tiles): none in EmbeddingGemma.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

KERNEL_ENV = "GEMMA_EMBED_INT_KERNELS"  # "0": always dequantize (for comparisons)
INT4_KERNEL_MAX_ROWS = 96
INT8_KERNEL_MAX_ROWS = 12
GROUP = 32  # the kernel's group size: this project's BLOCK
INNER_K_TILES = 2  # the packing's K tiles of 32: the input dim must be a multiple of 64


@dataclass(frozen=True)
class PackedWeight:
    """One weight in the kernel's layout: one (int4) or two (int8: high and low nibble) packed products."""

    parts: tuple[tuple[Tensor, Tensor], ...]  # (packed uint8 weight, scales-and-zeros [in / 32, out, 2])
    device: torch.device
    dtype: torch.dtype


def kernel_max_rows(bits: int, dtype: torch.dtype, device: torch.device, in_features: int) -> int:
    """Input rows up to which the int kernel beats dequantize + mm (0: never use it; see the module doc)."""
    if (
        os.environ.get(KERNEL_ENV, "1") == "0"
        or device.type != "cpu"
        or dtype != torch.bfloat16
        or in_features % (GROUP * INNER_K_TILES)
        or not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
    ):
        return 0
    return INT4_KERNEL_MAX_ROWS if bits == 4 else INT8_KERNEL_MAX_ROWS


def _pack(nibbles: Tensor, scales: Tensor, zeros: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """int32 nibbles [out, in] in 0..15, per-group scales and zeros [out, in / 32] -> the kernel's inputs."""
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(nibbles.contiguous(), INNER_K_TILES)
    scales_and_zeros = torch.stack((scales, zeros), dim=-1).transpose(0, 1).contiguous().to(dtype)
    return packed, scales_and_zeros


def pack_weight(codes: Tensor, scales: Tensor, bits: int, dtype: torch.dtype) -> PackedWeight:
    """The kernel layout of block-quantized codes (int8 [out, in] or packed int4 [out, in / 2]) and their
    bfloat16 block scales [out, in / 32]; exact (every scale, 16 s and 8 s are exact in bfloat16)."""
    s = scales.float()
    if bits == 4:
        nibbles = torch.stack((codes & 0x0F, codes >> 4), dim=-1).view(codes.shape[0], -1).to(torch.int32)
        parts = (_pack(nibbles, s, torch.zeros_like(s), dtype),)
    else:
        offset = codes.to(torch.int32) + 128  # 0..255 = 16 a + b
        parts = (
            _pack(offset >> 4, 16 * s, torch.zeros_like(s), dtype),
            _pack(offset & 0x0F, s, 8 * s, dtype),
        )
    return PackedWeight(parts, codes.device, dtype)


def kernel_linear(
    x: Tensor, packed: PackedWeight, outlier_columns: Tensor | None, outlier_values: Tensor | None
) -> Tensor:
    """`x @ w.T` from the packed codes (x [..., in] in the packed dtype), outlier columns added."""
    flat = x.reshape(-1, x.shape[-1])
    if not flat.is_contiguous():
        flat = flat.contiguous()
    out = None
    for weight, scales_and_zeros in packed.parts:
        part = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, weight, GROUP, scales_and_zeros)
        out = part if out is None else out + part
    assert out is not None
    if outlier_columns is not None and outlier_values is not None:
        out = out + F.linear(flat[:, outlier_columns], outlier_values.to(x.dtype))
    return out.view(*x.shape[:-1], out.shape[-1])
