"""Quantized products from the int codes (small batches) equal dequantize-then-matmul up to bfloat16
rounding, and the dispatch never takes the kernel where it would be slow or wrong (float32, non-CPU)."""

from __future__ import annotations

import pytest
import torch

from gemma_embed.quant import linear
from gemma_embed.quant.weights import QuantLinear, quantize_tensor

BF16_EPS = 2.0**-8  # bfloat16's relative rounding step


def quantized(bits: int) -> QuantLinear:
    generator = torch.Generator().manual_seed(bits)
    weight = torch.randn(192, 128, generator=generator) * 0.02
    weight[:, 5] *= 40  # one outlier column, kept as values beside the blocks
    q = quantize_tensor(weight, bits)
    assert q.outlier_columns is not None
    return QuantLinear(q, torch.bfloat16)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows", [1, 3])
def test_the_kernel_equals_the_dequantized_product_up_to_bfloat16_rounding(bits, rows) -> None:
    layer = quantized(bits)
    x = torch.randn(2, rows, 128, generator=torch.Generator().manual_seed(rows))
    reference = x @ layer.quantized().dequantize().T  # float32 throughout
    assert 2 * rows <= linear.kernel_max_rows(bits, torch.bfloat16, x.device, 128)
    with torch.inference_mode():
        got = layer(x.bfloat16()).float()
        dequantized = torch.nn.functional.linear(x.bfloat16(), layer.quantized().dequantize(torch.bfloat16))
    # Both bfloat16 paths round inputs, products and sums; the kernel (two parts for int8) adds a few
    # roundings of the output, so its error is bounded by a few bfloat16 steps of the largest output.
    scale = reference.abs().max().item()
    assert (got - reference).abs().max().item() <= 4 * BF16_EPS * scale
    assert (dequantized.float() - reference).abs().max().item() <= 4 * BF16_EPS * scale
    cosine = torch.nn.functional.cosine_similarity(got.flatten(), reference.flatten(), dim=0)
    assert cosine.item() > 0.9999


def test_the_packed_layout_is_built_once_per_device_and_dtype() -> None:
    layer = quantized(4)
    x = torch.randn(1, 128).bfloat16()
    with torch.inference_mode():
        layer(x)
        first = layer.packed(x)
        layer(x)
    assert layer.packed(x) is first and "_packed" not in layer.state_dict()


def test_dispatch_takes_the_kernel_only_for_small_bfloat16_cpu_batches(monkeypatch) -> None:
    cpu = torch.device("cpu")
    assert linear.kernel_max_rows(4, torch.bfloat16, cpu, 768) == linear.INT4_KERNEL_MAX_ROWS
    assert linear.kernel_max_rows(8, torch.bfloat16, cpu, 768) == linear.INT8_KERNEL_MAX_ROWS
    assert linear.kernel_max_rows(4, torch.float32, cpu, 768) == 0  # torch's float32 kernels are scalar
    assert linear.kernel_max_rows(4, torch.bfloat16, torch.device("cuda", 0), 768) == 0  # GPU: dequantize
    assert linear.kernel_max_rows(4, torch.bfloat16, cpu, 96) == 0  # not a multiple of the 64-wide K tiles
    monkeypatch.setenv(linear.KERNEL_ENV, "0")
    assert linear.kernel_max_rows(4, torch.bfloat16, cpu, 768) == 0


def test_large_batches_and_float32_never_build_the_packed_layout() -> None:
    layer = quantized(8)
    with torch.inference_mode():
        layer(torch.randn(linear.INT8_KERNEL_MAX_ROWS + 1, 128).bfloat16())
        layer(torch.randn(1, 128))
    assert getattr(layer, "_packed", None) is None
