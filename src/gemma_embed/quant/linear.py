"""Matrix products with block-quantized weights: an int8 x int8 product at small batches, dequantize-then-
matmul at large ones, chosen per call by the rows of the input.

At small batches (single queries, server traffic) a product reads 8-bit codes and multiplies integers, as
llama.cpp's q8_0 / q4_0 dot products do: the activations are quantized per row on the fly (one float32
scale per row, `round(x / s)` in -127..127) and multiplied with per-output-channel int8 codes of the weight by
`torch._int_mm` (oneDNN's u8s8 / VNNI kernels on x86; int32 sums, exact), then scaled back. The per-channel
codes are derived once per layer from the dequantized block weight (int8 or int4), so an int4 model computes
in int8 as llama.cpp's q4_0 does. Relative error of one [29, 768] x [768, 1152] product of Gaussian values:
1.2% against 0.54% for the dequantized block int8 weight in float32 (the per-row activation rounding
dominates). The CPU never emulates a dtype here: integer products are native on AVX2, AVX-512 (VNNI) and AMX.

Measured on an AMD EPYC Zen 4 (AVX-512 with avx512_bf16 and VNNI, no AMX), one thread, one [1152, 768]
block-32 matrix, ms per product (bench/profile_query.py --kernels re-runs it):

    rows                            1      8     29     64    128    256    512
    int8: dequantize + bf16 mm   0.66   0.63   0.91   1.82   1.91   3.06   5.66
    int4: dequantize + bf16 mm   3.27   3.03   3.83   5.09   4.62   6.12   8.35
    int8 x int8 (this module)    0.11   0.13   0.29   0.55   0.72   1.79   8.34

so both take the int8 product up to INT8_PRODUCT_MAX_ROWS rows. Outlier columns (zero codes in the blocks)
are added as one small float product, and zeroed in the activations first so they do not set a row's scale.

Where the int8 product is not used: a non-CPU device (a GPU dequantizes bandwidth-cheaply; CUDA's
`_int_mm` has its own shape rules), and `GEMMA_EMBED_INT_KERNELS=0` (always dequantize, for comparisons).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

KERNEL_ENV = "GEMMA_EMBED_INT_KERNELS"  # "0": always dequantize (for comparisons)
INT8_PRODUCT_MAX_ROWS = 256
_QMAX = 127.0
_MIN_ABSMAX = 1e-30  # an all-zero row or channel: codes 0 (and 127 / 1e-30 stays finite in float32)


@dataclass(frozen=True)
class ChannelInt8Weight:
    """A weight [out, in] as int8 codes with one float32 scale per output channel, laid out for `_int_mm`."""

    codes_t: Tensor  # int8 [in, out]
    scales: Tensor  # float32 [out]

    @property
    def device(self) -> torch.device:
        return self.codes_t.device


def int8_product_max_rows(device: torch.device) -> int:
    """Input rows up to which the int8 product beats dequantize + mm (0: never use it; see the module doc)."""
    if os.environ.get(KERNEL_ENV, "1") == "0" or device.type != "cpu" or not hasattr(torch, "_int_mm"):
        return 0
    return INT8_PRODUCT_MAX_ROWS


def channel_int8(weight: Tensor) -> ChannelInt8Weight:
    """Per-output-channel symmetric int8 codes of a float weight [out, in] (absmax / 127 scales)."""
    w = weight.float()
    scales = w.abs().amax(1).clamp_min(_MIN_ABSMAX) / _QMAX
    codes = torch.round(w / scales[:, None]).clamp_(-_QMAX, _QMAX).to(torch.int8)
    return ChannelInt8Weight(codes.t().contiguous(), scales)


def int8_linear(
    x: Tensor, weight: ChannelInt8Weight, outlier_columns: Tensor | None, outlier_values: Tensor | None
) -> Tensor:
    """`x @ w.T` as an int8 x int8 product (x's rows quantized on the fly), outlier columns added; in x.dtype."""
    flat = x.reshape(-1, x.shape[-1]).float()
    flat_int = flat if outlier_columns is None else flat.index_fill(1, outlier_columns, 0.0)
    # Few ops: a single query's products take about 0.1 ms each, so per-op overhead counts.
    absmax = flat_int.abs().amax(1, keepdim=True).clamp_min_(_MIN_ABSMAX)  # faster than an inf-norm
    codes = flat_int.mul(_QMAX / absmax).round_().to(torch.int8)  # |codes| <= 127 by construction
    out = torch._int_mm(codes, weight.codes_t) * (absmax / _QMAX * weight.scales)
    if outlier_columns is not None and outlier_values is not None:
        out = out.addmm_(flat[:, outlier_columns], outlier_values.float().t())
    return out.to(x.dtype).view(*x.shape[:-1], out.shape[-1])
